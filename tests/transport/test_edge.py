"""The request edge: every hostile value gets a 4xx error object, never a 500 or a crash."""

from __future__ import annotations

import dataclasses
import json
import time

import jwt
import orjson
import pytest
import trio

from tests.conftest import SECRET, result_body, start_server


def nested(depth: int, leaf: object = 1) -> object:
    """``leaf`` inside ``depth`` levels of lists."""
    value = leaf
    for _ in range(depth):
        value = [value]
    return value


def deep_json(value: object) -> bytes:
    """JSON of ``value`` however deep (orjson refuses to encode past 254 levels)."""
    return json.dumps(value).encode()


async def _restarts(h) -> int:
    return h.system.root.total_restarts()


# -- 1. JSON nesting depth --


@pytest.mark.parametrize("depth", [70, 300])
async def test_deep_result_and_event_data_are_refused_at_the_edge(server, depth):
    tok = server.token()
    r = await server.request("POST", "/api/results", tok, raw=deep_json(result_body(deep=nested(depth))))
    assert r.status == 400, r.body
    err = r.json()
    assert err["code"] == "REQ_001" and err["field"] == "result"
    assert "64" in err["message"]
    r = await server.request("POST", "/api/events/ci", tok, raw=deep_json({"data": {"x": nested(depth)}}))
    assert r.status == 400 and r.json()["code"] == "REQ_001" and r.json()["field"] == "data"
    r = await server.request("POST", "/api/results/batch", tok, raw=deep_json({"results": [result_body(deep=nested(depth))]}))
    assert r.status == 400 and r.json()["field"] == "results"
    assert await _restarts(server) == 0
    assert (await server.request("GET", "/health")).json()["status"] == "healthy"


async def test_depth_at_the_limit_is_accepted_and_reencodes(server):
    tok = server.token()
    # the body is level 1, "result" level 2, "deep" list levels 3..64
    r = await server.request("POST", "/api/results", tok, result_body(deep=nested(62)))
    assert r.status == 200, r.body
    got = await server.request("GET", f"/api/results/{r.json()['id']}", tok)
    assert got.json()["result"]["deep"] == nested(62)
    r = await server.request("POST", "/api/results", tok, result_body(deep=nested(63)))
    assert r.status == 400


async def test_deep_websocket_frame_is_answered_and_the_connection_stays(server):
    tok = server.token()
    async with server.ws(tok) as ws:
        await ws.ws.send_message(deep_json(
            {"id": 7, "op": "event.publish", "event_type": "ci", "data": {"x": nested(300)}}).decode())
        reply = await ws.recv()
        assert reply["ok"] is False and reply["id"] is None
        assert reply["error"]["code"] == "REQ_001" and reply["error"]["field"] == "data"
        assert (await ws.call("ping"))["result"] == {"pong": True}
    assert await _restarts(server) == 0


async def test_depth_bound_is_configurable(nursery, tmp_path):
    from orchestra.transport.api import ApiConfig
    from orchestra.transport.server import ServerConfig

    assert ApiConfig().max_json_depth == ServerConfig().max_json_depth == 64
    h = await start_server(nursery, tmp_path / "d")
    h.api.config = dataclasses.replace(h.api.config, max_json_depth=8)
    h.server.config = dataclasses.replace(h.server.config, max_json_depth=8)
    tok = h.token()
    r = await h.request("POST", "/api/results", tok, result_body(deep=nested(6)))
    assert r.status == 200, r.body
    r = await h.request("POST", "/api/results", tok, result_body(deep=nested(7)))
    assert r.status == 400 and "8" in r.json()["message"]


# -- 2. ids --


@pytest.mark.parametrize("bad", ["a\x00b", "a\x7fb", "a\x85b", "\t", "   ", "x" * 257, "a\nb"])
async def test_hostile_ids_in_bodies_are_refused_naming_the_field(server, bad):
    tok = server.token()
    for field in ("agent_id", "agent_type", "issue_id"):
        r = await server.request("POST", "/api/results", tok, {**result_body(), field: bad})
        assert r.status == 400, (field, r.body)
        assert r.json()["code"] == "REQ_001" and r.json()["field"] == field
    r = await server.request("POST", "/api/events/ci", tok, {"correlation_id": bad})
    assert r.status == 400 and r.json()["field"] == "correlation_id"


async def test_hostile_ids_in_paths_and_queries_are_refused(server):
    tok = server.token()
    for path, field in [
        ("/api/context/a%00b/python-specialist", "issue_id"),
        ("/api/context/iss-1/py%01", "agent_type"),
        ("/api/results/r%00x", "result_id"),
        ("/api/agents/a%00/status", "agent_id"),
        ("/api/results?issue_id=a%00b", "issue_id"),
        ("/api/results?agent_id=%20%20", "agent_id"),
        ("/api/results?project_id=p%00", "project_id"),
    ]:
        r = await server.request("GET", path, tok)
        assert r.status == 400, (path, r.body)
        assert r.json()["code"] == "REQ_001" and r.json()["field"] == field, path
    r = await server.request("DELETE", "/api/cache/context/a%00b", tok)
    assert r.status == 400 and r.json()["field"] == "issue_id"
    async with server.ws(tok) as ws:
        for op, args, field in [
            ("result.get", {"result_id": "a\x00"}, "result_id"),
            ("event.unsubscribe", {"subscription": "s\x00"}, "subscription"),
            ("context.get", {"issue_id": "x" * 300}, "issue_id"),
            ("result.get", {"result_id": 5}, "result_id"),
        ]:
            reply = await ws.call(op, **args)
            assert reply["ok"] is False and reply["error"]["field"] == field, (op, reply)
    assert await _restarts(server) == 0


# -- 3. times --


@pytest.mark.parametrize("when", ["9999-12-31T23:59:59-23:59", "0001-01-01T00:00:00+01:00", "2026-01-01T00:00:00+99:00"])
async def test_times_that_cannot_be_normalised_answer_400(server, when):
    from urllib.parse import quote

    tok = server.token()
    for key in ("since", "until"):
        r = await server.request("GET", f"/api/results?{key}={quote(when)}", tok)
        assert r.status == 400, r.body
        assert r.json()["code"] == "REQ_001" and r.json()["field"] == key


def test_parse_iso_is_fixed_width_across_the_range():
    from orchestra.actors.records import parse_iso

    assert parse_iso("since", "0001-01-01T00:00:00Z") == "0001-01-01T00:00:00.000000Z"
    assert parse_iso("since", "0999-06-01T00:00:00+00:00") == "0999-06-01T00:00:00.000000Z"
    assert parse_iso("since", "9999-12-31T23:59:59+01:00") == "9999-12-31T22:59:59.000000Z"


# -- 4. numbers --


def _page_cursor(seq: object) -> str:
    import base64

    return base64.urlsafe_b64encode(f"r1:{seq}".encode()).decode().rstrip("=")


async def test_forged_page_cursors_answer_400_and_the_store_lives(server):
    tok = server.token()
    await server.request("POST", "/api/results", tok, result_body())
    for seq in (2**63, 2**64 + 5, 0, -1, "+5", " 5", "5_0", "9" * 5000):
        r = await server.request("GET", f"/api/results?cursor={_page_cursor(seq)}", tok)
        assert r.status == 400, (seq, r.body)
        assert r.json()["field"] == "cursor"
    r = await server.request("GET", f"/api/results?cursor={_page_cursor(2**63 - 1)}", tok)
    assert r.status == 200
    assert await _restarts(server) == 0


async def test_event_cursors_and_numbers_have_ranges(server):
    tok = server.token()
    for path, field in [
        ("/api/events/wait/ci?timeout=0&since=99999999999999999999", "since"),
        ("/api/events/wait/ci?timeout=0&since=9223372036854775808", "since"),
        ("/api/events/wait/ci?timeout=1_000", "timeout"),
        ("/api/events/wait/ci?timeout=%2B5", "timeout"),
        ("/api/events/wait/ci?timeout=0&limit=%201", "limit"),
        ("/api/events/wait/ci?timeout=300001", "timeout"),
        ("/api/context/iss/python-specialist?max_bytes=1_024", "max_bytes"),
    ]:
        r = await server.request("GET", path, tok)
        assert r.status == 400, (path, r.body)
        assert r.json()["field"] == field, path
    for body, field in [
        ({"round": 2**53 + 1}, "round"),
        ({"round": -(2**53) - 1}, "round"),
        ({"round": 1.5}, "round"),
        ({"ttl_seconds": 0}, "ttl_seconds"),
        ({"ttl_seconds": 18446744073709551616}, "ttl_seconds"),
    ]:
        r = await server.request("POST", "/api/events/ci", tok, raw=deep_json(body))
        assert r.status == 400, (body, r.body)
        assert r.json()["field"] == field
    r = await server.request("POST", "/api/events/ci", tok, {"round": 2**53})
    assert r.status == 200
    assert await _restarts(server) == 0


# -- 5. tokens --


@pytest.mark.parametrize("claims", [
    {"exp": 10**400}, {"exp": 1e300}, {"exp": "99999999999"}, {"exp": 253402300800},
    {"iat": 10**400}, {"iat": "1"}, {"nbf": 1e300}, {"iat": -(10**30)},
])
async def test_absurd_time_claims_answer_401(server, claims):
    now = int(time.time())
    payload = {"sub": "a", "agent_type": "python-specialist", "project_id": "p1", "iat": now, "exp": now + 60,
               **claims}
    tok = jwt.encode(payload, SECRET, algorithm="HS256")
    r = await server.request("GET", "/api/results", tok)
    assert r.status == 401, r.body
    assert r.json()["code"] == "AUTH_001"
    async with server.ws() as ws:
        await ws.send("auth", token=tok)
        with trio.fail_after(5):
            reason = await ws.closed()
        assert reason.code == 4001


async def test_claims_with_control_characters_answer_401(server):
    now = int(time.time())
    for claim in ("sub", "agent_type", "project_id"):
        payload = {"sub": "a", "agent_type": "python-specialist", "project_id": "p1", "exp": now + 60, claim: "x\x00y"}
        r = await server.request("GET", "/api/results", jwt.encode(payload, SECRET, algorithm="HS256"))
        assert r.status == 401 and r.json()["code"] == "AUTH_001", claim


# -- 6. the WebSocket request id --


@pytest.mark.parametrize("rid", [nested(300), nested(3), {"a": 1}, "x" * 257])
async def test_a_bad_request_id_is_answered_with_id_null(server, rid):
    tok = server.token()
    async with server.ws(tok) as ws:
        await ws.ws.send_message(deep_json({"id": rid, "op": "ping"}).decode())
        reply = await ws.recv()
        assert reply["id"] is None and reply["ok"] is False
        assert reply["error"]["code"] == "REQ_001" and reply["error"]["field"] == "id"
        assert (await ws.call("ping"))["result"] == {"pong": True}


@pytest.mark.parametrize("rid", ["x" * 256, 5, -2.5, 18446744073709551615, True, None])
async def test_good_request_ids_are_echoed(server, rid):
    async with server.ws(server.token()) as ws:
        await ws.ws.send_message(orjson.dumps({"id": rid, "op": "ping"}).decode())
        reply = await ws.recv()
        assert reply["ok"] is True and reply["id"] == rid


async def test_unknown_op_names_are_truncated_in_the_message(server):
    async with server.ws(server.token()) as ws:
        reply = await ws.call("x" * 100_000)
        assert reply["error"]["code"] == "NOT_FOUND"
        assert len(reply["error"]["message"]) < 200


async def test_auth_frame_with_a_bad_id_is_refused(server):
    async with server.ws() as ws:
        await ws.ws.send_message(deep_json({"id": nested(300), "op": "auth", "token": server.token()}).decode())
        with trio.fail_after(5):
            reason = await ws.closed()
        assert reason.code == 4001


# -- 7. the fault route --


async def test_fault_route_without_admin_is_403_when_enabled(server):
    r = await server.request("POST", "/api/admin/faults", server.token(), {"target": "store", "kind": "delay", "ms": 1})
    assert r.status == 403 and r.json()["code"] == "AUTH_003"


async def test_fault_route_is_404_when_disabled(nursery, tmp_path):
    h = await start_server(nursery, tmp_path / "d", fault_injection=False)
    for tok in (h.token(), h.token("*", agent_type="ops", admin=True, sub="ops")):
        r = await h.request("POST", "/api/admin/faults", tok, {"target": "store", "kind": "delay", "ms": 1})
        assert r.status == 404 and r.json()["code"] == "NOT_FOUND"


# -- 9. project_structure.directories --


def test_listing_names_every_directory(tmp_path):
    from orchestra.actors.context.index import ProjectIndex

    for rel in ("src/pkg/deep/mod.py", "src/pkg/__init__.py", "top.py", "a/b/c/d.txt"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x = 1\n")
    index = ProjectIndex(tmp_path)
    index.refresh()
    _, directories, _ = index.listing()
    assert directories == ["a", "a/b", "a/b/c", "src", "src/pkg", "src/pkg/deep"]


# -- 10. every other argument of the operation table is bounded --


async def test_lists_and_texts_of_operations_are_bounded(server):
    tok = server.token()
    for body, field in [
        ({"references": ["r"] * 101}, "references"),
        ({"references": ["ok", "a\x00"]}, "references[1]"),
        ({"topic": "t" * 257}, "topic"),
        ({"topic": "a\x00"}, "topic"),
    ]:
        r = await server.request("POST", "/api/events/ci", tok, body)
        assert r.status == 400 and r.json()["field"] == field, (body, r.body)
    for path, field in [
        ("/api/results?q=" + "x" * 1025, "q"),
        ("/api/results?q=a%00", "q"),
        ("/api/events/wait/ci?timeout=0&filter=" + "a:b," * 1025, "filter"),
    ]:
        r = await server.request("GET", path, tok)
        assert r.status == 400 and r.json()["field"] == field, (path[:80], r.body)
    spawner = server.token(agent_type="chief-architect", sub="chief")
    for body, field in [
        ({"environment": {"ORCHESTRA_TOKEN": "x"}}, "environment"),
        ({"environment": {"A B": "x"}}, "environment"),
        ({"environment": {f"V{i}": "x" for i in range(65)}}, "environment"),
        ({"environment": {"A": 5}}, "environment.A"),
        ({"environment": {"A": "x" * 4097}}, "environment.A"),
        ({"environment": ["A=1"]}, "environment"),
        ({"task": "x" * 8193}, "task"),
        ({"context_requirements": "all"}, "context_requirements"),
    ]:
        r = await server.request("POST", "/api/agents/spawn", spawner,
                                 {"agent_type": "python-specialist", "issue_id": "iss-1", **body})
        assert r.status == 400 and r.json()["field"] == field, (body, r.body)
    async with server.ws(tok) as ws:
        for args, field in [
            ({"event_types": ["ci"] * 65}, "event_types"),
            ({"topics": ["t"] * 65}, "topics"),
            ({"topics": ["ok", 5]}, "topics[1]"),
            ({"filter": "a:" + "b" * 5000}, "filter"),
        ]:
            reply = await ws.call("event.subscribe", **args)
            assert reply["ok"] is False and reply["error"]["field"] == field, (args, reply)
        reply = await ws.call("context.get", issue_id="iss", task="x" * 8193)
        assert reply["ok"] is False and reply["error"]["field"] == "task"
        reply = await ws.call("auth.refresh", token="x" * 20_000)
        assert reply["ok"] is False and reply["error"]["field"] == "token"
    assert await _restarts(server) == 0


# -- hostile values against every validator: a 4xx error object, never a 500 --

from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402

_BOUNDED = settings(max_examples=int(__import__("os").environ.get("EDGE_EXAMPLES", "60")), deadline=None, suppress_health_check=list(HealthCheck))

_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False), st.text(max_size=300),
    st.sampled_from(["", " ", "\x00", "\x7f", "\x85", "\u2028", "9999-12-31T23:59:59-23:59", "r1:99999999999999999999",
                     "99999999999999999999", "1_0", "+1", "١٢", "x" * 257, "-0", "1e400"]),
)
_hostile = st.one_of(
    _scalars,
    st.integers(min_value=1, max_value=400).map(nested),
    st.recursive(_scalars, lambda kids: st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4),
                 max_leaves=12),
)


def _answers_4xx_or_value(call) -> None:
    """``call()`` returns, or raises an error that maps to a 4xx error object."""
    from orchestra.transport.errors import from_exception

    try:
        call()
    except Exception as exc:  # noqa: BLE001 - the point: which exception it is
        error = from_exception(exc, "req-test")
        assert 400 <= error.status < 500, (type(exc), exc)


@_BOUNDED
@given(value=_hostile)
def test_pure_validators_answer_4xx(value):
    from orchestra.actors.records import (
        json_too_deep,
        parse_iso,
        validate_event_body,
        validate_id,
        validate_result_body,
    )
    from orchestra.actors.schema import read
    from orchestra.transport import args as ops
    from orchestra.transport.schema import OP_ARGS

    _answers_4xx_or_value(lambda: validate_id("k", value))
    _answers_4xx_or_value(lambda: parse_iso("since", value))
    # every argument of every op, read from its one definition (and the checks after it)
    for kind in set(OP_ARGS.values()):
        for name in kind.__struct_fields__:
            _answers_4xx_or_value(lambda: read(kind, {name: value}))  # noqa: B023 - called at once
            _answers_4xx_or_value(lambda: read(kind, {name: [value], "x": value}))  # noqa: B023
    if isinstance(value, str):
        _answers_4xx_or_value(lambda: ops.cursor_value("k", value))
        _answers_4xx_or_value(lambda: ops.decode_page_cursor(value))
    _answers_4xx_or_value(lambda: read(OP_ARGS["agent.spawn"], {"environment": {"A": value, str(value): "x"}}))
    _answers_4xx_or_value(lambda: read(OP_ARGS["event.subscribe"], {"since": {"p": value, str(value)[:300]: "1"}}))
    _answers_4xx_or_value(lambda: read(OP_ARGS["result.store_batch"], {"results": [result_body(), value]}))
    _answers_4xx_or_value(lambda: validate_event_body({"data": {"x": value}, "round": value}))
    _answers_4xx_or_value(lambda: validate_event_body({"references": value, "topic": value}))
    _answers_4xx_or_value(lambda: validate_result_body({**result_body(), "issue_id": value}, "p1"))
    json_too_deep(value, 64)


@_BOUNDED
@given(value=_hostile)
def test_whatever_the_depth_check_accepts_reencodes(value):
    from orchestra.actors.records import json_too_deep

    try:  # what the edge's parser makes of it (orjson reads integers past 64 bits as floats)
        body = orjson.loads(deep_json({"result": {"status": "ok", "x": value}}))
    except orjson.JSONDecodeError:
        return
    if json_too_deep(body, 64) is None:
        # wrapped as a stored record inside a reply inside a frame: still encodable
        orjson.dumps({"id": 1, "result": {"results": [{"record": body}]}})


@_BOUNDED
@given(claim=st.sampled_from(["exp", "iat", "nbf", "sub", "agent_type", "project_id", "permissions"]),
       value=_hostile)
def test_tokens_with_hostile_claims_answer_401_or_verify(claim, value):
    from orchestra.actors.profiles import Profiles
    from orchestra.transport.auth import Auth

    now = int(time.time())
    payload = {"sub": "a", "agent_type": "python-specialist", "project_id": "p1", "iat": now, "exp": now + 60,
               claim: value}
    try:
        tok = jwt.encode(payload, SECRET, algorithm="HS256")
    except (TypeError, ValueError, OverflowError):
        return  # not encodable as a JWT
    _answers_4xx_or_value(lambda: Auth(SECRET, Profiles()).verify(tok))


@pytest.fixture
def threaded_server(tmp_path):
    """A context server running in its own thread and trio run, so that each hypothesis example
    (a fresh ``trio.run`` of its own in the test's thread) talks to the same server."""
    import threading

    from tests.conftest import start_context_server

    ready, held = threading.Event(), {}

    def run() -> None:
        async def main() -> None:
            async with trio.open_nursery() as nursery:
                held["h"] = await start_context_server(nursery, tmp_path)
                held["token"], held["scope"] = trio.lowlevel.current_trio_token(), nursery.cancel_scope
                ready.set()

        trio.run(main)

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert ready.wait(30)
    yield held["h"]
    trio.from_thread.run_sync(held["scope"].cancel, trio_token=held["token"])
    thread.join(30)


_HTTP_PLACES = [
    ("POST", "/api/results", "body", "issue_id"), ("POST", "/api/results", "body", "result"),
    ("POST", "/api/results", "body", "project_id"), ("POST", "/api/results/batch", "body", "results"),
    ("POST", "/api/events/ci", "body", "data"), ("POST", "/api/events/ci", "body", "round"),
    ("POST", "/api/events/ci", "body", "ttl_seconds"), ("POST", "/api/events/ci", "body", "references"),
    ("POST", "/api/events/ci", "body", "correlation_id"),
    ("GET", "/api/results", "query", "cursor"), ("GET", "/api/results", "query", "since"),
    ("GET", "/api/results", "query", "limit"), ("GET", "/api/results", "query", "issue_id"),
    ("GET", "/api/events/wait/ci", "query", "since"), ("GET", "/api/events/wait/ci", "query", "filter"),
    ("GET", "/api/events/wait/ci", "query", "limit"),
    ("GET", "/api/results/{}", "path", "result_id"), ("DELETE", "/api/cache/context/{}", "path", "issue_id"),
    ("GET", "/api/agents/{}/status", "path", "agent_id"), ("POST", "/api/admin/faults", "body", "ms"),
    ("POST", "/api/agents/spawn", "body", "environment"),
]


@_BOUNDED
@given(place=st.sampled_from(_HTTP_PLACES), value=_hostile)
def test_http_routes_answer_hostile_values_with_an_error_object(threaded_server, place, value):
    from urllib.parse import quote

    server = threaded_server
    method, path, where, field = place
    tok = server.token(agent_type="chief-architect", sub="chief")
    text = value if isinstance(value, str) else json.dumps(value)
    raw = None
    if where == "path":
        path = path.format(quote(text, safe="") or "%20")
    elif where == "query":
        path = f"{path}?timeout=0&{field}={quote(text, safe='')}"
    else:
        base: dict = {"/api/results": result_body(), "/api/agents/spawn": {"agent_type": "python-specialist",
                      "issue_id": "i"}, "/api/admin/faults": {"target": "nothing", "kind": "delay"}}.get(path, {})
        raw = deep_json({**base, field: value})
    r = trio.run(server.request, method, path, tok, None, raw if raw is not None else b"")
    assert r.status < 500 or (path == "/api/agents/spawn" and r.status == 503), (place, value, r.body)
    if r.status >= 400:
        err = r.json()
        assert err["code"] and err["request_id"] and err["message"]
    assert server.system.root.total_restarts() == 0


@_BOUNDED
@given(op=st.sampled_from(["result.get", "result.query", "event.publish", "event.subscribe", "event.wait",
                           "event.unsubscribe", "context.get", "cache.clear", "agent.status", "auth.refresh"]),
       field=st.sampled_from(["id", "result_id", "issue_id", "since", "filter", "topics", "event_types",
                              "event_type", "data", "limit", "subscription", "token", "max_bytes", "task"]),
       value=_hostile)
def test_websocket_ops_answer_hostile_values_and_stay_open(threaded_server, op, field, value):
    h = threaded_server
    frame = {"id": 1, "op": op, "event_type": "ci", "issue_id": "iss", "timeout": 0, field: value}
    trio.run(_ws_example, h, frame)
    assert h.system.root.total_restarts() == 0


async def _ws_example(h, frame) -> None:
    with trio.fail_after(20):
        async with h.ws(h.token()) as ws:
            await ws.ws.send_message(deep_json(frame).decode())
            reply = await ws.recv()
            while "ok" not in reply:
                reply = await ws.recv()
            if reply["ok"] is False:
                assert reply["error"]["code"] != "INTERNAL" and reply["error"]["request_id"], reply
                assert not reply["error"]["code"].startswith("UNAVAIL"), reply
            assert (await ws.call("ping"))["result"] == {"pong": True}
