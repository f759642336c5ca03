"""The Python SDK (orchestra.client) against the in-process server: methods, errors, many
requests in flight, reconnect with resume, writes sent again stored once, the blocking facade."""

from __future__ import annotations

import inspect
import itertools
import os
import random
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest
import trio
from hypothesis import given, settings
from hypothesis import strategies as st
from orchestra.actors.session import SessionLimits
from orchestra.transport.client import ClientConfig
from orchestra.transport.client_errors import error_from_body, error_from_close
from orchestra.transport.client_link import Backoff, Link, Pending, refresh_delay, token_claims
from orchestra.transport.client_subscription import Subscription

from orchestra import client as sdk
from tests.conftest import start_context_server, start_server

FAST = ClientConfig(backoff_initial=0.02, backoff_max=0.2, reconnect_timeout=10)


def url(h) -> str:
    return f"http://127.0.0.1:{h.port}"


# -- pure parts --

def test_ws_url_accepts_the_forms_agents_are_given():
    assert sdk.ws_url("http://127.0.0.1:3001") == "ws://127.0.0.1:3001/ws"
    assert sdk.ws_url("https://h:1/") == "wss://h:1/ws"
    assert sdk.ws_url("ws://h:2/ws") == "ws://h:2/ws"
    with pytest.raises(ValueError):
        sdk.ws_url("127.0.0.1:3001")


def test_backoff_grows_exponentially_with_jitter_up_to_its_cap_and_resets():
    b = Backoff(0.1, 2.0, random.Random(7))
    delays = [b.next() for _ in range(8)]
    for i, d in enumerate(delays):
        step = min(2.0, 0.1 * 2**i)
        assert step / 2 <= d <= step
    assert len(set(delays)) == len(delays)  # jittered
    b.reset()
    assert b.next() <= 0.1


def test_error_objects_map_to_one_class_per_family():
    cases = {
        "REQ_001": (sdk.InvalidRequest, 400), "EVT_003": (sdk.InvalidRequest, 400),
        "AUTH_001": (sdk.Unauthorized, 401), "AUTH_002": (sdk.Unauthorized, 401),
        "AUTH_003": (sdk.Forbidden, 403), "NOT_FOUND": (sdk.NotFound, 404),
        "AGENT_001": (sdk.Conflict, 409), "IDEM_001": (sdk.Conflict, 409),
        "REQ_002": (sdk.TooLarge, 413), "CTX_002": (sdk.TooLarge, 413),
        "RATE_001": (sdk.RateLimited, 429), "INTERNAL": (sdk.ServerError, 500),
        "UNAVAILABLE": (sdk.Unavailable, 503),
    }
    for code, (cls, status) in cases.items():
        body = {"error": "x", "code": code, "message": "m", "request_id": "req-1"}
        exc = error_from_body(body)
        assert type(exc) is cls and exc.status == status and exc.code == code and exc.body is body
        assert exc.request_id == "req-1" and isinstance(exc, sdk.OrchestraError)
    limited = error_from_body({"code": "RATE_001", "retry_after_seconds": 0.25, "limit": 40})
    assert limited.retry_after == 0.25 and limited.limit == 40
    down = error_from_body({"code": "UNAVAILABLE", "retry_after_seconds": 1, "outcome": "unknown"})
    assert down.retry_after == 1 and down.outcome == "unknown"
    # a cap of a later release with its own code is still a RateLimited
    assert type(error_from_body({"code": "AGENT_009", "retry_after_seconds": 5, "limit": 3})) is sdk.RateLimited
    assert type(error_from_body({"code": "AGENT_008", "limit": 3})) is sdk.RateLimited
    assert type(error_from_body({"code": "NEW_002", "retry_after_seconds": 5})) is sdk.Unavailable
    assert type(error_from_body({"code": "NEW_003"})) is sdk.OrchestraError
    assert type(error_from_body({"code": "NEW_001"}, 409)) is sdk.Conflict
    assert type(error_from_close(4001, "expired")) is sdk.Unauthorized
    assert type(error_from_close(4003, "no")) is sdk.Forbidden
    assert error_from_close(4008, "since=1") is None and error_from_close(1012, "") is None


def test_token_claims_are_read_without_verifying():
    assert token_claims("not-a-token") == {}


json_values = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=10), inner, max_size=4),
    max_leaves=20,
)


@settings(max_examples=200, deadline=None)
@given(body=json_values | st.dictionaries(st.sampled_from(
    ["code", "message", "retry_after_seconds", "limit", "outcome", "field", "request_id"]), json_values),
    status=st.none() | st.integers(100, 599))
def test_any_answer_becomes_an_orchestra_error(body, status):
    exc = error_from_body(body, status)
    assert isinstance(exc, sdk.OrchestraError) and isinstance(exc.body, dict) and isinstance(exc.code, str)
    str(exc)
    if isinstance(exc, sdk.RateLimited | sdk.Unavailable):
        assert exc.retry_after is None or exc.retry_after >= 0


@settings(max_examples=200, deadline=None)
@given(text=st.text(max_size=60))
def test_any_url_or_token_text_is_refused_cleanly(text):
    try:
        assert sdk.ws_url(text).startswith(("ws://", "wss://"))
    except ValueError:
        pass
    assert isinstance(token_claims(text), dict)


class _Owner:
    """What a Subscription asks of its client, without one."""

    def __init__(self, buffer: int) -> None:
        self.config = ClientConfig(subscription_buffer=buffer)
        self.final_error = None


@settings(max_examples=300, deadline=None)
@given(
    replays=st.lists(st.tuples(st.integers(0, 30), st.integers(0, 30)), min_size=1, max_size=8),
    pace=st.lists(st.integers(0, 2), min_size=1, max_size=40),
)
def test_a_subscription_hands_over_each_cursor_once_in_order(replays, pace):
    """Pushes as the server sends them across resumes (each connection replays an ascending
    run from somewhere at or before the subscription's cursor), the consumer reading between
    them at any pace from a small buffer: what it reads is strictly ascending, and every
    cursor up to the last it read was read (no gap)."""
    sub = Subscription(_Owner(buffer=4), {"event_types": "*"}, None)  # type: ignore[arg-type]
    link = type("L", (), {"global_sub": None})()
    got: list[int] = []
    reads = itertools.cycle(pace)
    for back, length in replays:
        sub.subscribe_request(link)  # a (re)subscription from its cursor
        start = int(sub.cursor() or 0)
        for c in range(max(0, start - back), start + length + 1):  # repeats, then new ones
            sub._push({"cursor": f"{c:020d}", "data": c})
            for _ in range(next(reads)):
                if sub._buffer:
                    got.append(sub._buffer.popleft()["data"])
    assert got == sorted(set(got))
    if got:
        assert got == list(range(got[0], got[-1] + 1))


# -- against a server --

async def test_every_operation_answers_through_its_method(server):
    h = server
    with trio.fail_after(20):
        async with sdk.connect(url(h), h.token(sub="py-1")) as c:
            assert await c.ping() == {"pong": True}
            stored = await c.store_result("ISS-1", {"status": "success", "n": 1})
            assert stored["stored"] is True
            record = await c.get_result(stored["id"])
            assert record["agent_id"] == "py-1" and record["agent_type"] == "python-specialist"
            batch = await c.store_results([c.result_body("ISS-2", {"status": "failed"})] * 2)
            assert batch["stored"] == 2
            page = await c.query_results(issue_id="ISS-2", limit=1)
            assert len(page["results"]) == 1 and page["next_cursor"] is not None
            published = await c.publish("build_done", {"ok": True}, topic="ci")
            assert published["published"] is True
            got = await c.wait("build_done", since="0", timeout=5)
            assert [e["data"] for e in got["events"]] == [{"ok": True}]
            assert (await c.wait("nothing", timeout=0.05))["timeout"] is True
            status = await c.status()
            assert "storage" in status
            refreshed = await c.refresh()
            assert c.token == refreshed["token"] and c.claims["sub"] == "py-1"
            assert await c.clear_context_cache("ISS-1") == {"cleared": True, "entries_removed": 0}
            sub = await c.subscribe(["build_done"], since="0")
            assert (await sub.__anext__())["data"] == {"ok": True}
            await sub.unsubscribe()
            with pytest.raises(StopAsyncIteration):
                await sub.__anext__()


async def test_agent_methods_exist_and_map_the_servers_answers(server):
    h = server
    with trio.fail_after(20):
        async with sdk.connect(url(h), h.token(agent_type="chief-architect")) as c:
            with pytest.raises(sdk.Conflict) as info:  # no command configured for the type
                await c.spawn("python-specialist", "ISS-1", task="t")
            assert info.value.code == "AGENT_001" and info.value.status == 409
            with pytest.raises(sdk.NotFound):
                await c.agent_status("nobody")
            assert (await c.list_agents())["agents"] == []
            for call in (c.agent_logs("nobody", tail=5), c.stop_agent("nobody")):
                with pytest.raises(sdk.NotFound):
                    await call


async def test_errors_carry_the_error_object(server):
    h = server
    with trio.fail_after(20):
        with pytest.raises(sdk.Unauthorized) as info:
            async with sdk.connect(url(h), "not.a.token", config=FAST):
                pass
        assert info.value.code == "AUTH_001"
        expired = h.token(ttl=-10)
        with pytest.raises(sdk.Unauthorized):
            async with sdk.connect(url(h), expired, config=FAST):
                pass
        reader = h.token(sub="reader", permissions=["read_context"])
        async with sdk.connect(url(h), reader) as c:
            with pytest.raises(sdk.Forbidden) as forbidden:
                await c.publish("x")
            assert forbidden.value.code == "AUTH_003" and forbidden.value.request_id
            with pytest.raises(sdk.NotFound) as missing:
                await c.get_result("no-such-id")
            assert missing.value.body["code"] == "NOT_FOUND"
            with pytest.raises(sdk.InvalidRequest) as bad:
                await c.wait("bad type!", timeout=0)
            assert bad.value.field == "event_type"
            with pytest.raises(sdk.InvalidRequest) as bad_filter:
                await c.wait("x", filter="a:>nope", timeout=0)
            assert bad_filter.value.code == "EVT_003"
            await c.ping()  # one request fails only itself


async def test_rate_limited_carries_retry_after(nursery, tmp_path):
    h = await start_server(nursery, tmp_path / "d", rate_limits=True)
    with trio.fail_after(20):
        async with sdk.connect(url(h), h.token(sub="hasty")) as c:
            errors = []

            async def one():
                try:
                    await c.get_result("x")
                except sdk.RateLimited as exc:
                    errors.append(exc)
                except sdk.NotFound:
                    pass

            async with trio.open_nursery() as n:
                for _ in range(60):  # past the burst of 40, all in flight at once
                    n.start_soon(one)
            assert errors
            assert all(e.retry_after and e.retry_after > 0 and e.limit == 40 and e.status == 429 for e in errors)


async def test_many_requests_in_flight_are_paired_by_id_out_of_order(server):
    h = server
    with trio.fail_after(20):
        async with sdk.connect(url(h), h.token()) as c:
            order = []

            async def long_wait():
                got = await c.wait("late", timeout=10)
                order.append(("wait", got["events"][0]["data"]["n"]))

            async with trio.open_nursery() as n:
                n.start_soon(long_wait)
                await trio.sleep(0.1)
                answers = await _gather([c.ping() for _ in range(20)])
                order.append(("pings", len(answers)))
                await c.publish("late", {"n": 7})
            assert order == [("pings", 20), ("wait", 7)]


async def _gather(coros):
    out = []

    async def run(coro):
        out.append(await coro)

    async with trio.open_nursery() as n:
        for coro in coros:
            n.start_soon(run, coro)
    return out


async def test_subscription_resumes_exactly_once_across_dropped_connections(server):
    """Sessions crash (1011) and the project restarts (1012) while events are published:
    the consumer sees each event once, in order, and the client reconnected."""
    h = server
    n_events = 120
    with trio.fail_after(40):
        async with sdk.connect(url(h), h.token(sub="pub")) as pub, \
                sdk.connect(url(h), h.token(sub="sub"), config=FAST) as c:
            sub = await c.subscribe(["tick"])
            seen = []

            async def publish():
                for i in range(n_events):
                    await pub.publish("tick", {"i": i})
                    if i in (30, 90):
                        assert h.system.actor_ref("session:sub").inject_fault("crash")
                    if i == 60:
                        assert h.system.actor_ref("project:p1").inject_fault("crash")
                    await trio.sleep(0.002)

            async with trio.open_nursery() as n:
                n.start_soon(publish)
                async for event in sub:
                    seen.append(event["data"]["i"])
                    if len(seen) == n_events:
                        break
            assert seen == list(range(n_events))
            assert c.connections >= 3
            cursor = sub.cursor()
            await pub.publish("tick", {"i": n_events})
            assert (await sub.__anext__())["data"]["i"] == n_events and sub.cursor() > cursor


async def test_a_write_in_flight_when_its_connection_drops_is_sent_again_and_stored_once(server):
    h = server
    with trio.fail_after(30):
        async with sdk.connect(url(h), h.token(sub="writer"), config=FAST) as c:
            await c.publish("warm")  # the project is running
            answers = []

            async def write():
                answers.append(await c.store_result("ISS-9", {"status": "success"}))

            async with trio.open_nursery() as n:
                assert h.system.actor_ref("project:p1").inject_fault("delay", 800)
                n.start_soon(write)
                await trio.sleep(0.3)  # the write waits at the stalled project
                assert h.system.actor_ref("session:writer").inject_fault("crash")
            assert c.connections >= 2
            page = await c.query_results(issue_id="ISS-9")
            assert [r["id"] for r in page["results"]] == [answers[0]["id"]]


async def test_a_slow_consumer_is_resubscribed_from_its_cursor_not_skipped(server):
    h = server
    config = ClientConfig(subscription_buffer=5)
    with trio.fail_after(30):
        async with sdk.connect(url(h), h.token(sub="pub")) as pub, \
                sdk.connect(url(h), h.token(sub="slow"), config=config) as c:
            sub = await c.subscribe(["tick"])
            for i in range(40):
                await pub.publish("tick", {"i": i})
            await trio.sleep(0.2)  # far more than the buffer holds has arrived
            seen = []
            async for event in sub:
                seen.append(event["data"]["i"])
                if len(seen) == 40:
                    break
            assert seen == list(range(40))


async def test_auth_refresh_when_the_server_says_the_token_is_expiring(server):
    h = server
    with trio.fail_after(20):
        token = h.token(ttl=31)  # the server warns 30 s ahead: after about a second
        async with sdk.connect(url(h), token) as c:
            while c.token == token:  # noqa: ASYNC110 (the client's own task refreshes it)
                await trio.sleep(0.05)
            assert c.claims["exp"] > token_claims(token)["exp"]
            await c.ping()


async def test_a_server_gone_for_good_fails_callers_with_connection_failed(nursery, tmp_path):
    with trio.fail_after(20):
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        port = listeners[0].socket.getsockname()[1]
        await listeners[0].aclose()  # nothing listens there
        config = ClientConfig(backoff_initial=0.01, backoff_max=0.05, reconnect_timeout=0.3)
        with pytest.raises(sdk.ConnectionFailed):
            async with sdk.connect(f"http://127.0.0.1:{port}", "x.y.z", config=config):
                pass


async def test_the_blocking_client_has_the_same_methods_and_exceptions(server):
    h = server
    token = h.token(sub="script")

    def script() -> list:
        out = []
        with sdk.connect_sync(url(h), token, timeout=10) as c:
            stored = c.store_result("ISS-3", {"status": "success"})
            out.append(c.get_result(stored["id"])["agent_id"])
            try:
                c.get_result("missing")
            except sdk.NotFound as exc:
                out.append(exc.code)
            sub = c.subscribe(["agent_completed"], since="0")
            out.append(next(iter(sub))["data"]["result_id"] == stored["id"])
            try:
                sub.next(timeout=0.1)
            except TimeoutError:
                out.append("timeout")
            sub.unsubscribe()
        try:
            sdk.connect_sync(url(h), "bad")
        except sdk.Unauthorized:
            out.append("unauthorized")
        return out

    assert "idempotency_key" in inspect.signature(sdk.SyncClient.store_result).parameters
    t0 = time.monotonic()
    with trio.fail_after(30):
        out = await trio.to_thread.run_sync(script)
    assert out == ["script", "NOT_FOUND", True, "timeout", "unauthorized"], out
    assert time.monotonic() - t0 < 30


async def test_a_star_subscription_resumes_per_project_across_a_dropped_connection(server):
    """An admin "*" subscription: projects running and started later, resumed with a cursor
    per project after its connection crashed: each project's events once, in order."""
    h = server
    admin = h.token("*", agent_type="dashboard", admin=True, sub="dash")
    with trio.fail_after(30):
        async with sdk.connect(url(h), h.token("alpha", sub="a")) as alpha, \
                sdk.connect(url(h), admin, config=FAST) as dash:
            await alpha.publish("job", {"n": -1})  # alpha runs before the subscription
            sub = await dash.subscribe(["job"], project_id="*")
            with pytest.raises(ValueError):
                await dash.subscribe(["job"], project_id="*")
            async with sdk.connect(url(h), h.token("beta", sub="b")) as beta:
                for n in range(10):
                    await alpha.publish("job", {"n": n})
                    await beta.publish("job", {"n": n})  # beta starts after the subscription
                    if n == 4:
                        assert h.system.actor_ref("session:dash").inject_fault("crash")
                seen: dict[str, list[int]] = {"alpha": [], "beta": []}
                async for event in sub:
                    seen[event["project_id"]].append(event["data"]["n"])
                    if sum(map(len, seen.values())) == 20:
                        break
            assert seen == {"alpha": list(range(10)), "beta": list(range(10))}
            assert dash.connections >= 2 and set(sub.cursor()) == {"alpha", "beta"}


async def test_the_example_agent_reads_stores_publishes_and_waits(nursery, tmp_path):
    """examples/sdk_agent.py, run as a process the way a spawned agent runs."""
    h = await start_context_server(nursery, tmp_path)
    env = {**os.environ, "ORCHESTRA_URL": url(h), "ORCHESTRA_ISSUE_ID": "ISS-5",
           "ORCHESTRA_TOKEN": h.token(agent_type="code-reviewer", sub="rev-1")}
    example = Path(__file__).parents[2] / "examples" / "sdk_agent.py"
    out: list[Any] = []

    async def agent():
        out.append(await trio.run_process([sys.executable, str(example), "--task", "review app", "--wait", "10"],
                                          env=env, capture_stdout=True, capture_stderr=True, check=False))

    with trio.fail_after(30):
        async with sdk.connect(url(h), h.token(sub="lead")) as lead:
            ready = await lead.subscribe(["review_ready"])
            async with trio.open_nursery() as n:
                n.start_soon(agent)
                event = await ready.__anext__()
                assert event["publisher"] == "rev-1" and event["data"]["issue_id"] == "ISS-5"
                await lead.publish("review_acknowledged", {"issue_id": "ISS-5"})
            proc = out[0]
            assert proc.returncode == 0, proc.stderr
            summary = orjson.loads(proc.stdout)
            assert summary["acknowledged_by"] == ["lead"]
            record = await lead.get_result(summary["result_id"])
            assert record["agent_id"] == "rev-1" and record["result"]["files_reviewed"]
    env["ORCHESTRA_TOKEN"] = "bad"
    refused = await trio.run_process([sys.executable, str(example)], env=env, capture_stdout=True,
                                     capture_stderr=True, check=False)
    assert refused.returncode == 3


def test_the_token_is_refreshed_before_it_expires():
    now = 1_000_000.0
    hour = {"iat": now, "exp": now + 3600}
    assert refresh_delay(hour, now, 60) == 3600 - 60
    short = {"iat": now, "exp": now + 30}  # at most a third of its lifetime ahead
    assert refresh_delay(short, now, 60) == 20
    assert refresh_delay({"exp": now + 300}, now, 60) == 240  # no iat
    assert refresh_delay({"exp": now - 5, "iat": now - 65}, now, 60) < 0  # due now
    assert refresh_delay({}, now, 60) is None


async def test_errors_and_cancellation_leave_the_block_as_themselves(server):
    """Not wrapped in an exception group by the client's own tasks."""
    h = server
    with trio.fail_after(20):
        with pytest.raises(sdk.NotFound):
            async with sdk.connect(url(h), h.token()) as c:
                await c.get_result("missing")
        with trio.move_on_after(0.2) as scope:
            async with sdk.connect(url(h), h.token()) as c:
                await c.wait("never", timeout=10)
        assert scope.cancelled_caught
        with pytest.raises(sdk.NotFound):  # no WebSocket endpoint there: final, not retried
            async with sdk.connect(f"ws://127.0.0.1:{h.port}/elsewhere", h.token()):
                pass


async def test_a_resume_past_retention_raises_events_lost_then_goes_on(nursery, tmp_path):
    h = await start_server(nursery, tmp_path / "d", max_events=5)
    with trio.fail_after(20):
        async with sdk.connect(url(h), h.token()) as c:
            for i in range(10):
                await c.publish("tick", {"i": i})
            sub = await c.subscribe(["tick"], since="00000000000000000001")
            with pytest.raises(sdk.EventsLost) as info:
                await sub.__anext__()
            assert info.value.code == "EVENTS_LOST" and not sub.recovered
            assert [(await sub.__anext__())["data"]["i"] for _ in range(5)] == [5, 6, 7, 8, 9]


async def test_a_connection_cut_as_too_far_behind_resumes_without_loss(nursery, tmp_path):
    """A burst past the connection's outbound bound closes it with 4008; the client
    reconnects, resumes from its cursor and the replay runs at its pace."""
    h = await start_server(nursery, tmp_path / "d", session=SessionLimits(max_messages=8))
    with trio.fail_after(30):
        async with sdk.connect(url(h), h.token(sub="w")) as writer, \
                sdk.connect(url(h), h.token(sub="r"), config=FAST) as c:
            sub = await c.subscribe(["agent_completed"])
            bodies = [writer.result_body("ISS-B", {"status": "success", "i": i}) for i in range(300)]
            await writer.store_results(bodies)  # 300 events at once
            seen = []
            async for event in sub:
                seen.append(event["data"]["result_id"])
                if len(seen) == 300:
                    break
            stored = await c.query_results(issue_id="ISS-B", limit=1000)
            assert seen == [r["id"] for r in reversed(stored["results"])]
            assert c.connections >= 2  # it was cut (4008) and came back


async def test_a_slow_star_consumer_is_resumed_on_a_fresh_connection(server):
    h = server
    admin = h.token("*", agent_type="dashboard", admin=True, sub="dash")
    config = ClientConfig(subscription_buffer=4, backoff_initial=0.01, backoff_max=0.05)
    with trio.fail_after(30):
        async with sdk.connect(url(h), h.token("alpha", sub="a")) as alpha, \
                sdk.connect(url(h), admin, config=config) as dash:
            await alpha.publish("warm")
            sub = await dash.subscribe(["job"], project_id="*")
            for n in range(20):
                await alpha.publish("job", {"n": n})
            await trio.sleep(0.2)  # far more than the buffer holds has arrived
            seen = [(await sub.__anext__())["data"]["n"] for _ in range(20)]
            assert seen == list(range(20)) and dash.connections >= 2


async def test_many_subscriptions_resume_within_the_rate_limit(nursery, tmp_path):
    """More subscriptions than the rate limit's burst: the resubscriptions of a new
    connection wait their turn instead of failing the connection over and over."""
    h = await start_server(nursery, tmp_path / "d", rate_limits=True)
    with trio.fail_after(40):
        async with sdk.connect(url(h), h.token(sub="pub")) as pub, \
                sdk.connect(url(h), h.token(sub="many"), config=FAST) as c:
            subs = []
            for i in range(45):  # past the burst of 40 (resubscribing takes about 2 s at 20/s)
                while True:
                    try:
                        subs.append(await c.subscribe([f"t{i}"]))
                        break
                    except sdk.RateLimited as exc:
                        await trio.sleep(exc.retry_after)
            await trio.sleep(2.5)  # the bucket refills
            assert h.system.actor_ref("session:many").inject_fault("crash")
            await pub.publish("t44", {"ok": True})
            assert (await subs[44].__anext__())["data"] == {"ok": True}
            assert c.connections == 2


async def test_an_answer_of_an_unexpected_shape_fails_its_request_only():
    link = Link(None, 1024)  # type: ignore[arg-type]

    def on_reply(link, reply):
        reply["subscription"]  # the answer lacks it

    slot = Pending(on_reply)
    link.pending[1] = slot
    link.answer({"id": 1, "ok": True, "result": {}})
    assert slot.done.is_set() and isinstance(slot.error, sdk.OrchestraError)
    link.answer({"id": 2, "ok": False, "error": "not an object"})  # no such request: ignored
