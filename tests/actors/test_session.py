"""The session actor alone, on MockClock: a fake connection and dispatcher, no sockets.

(Belongs beside the other actors' unit tests in tests/actors/ once those are merged.)
"""

from __future__ import annotations

import math
from typing import Any

import trio
from orchestra.actors.principal import Principal
from orchestra.actors.session import (
    CloseReason,
    CloseSession,
    Session,
    SessionLimits,
    SessionRegistry,
)


class FakeConnection:
    def __init__(self) -> None:
        self.sent: list[tuple[float, bytes]] = []
        self.closed: tuple[CloseReason, str] | None = None
        self._send, self._recv = trio.open_memory_channel[str](10)

    async def receive(self) -> str | bytes:
        return await self._recv.receive()

    async def send(self, frame: bytes) -> None:
        self.sent.append((trio.current_time(), frame))

    async def send_many(self, frames: list[bytes]) -> None:
        for frame in frames:
            await self.send(frame)

    def send_now(self, frame: bytes) -> bool:
        return False  # every frame the usual way (tests/actors/test_session_writes.py: not)

    backlogged = False

    async def close(self, reason: CloseReason, message: str) -> None:
        self.closed = (reason, message)


class FakeDispatcher:
    def parse(self, session: Session, raw: str | bytes) -> tuple[dict[str, Any], str] | bytes:
        return {"raw": raw}, "inline"

    async def handle(self, session: Session, request: dict[str, Any]) -> bytes | None:
        return b"answer:" + str(request["raw"]).encode()

    def reply_frame(self, reply_id: Any, result: dict[str, Any]) -> bytes:
        return b"reply"

    def notice_frame(self, op: str, fields: dict[str, Any]) -> bytes:
        return f"notice:{op}".encode()

    def event_frame(self, sid: str, event: bytes) -> bytes:
        return b"event:" + event


def principal(exp: float) -> Principal:
    return Principal("agent-1", "coder", "p1", frozenset({"admin"}), exp, {})


def session_for(conn: FakeConnection, registry: SessionRegistry, exp: float) -> Session:
    return Session("agent-1#1", conn, FakeDispatcher(), SessionLimits(), principal(exp), registry,
                   wall_clock=lambda: 0.0)


async def test_a_token_expiring_is_announced_then_closes_unauthenticated(autojump_clock):
    conn, registry = FakeConnection(), SessionRegistry()
    session = session_for(conn, registry, exp=100.0)
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        await nursery.start(session.run)
        assert list(registry) == [session]
        await conn._send.send("hello")
        await session.finished.wait()
    assert [(round(t - start), f) for t, f in conn.sent] == [
        (0, b"answer:hello"), (70, b"notice:auth.expiring"),
    ]
    assert conn.closed is not None and conn.closed[0] is CloseReason.UNAUTHENTICATED
    assert round(trio.current_time() - start) == 100
    assert not len(registry)


async def test_a_refresh_moves_the_expiry_and_a_close_keeps_the_first_reason(autojump_clock):
    conn, registry = FakeConnection(), SessionRegistry()
    session = session_for(conn, registry, exp=100.0)
    start = trio.current_time()
    async with trio.open_nursery() as nursery:
        await nursery.start(session.run)
        await trio.sleep(50)
        await session.refresh(principal(exp=math.inf))
        await trio.sleep(1000)
        assert conn.closed is None and session.principal.exp == math.inf
        assert session.ref.try_cast(CloseSession(CloseReason.GOING_AWAY, "shutting down"))
        assert session.ref.try_cast(CloseSession(CloseReason.RESTARTED, "later"))
        await session.finished.wait()
    assert conn.closed == (CloseReason.GOING_AWAY, "shutting down")
    assert round(trio.current_time() - start) == 1050
