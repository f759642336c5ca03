"""The store's direct lane (``CommitLane``): appends handed straight to the store's SQLite
thread, grouped across callers, answered after their transaction; the store actor's crash
point, crashes and restarts keep their meaning. Real threads and real time."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import Any

import pytest
import trio
from orchestra.actors.profiles import Profiles
from orchestra.actors.project import ProjectActor, ProjectConfig
from orchestra.actors.runtime import ActorCrashed, ActorRef, ChildSpec, Supervisor
from orchestra.actors.store import (
    AppendBatch,
    CommitLane,
    EventRow,
    HighWater,
    SQLiteBackend,
    StoreActor,
)

from tests.actors.test_project import publish


class CountingBackend(SQLiteBackend):
    """SQLite that counts its transactions of writes and can be told to break."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.groups: list[int] = []
        self.broken = False

    def apply(self, writes: list[Any], reads: list[Any]) -> tuple[list[Any], list[Any]]:
        if writes and self.broken:
            self.broken = False
            raise RuntimeError("the connection is in doubt")
        if writes:
            self.groups.append(len(writes))
        return super().apply(writes, reads)


async def start(nursery: trio.Nursery, backend: SQLiteBackend, *projects: str) -> tuple[ActorRef, list[ActorRef]]:
    store = ActorRef("store", 256)
    refs = [ActorRef(f"project:{p}", 256) for p in projects]
    specs = [ChildSpec.actor("store", store, lambda: StoreActor(backend))]
    for p, ref in zip(projects, refs, strict=True):
        specs.append(ChildSpec.actor(f"project:{p}", ref,
                                     lambda p=p: ProjectActor(p, store, Profiles(), ProjectConfig())))
    await nursery.start(Supervisor("root", specs, max_restarts=10).run)
    return store, refs


def gate(lane: CommitLane) -> threading.Event:
    """Hold the store's thread until the event is set: what is handed over meanwhile waits."""
    go = threading.Event()
    lane._thread.post(lambda: go.wait(10))
    return go


def append(project: str, cursor: int) -> AppendBatch:
    return AppendBatch(project, cursor, (), (EventRow(project, cursor, "tick", 9e9, b"{}"),))


async def test_appends_go_straight_to_the_thread_and_are_grouped_across_projects(tmp_path):
    backend = CountingBackend(tmp_path / "o.db")
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            store, (p1, p2) = await start(nursery, backend, "p1", "p2")
            lane = store.view
            assert isinstance(lane, CommitLane)
            mailbox = store._send.statistics
            go = gate(lane)
            replies: list[Any] = []

            async def one(ref: ActorRef) -> None:
                replies.append(await ref.call(publish()))

            async with trio.open_nursery() as callers:
                for ref in (p1, p2, p1, p2):
                    callers.start_soon(one, ref)
                await trio.sleep(0.2)
                assert mailbox().current_buffer_used == 0  # nothing went through the mailbox
                go.set()
            assert len(replies) == 4 and all(r["published"] for r in replies)
            # both projects' appends that waited behind the gate: one transaction
            assert backend.groups[0] == 2
            assert await store.call(HighWater("p1")) == 2 and await store.call(HighWater("p2")) == 2
            nursery.cancel_scope.cancel()


async def test_a_crash_armed_after_the_commit_is_settled_as_stored(tmp_path):
    backend = CountingBackend(tmp_path / "o.db")
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            store, (p1,) = await start(nursery, backend, "p1")
            first = await p1.call(publish())
            store.arm_crash("next_write")  # committed, then the store crashes before answering
            second = await p1.call(publish(), timeout=10)  # settled by the restarted store
            assert int(second["cursor"]) == int(first["cursor"]) + 1
            assert store.incarnation == 2 and not store.armed_points
            assert isinstance(store.view, CommitLane)  # the new incarnation's own lane
            assert await store.call(HighWater("p1")) == int(second["cursor"])
            nursery.cancel_scope.cancel()


async def test_a_backend_that_raises_crashes_the_store_and_the_write_is_not_stored(tmp_path):
    from orchestra.actors.errors import NotStored

    backend = CountingBackend(tmp_path / "o.db")
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            store, (p1,) = await start(nursery, backend, "p1")
            first = await p1.call(publish())
            backend.broken = True
            with pytest.raises(NotStored):
                await p1.call(publish(), timeout=10)
            assert store.incarnation == 2
            third = await p1.call(publish(), timeout=10)
            assert await store.call(HighWater("p1")) == int(third["cursor"]) > int(first["cursor"])
            nursery.cancel_scope.cancel()


async def test_an_append_still_waiting_when_the_store_crashes_is_not_run(tmp_path):
    backend = CountingBackend(tmp_path / "o.db")
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            store, _ = await start(nursery, backend)
            lane = store.view
            assert isinstance(lane, CommitLane)
            go = gate(lane)
            outcome: list[BaseException] = []

            async def waiting() -> None:
                try:
                    await lane.commit(append("p1", 1))
                except ActorCrashed as exc:
                    outcome.append(exc)

            async with trio.open_nursery() as callers:
                callers.start_soon(waiting)
                await trio.sleep(0.1)
                down = store.monitor()
                assert store.inject_fault("crash")
                await down.wait()  # the incarnation ended (its lane closed) ...
                go.set()  # ... before its thread gets to the append
            assert len(outcome) == 1  # outcome unknown to the caller ...
            assert await store.call(HighWater("p1")) == 0  # ... and indeed not stored
            assert backend.groups == []
            with pytest.raises(ActorCrashed):
                await lane.commit(append("p1", 1))  # an old incarnation's lane takes nothing
            nursery.cancel_scope.cancel()


async def test_a_caller_that_stops_waiting_abandons_the_answer_not_the_write(tmp_path):
    backend = CountingBackend(tmp_path / "o.db")
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            store, _ = await start(nursery, backend)
            lane = store.view
            assert isinstance(lane, CommitLane)
            go = gate(lane)
            with trio.move_on_after(0.1):
                await lane.commit(append("p1", 1))
            go.set()
            # the read runs on the same thread, after the append handed over before it
            assert await store.call(HighWater("p1")) == 1
            nursery.cancel_scope.cancel()


async def test_an_orderly_stop_commits_what_was_handed_over_before_it(tmp_path):
    backend = CountingBackend(tmp_path / "o.db")
    answers: list[Any] = []
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            store, _ = await start(nursery, backend)
            lane = store.view
            assert isinstance(lane, CommitLane)
            go = gate(lane)

            async def one() -> None:
                with trio.CancelScope(shield=True):  # waits for its answer through the stop
                    answers.append(await lane.commit(append("p1", 1)))

            nursery.start_soon(one)
            await trio.sleep(0.1)
            nursery.cancel_scope.cancel()  # the store stops while the append waits
            go.set()
    assert answers == [None]  # committed, and answered as such
    assert backend.db is None  # then the database was closed
    reopened = SQLiteBackend(tmp_path / "o.db")
    reopened.open()
    try:
        assert reopened.apply([], [HighWater("p1")])[1] == [1]
    finally:
        reopened.close()
