"""Hostile input the barrage of test_hostile.py does not send: fragmented WebSocket messages
(valid and not), hostile HTTP header names and values, and profile files. Property-based and
bounded (the same few examples every CI run; HYPOTHESIS_PROFILE=long for more)."""

from __future__ import annotations

import os
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import orjson
import pytest
import trio
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
from orchestra.actors.profiles import ProfileError, Profiles

from tests.conftest import Harness, result_body, start_server
from tests.transport.test_hostile import raw_http, raw_ws_frames

LONG = os.environ.get("HYPOTHESIS_PROFILE") == "long"
SETTINGS = settings(max_examples=60 if LONG else 8, deadline=None, derandomize=not LONG, database=None,
                    phases=(Phase.explicit, Phase.generate), suppress_health_check=list(HealthCheck))
ERROR_KEYS = {"error", "code", "message", "timestamp", "request_id"}
PING = b'{"id":1,"op":"ping"}'
TEXT, CONT, BINARY, CLOSE, WS_PING = 0x1, 0x0, 0x2, 0x8, 0x9


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in zip(points, points[1:], strict=False)] or [b""]


def _fragments(parts: list[bytes], opcode: int = TEXT) -> list[tuple[int, bytes, bool]]:
    return [(opcode if i == 0 else CONT, part, i == len(parts) - 1) for i, part in enumerate(parts)]


@asynccontextmanager
async def own_server() -> AsyncIterator[Harness]:
    """A server of the example's own (hypothesis runs each example in a trio run of its own,
    so it cannot use a fixture's server)."""
    with tempfile.TemporaryDirectory() as tmp:
        async with trio.open_nursery() as nursery:
            yield await start_server(nursery, Path(tmp))
            nursery.cancel_scope.cancel()


async def _healthy(server) -> None:
    assert (await server.request("GET", "/health")).json()["status"] == "healthy"


@settings(SETTINGS, max_examples=60 if LONG else 3)
@example(cuts=[1, 5, 9])
@given(cuts=st.lists(st.integers(min_value=0, max_value=len(PING)), max_size=6))
async def test_a_fragmented_request_is_answered_as_a_whole(cuts):
    async with own_server() as server:
        frames = _fragments(_split(PING, cuts))
        code, texts = await raw_ws_frames(server.port, server.token(), frames, settle=1.0)
    assert code is None and orjson.loads(texts[0])["result"] == {"pong": True}, (code, texts)


async def test_a_control_frame_between_fragments_is_allowed(server):
    frames = [(TEXT, PING[:6], False), (WS_PING, b"hi", True), (CONT, PING[6:], True)]
    code, texts = await raw_ws_frames(server.port, server.token(), frames, settle=1.0)
    assert code is None and any(b"pong" in t for t in texts), (code, texts)


@pytest.mark.parametrize("frames", [
    [(CONT, PING, True)],  # a continuation with nothing to continue
    [(TEXT, PING[:5], False), (TEXT, PING, True)],  # a new message inside a fragmented one
    [(TEXT, PING[:5], False), (BINARY, PING, True)],
    [(WS_PING, b"x", False)],  # a fragmented control frame
    [(WS_PING, b"x" * 126, True)],  # a control frame over 125 bytes
    [(0x3, b"reserved opcode", True)],
    [(TEXT, b'{"id":1,"op":"ping","x":"\xff', False), (CONT, b'"}', True)],  # invalid UTF-8 across fragments
], ids=["lone-continuation", "text-in-fragments", "binary-in-fragments", "fragmented-control",
        "long-control", "reserved-opcode", "invalid-utf8-split"])
async def test_a_broken_fragment_sequence_ends_that_connection_alone(server, frames):
    tok = server.token()
    async with server.ws(server.token(sub="bystander")) as bystander:
        code, _ = await raw_ws_frames(server.port, tok, frames, settle=3.0)
        assert code in (1002, 1003, 1007, 1006), code
        assert (await bystander.call("ping"))["ok"]
    await _healthy(server)


async def test_a_fragmented_message_over_the_bound_closes_1009(server):
    limit = server.server.config.max_body_bytes
    chunk = b"x" * (256 * 1024)
    frames = [(TEXT, b'{"id":1,"op":"ping","pad":"', False)]
    frames += [(CONT, chunk, False)] * (limit // len(chunk) + 1) + [(CONT, b'"}', True)]
    code, texts = await raw_ws_frames(server.port, server.token(), frames, settle=5.0)
    assert code in (1009, 1006) and not texts, code
    await _healthy(server)


HEADER_NAMES = st.one_of(st.sampled_from([b"content-length", b"transfer-encoding", b"authorization", b"host",
                                          b"idempotency-key", b"content-type", b"connection", b"expect",
                                          b"upgrade", b"x-request-id"]),
                         st.binary(min_size=1, max_size=40))
HEADER_VALUES = st.one_of(st.sampled_from([b"", b"chunked", b"-1", b"99999999999999999999", b"0x10",
                                           b"Bearer", b"Bearer \xff\xfe", b"100-continue", b"close, close",
                                           b"x" * 9000]),
                          st.binary(max_size=200))


@SETTINGS
@example(headers=[(b"content-length", b"-1")])
@example(headers=[(b"transfer-encoding", b"chunked"), (b"content-length", b"5")])
@example(headers=[(b"idempotency-key", b"\x00\xff" * 50)])
@given(headers=st.lists(st.tuples(HEADER_NAMES, HEADER_VALUES), max_size=4))
async def test_hostile_headers_get_an_answer_never_a_500(headers):
    async with own_server() as server:
        body = orjson.dumps(result_body())
        with trio.fail_after(15):
            try:
                r = await raw_http(server.port, "POST", "/api/results", server.token(), body, headers)
            except (trio.BrokenResourceError, OSError):
                r = None  # the server closed a connection it could not read: that connection only
        if r is not None:
            assert r.status < 500, (headers, r.status, r.body[:300])
            if r.status >= 400 and r.body:
                assert ERROR_KEYS <= set(orjson.loads(r.body)), (headers, r.body[:300])
        await _healthy(server)


PROFILE_KEYS = st.sampled_from(["command", "permissions", "rate", "burst", "restart", "max_restarts",
                                "token_ttl", "stop_grace", "stall_seconds", "workspace", "event_subscriptions",
                                "max_running", "environment", "x"])
PROFILE_VALUES = st.recursive(
    st.one_of(st.none(), st.booleans(), st.integers(min_value=-(2**70), max_value=2**70),
              st.floats(allow_nan=True), st.text(max_size=30)),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=10,
)


@SETTINGS
@example(doc={"agents": {"a": {"permissions": ["admin"]}}})
@example(doc={"agents": {"../../etc": {"command": ["true"]}}})
@example(doc={"agents": []})
@given(doc=st.dictionaries(st.sampled_from(["agents", "profiles", "defaults", "x"]),
                           st.dictionaries(st.text(max_size=12), st.dictionaries(PROFILE_KEYS, PROFILE_VALUES,
                                                                                  max_size=5), max_size=3)
                           | PROFILE_VALUES, max_size=3))
def test_a_hostile_profiles_file_is_a_profile_error_or_profiles(tmp_path_factory, doc):
    folder = tmp_path_factory.mktemp("profiles")
    for name, text in (("p.json", _json(doc)), ("p.toml", _toml(doc)), ("bad.toml", b"[agents\n= 1"),
                       ("bad.json", b'{"agents": {')):
        if text is None:
            continue
        path = folder / name
        path.write_bytes(text)
        try:
            loaded = Profiles.load(path)
        except ProfileError as exc:
            assert str(path) in str(exc) or path.name in str(exc), exc
        else:
            assert "admin" not in loaded.get("a").permissions  # a profile never grants admin


def _json(doc) -> bytes | None:
    try:
        return orjson.dumps(doc)
    except (TypeError, orjson.JSONEncodeError):
        return None


def _toml(doc) -> bytes | None:
    """A TOML rendering of simple documents (tables of tables of scalars and lists)."""
    lines = []
    for top, value in doc.items() if isinstance(doc, dict) else ():
        if not isinstance(value, dict):
            return None
        for name, table in value.items():
            if not isinstance(table, dict):
                return None
            lines.append(f"[{top}.{orjson.dumps(name).decode()}]")
            for key, v in table.items():
                try:
                    lines.append(f"{key} = {orjson.dumps(v).decode()}")
                except (TypeError, orjson.JSONEncodeError):
                    return None
    return "\n".join(lines).encode()
