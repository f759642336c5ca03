"""Who writes a session's frames, and in what order: an answer made while nothing is queued
is written by the task that made it; otherwise it waits its turn in the outbox."""

from __future__ import annotations

import math
from typing import Any

import trio
import trio.testing
from orchestra.actors.session import (
    CloseReason,
    ConnectionGone,
    Session,
    SessionLimits,
    SessionRegistry,
)

from tests.actors.test_session import FakeConnection, FakeDispatcher, principal


class GatedConnection(FakeConnection):
    """Records which path wrote each frame; the writer's batches wait for ``gate``."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = trio.Event()
        self.paths: list[tuple[str, bytes]] = []
        self.gone = False

    async def send(self, frame: bytes) -> None:
        if self.gone:
            raise ConnectionGone
        self.paths.append(("direct", frame))
        await super().send(frame)

    async def send_many(self, frames: list[bytes]) -> None:
        await self.gate.wait()
        for frame in frames:
            self.paths.append(("writer", frame))
            await super().send(frame)


class Pooled(FakeDispatcher):
    def parse(self, session: Session, raw: str | bytes) -> tuple[dict[str, Any], str] | bytes:
        return {"raw": raw}, "pooled"


def start(conn: FakeConnection, dispatcher: FakeDispatcher | None = None) -> Session:
    return Session("agent-1#1", conn, dispatcher or FakeDispatcher(), SessionLimits(), principal(math.inf),
                   SessionRegistry(), wall_clock=lambda: 0.0)


async def test_an_answer_with_nothing_queued_is_written_by_the_task_that_made_it():
    conn = GatedConnection()
    session = start(conn)
    async with trio.open_nursery() as nursery:
        await nursery.start(session.run)
        await conn._send.send("a")
        await trio.testing.wait_all_tasks_blocked()
        assert conn.paths == [("direct", b"answer:a")]
        session.close(CloseReason.NORMAL, "")


async def test_an_answer_waits_behind_frames_the_writer_holds_and_keeps_their_order():
    conn = GatedConnection()
    session = start(conn)
    async with trio.open_nursery() as nursery:
        await nursery.start(session.run)
        assert session.deliver("s1", "c1", b"one")
        await trio.testing.wait_all_tasks_blocked()  # the writer holds "one", waiting at the gate
        await conn._send.send("a")
        await trio.testing.wait_all_tasks_blocked()
        assert session.deliver("s1", "c2", b"two")
        conn.gate.set()
        await trio.testing.wait_all_tasks_blocked()
        assert conn.paths == [("writer", b"event:one"), ("writer", b"answer:a"), ("writer", b"event:two")]
        assert session.resume_cursor() == "c2"
        session.close(CloseReason.NORMAL, "")


async def test_a_pooled_answer_to_a_connection_that_went_away_ends_the_session_normally():
    conn = GatedConnection()
    conn.gone = True
    session = start(conn, Pooled())
    async with trio.open_nursery() as nursery:
        await nursery.start(session.run)
        await conn._send.send("a")
        with trio.fail_after(5):
            await session.finished.wait()
    assert session.close_reason is CloseReason.NORMAL


class Mixed(FakeDispatcher):
    """"slow..." frames are pooled and wait for ``release``; others are inline."""

    def __init__(self) -> None:
        self.release = trio.Event()
        self.tasks: dict[str, object] = {}

    def parse(self, session: Session, raw: str | bytes) -> tuple[dict[str, Any], str] | bytes:
        return {"raw": raw}, "pooled" if str(raw).startswith("slow") else "inline"

    async def handle(self, session: Session, request: dict[str, Any]) -> bytes | None:
        self.tasks[str(request["raw"])] = trio.lowlevel.current_task()
        if str(request["raw"]).startswith("slow"):
            await self.release.wait()
        return await super().handle(session, request)


def answers(conn: FakeConnection) -> list[bytes]:
    return [frame for _, frame in conn.sent]


async def test_workers_take_turns_reading_and_answer_what_they_read():
    conn, dispatcher = FakeConnection(), Mixed()
    session = Session("agent-1#1", conn, dispatcher, SessionLimits(workers=2), principal(math.inf),
                      SessionRegistry(), wall_clock=lambda: 0.0)
    async with trio.open_nursery() as nursery:
        await nursery.start(session.run)
        for raw in ("slow-1", "a", "slow-2", "b"):
            await conn._send.send(raw)
        await trio.testing.wait_all_tasks_blocked()
        # a free worker read on past slow-1: "a" answered; the second worker holds slow-2, so
        # with both answering nothing more is read ("b" waits in the connection's queue)
        assert answers(conn) == [b"answer:a"]
        assert dispatcher.tasks["slow-1"] is not dispatcher.tasks["slow-2"]
        assert dispatcher.tasks["a"] is dispatcher.tasks["slow-2"]  # read by the one that went on reading
        dispatcher.release.set()
        await trio.testing.wait_all_tasks_blocked()
        assert sorted(answers(conn)[1:]) == [b"answer:b", b"answer:slow-1", b"answer:slow-2"]
        assert session.requests == 4
        session.close(CloseReason.NORMAL, "")


class DirectConnection(GatedConnection):
    """``send_now`` takes a frame whenever ``open_now`` is set (keeping part of it with
    ``partial``), as a socket with room does."""

    def __init__(self) -> None:
        super().__init__()
        self.gate.set()
        self.open_now = True
        self.partial = False
        self.backlogged = False
        self.flushes = 0

    def send_now(self, frame: bytes) -> bool:
        if not self.open_now:
            return False
        self.paths.append(("now", frame))
        self.backlogged = self.partial
        return True

    async def send_many(self, frames: list[bytes]) -> None:
        if self.backlogged:
            self.flushes += 1
            self.backlogged = False
        await super().send_many(frames)


async def test_a_live_event_with_nothing_queued_is_written_by_the_delivering_task():
    """A delivery costs the write, not a wake-up of the writer; its cursor counts as written."""
    conn = DirectConnection()
    session = start(conn)
    async with trio.open_nursery() as nursery:
        await nursery.start(session.run)
        await trio.testing.wait_all_tasks_blocked()
        assert session.deliver("s1", "c1", b"one")
        assert conn.paths == [("now", b"event:one")]  # before any other task ran
        assert session.resume_cursor() == "c1"
        conn.open_now = False  # the socket is full: the writer sends it, in order
        assert session.deliver("s1", "c2", b"two")
        conn.open_now = True
        assert session.deliver("s1", "c3", b"three")  # queued behind "two", not written past it
        await trio.testing.wait_all_tasks_blocked()
        assert conn.paths[1:] == [("writer", b"event:two"), ("writer", b"event:three")]
        assert session.resume_cursor() == "c3"
        session.close(CloseReason.NORMAL, "")


async def test_a_live_event_written_in_part_counts_once_the_writer_sent_the_rest():
    conn = DirectConnection()
    conn.partial = True
    session = start(conn)
    async with trio.open_nursery() as nursery:
        await nursery.start(session.run)
        await trio.testing.wait_all_tasks_blocked()
        assert session.deliver("s1", "c0", b"zero")
        await trio.testing.wait_all_tasks_blocked()
        assert session.resume_cursor() == "c0" and conn.flushes == 1
        assert session.deliver("s1", "c1", b"one")
        assert session.resume_cursor() == "c0"  # part of "one" still waits in the connection
        await trio.testing.wait_all_tasks_blocked()
        assert conn.flushes == 2 and not conn.backlogged
        assert session.resume_cursor() == "c1"
        session.close(CloseReason.NORMAL, "")
