"""The store actor on MockClock(autojump_threshold=0), over the in-memory backend run inline:
group commit, failures that stay with their request, crashes and restarts, periodic purge.
No sockets, no sleeps on real time, no threads.
"""

from __future__ import annotations

import sqlite3
import threading
from typing import Any

import pytest
import trio
import trio.testing
from orchestra.actors.runtime import ActorCrashed, ActorRef, ChildSpec, Supervisor
from orchestra.actors.store import (
    AppendBatch,
    CommitFailed,
    EventRow,
    GetResult,
    HighWater,
    PurgeExpired,
    ResultRow,
    SaveWaitCursor,
    SQLiteBackend,
    StoreActor,
    StoreCounts,
    WriteRejected,
)
from orchestra.actors.store_memory import MemoryBackend

from tests.actors.conftest import WallClock, batch_outcomes, stall, store_spec


def row(rid: str) -> ResultRow:
    return ResultRow(rid, "p1", "iss-1", "python-specialist", "a1", "success", "2026-01-01T00:00:00Z",
                     b'{"id":"%s"}' % rid.encode())


def append(rid: str, cursor: int, expires_at: float = 9e9) -> AppendBatch:
    return AppendBatch("p1", cursor, (row(rid),), (EventRow("p1", cursor, "tick", expires_at, b"{}"),))


async def start_store(
    nursery: trio.Nursery, backend: MemoryBackend, **kwargs: Any
) -> tuple[ActorRef, Supervisor]:
    ref = ActorRef("store")
    sup = Supervisor("root", [store_spec(backend, ref, **kwargs)], max_restarts=10)
    await nursery.start(sup.run)
    return ref, sup


async def call_all(ref: ActorRef, msgs: dict[str, Any]) -> dict[str, Any]:
    """Each outcome of ``msgs`` sent to the store as one batch (the reply, or the exception's
    class name)."""
    return await batch_outcomes(ref, msgs, names=True)


async def test_a_non_blocking_backend_runs_inline_so_the_mock_clock_stands_still(nursery, autojump_clock):
    threads = threading.active_count()
    ref, _ = await start_store(nursery, MemoryBackend())
    t0 = trio.current_time()
    with trio.fail_after(1):  # a commit on a thread would let autojump fire this at once
        assert await ref.call(append("r1", 1)) is None
        assert (await ref.call(StoreCounts()))["results"] == 1
    assert trio.current_time() == t0
    assert threading.active_count() == threads


async def test_writes_queued_together_are_group_committed_in_one_transaction(nursery, autojump_clock):
    backend = MemoryBackend()
    ref, _ = await start_store(nursery, backend)
    outcomes = await call_all(ref, {f"w{i}": append(f"r{i}", i) for i in range(1, 6)} | {"n": StoreCounts()})
    assert outcomes == {"w1": None, "w2": None, "w3": None, "w4": None, "w5": None,
                        "n": {"results": 5, "events": 5, "projects": 1}}  # the read sees them all
    assert backend.commits == 1 and backend.seen[AppendBatch] == 5


async def test_one_failing_write_is_answered_alone_and_the_rest_of_its_batch_commits(nursery, autojump_clock):
    backend = MemoryBackend()
    ref, sup = await start_store(nursery, backend)
    assert await ref.call(append("r0", 1)) is None
    outcomes = await call_all(ref, {
        "forged": AppendBatch("p1", 2**63),  # no SQLite integer holds it
        "ok": append("r2", 2), "dup": append("r0", 3),  # a result id already stored
        "wait": SaveWaitCursor("p1", "a1", "k", 2), "high": HighWater("p1"),
    })
    assert outcomes == {"forged": "WriteRejected", "ok": None, "dup": "WriteRejected", "wait": None, "high": 2}
    assert backend.result_ids() == ["r0", "r2"] and backend.commits == 2
    backend.fail_writes(AppendBatch)  # an armed fault: the next append fails alone too
    with pytest.raises(WriteRejected):
        await ref.call(append("r3", 3))
    assert await ref.call(append("r3", 3)) is None
    assert ref.incarnation == 1 and sup.total_crashes() == 0


async def test_a_commit_that_fails_fails_each_of_its_writes_and_stores_none(nursery, autojump_clock):
    backend = MemoryBackend()
    ref, sup = await start_store(nursery, backend)
    backend.fail_commit()
    outcomes = await call_all(ref, {"a": append("r1", 1), "b": append("r2", 2), "n": StoreCounts()})
    assert outcomes == {"a": "CommitFailed", "b": "CommitFailed",
                        "n": {"results": 0, "events": 0, "projects": 0}}
    with pytest.raises(CommitFailed) as info:  # failing again, called alone: transient, retry
        backend.fail_commit()
        await ref.call(append("r1", 1))
    assert info.value.transient
    assert await ref.call(append("r1", 1)) is None
    assert ref.incarnation == 1 and sup.total_crashes() == 0


@pytest.mark.parametrize("after_commit", [False, True], ids=["before-commit", "after-commit"])
async def test_a_crash_fails_the_calls_in_flight_and_the_restart_keeps_the_data(nursery, autojump_clock, after_commit):
    backend = MemoryBackend()
    ref, sup = await start_store(nursery, backend)
    assert await ref.call(append("r0", 1)) is None  # acknowledged before the crash
    backend.crash(AppendBatch, after_commit=after_commit)
    outcomes = await call_all(ref, {"w": append("r1", 2), "r": GetResult("p1", "r0")})
    assert outcomes == {"w": "ActorCrashed", "r": "ActorCrashed"}  # outcome unknown to both
    await trio.testing.wait_all_tasks_blocked()
    assert ref.incarnation == 2 and sup.total_restarts() == 1 and backend.opens == 2
    assert await ref.call(GetResult("p1", "r0")) == b'{"id":"r0"}'
    assert await ref.call(HighWater("p1")) == (2 if after_commit else 1)  # what settles the doubt
    assert backend.result_ids() == (["r0", "r1"] if after_commit else ["r0"])


async def test_an_injected_crash_fails_the_queued_calls_and_the_store_serves_on(nursery, autojump_clock):
    backend = MemoryBackend()
    ref, sup = await start_store(nursery, backend)
    assert await ref.call(append("r0", 1)) is None
    assert ref.inject_fault("crash")
    with pytest.raises(ActorCrashed):
        await ref.call(append("r1", 2))
    await trio.testing.wait_all_tasks_blocked()
    assert ref.incarnation == 2 and sup.total_crashes() == 1
    assert (await ref.call(StoreCounts()))["results"] == 1
    assert await ref.call(append("r1", 2)) is None


async def test_expired_events_are_purged_on_the_mock_clock_every_interval(nursery, autojump_clock):
    backend, clock = MemoryBackend(), WallClock(1000.0)
    ref, _ = await start_store(nursery, backend, purge_interval=30.0, wall_clock=clock)
    assert await ref.call(append("r1", 1, expires_at=1010.0)) is None
    assert await ref.call(append("r2", 2, expires_at=1100.0)) is None
    await trio.sleep(29.9)
    assert backend.seen[PurgeExpired] == 0
    clock.now = 1050.0
    await trio.sleep(0.2)  # the first purge, at 30 s
    assert backend.seen[PurgeExpired] == 1 and [c for c, _ in backend.events_of("p1")] == [2]
    clock.now = 1200.0
    await trio.sleep(30.0)  # the next one, 30 s later
    assert backend.seen[PurgeExpired] == 2 and backend.events_of("p1") == []
    assert (await ref.call(StoreCounts()))["results"] == 2  # results are never purged


async def test_an_orderly_stop_commits_what_was_queued_and_closes_the_backend(autojump_clock):
    backend = MemoryBackend()
    async with trio.open_nursery() as nursery:
        ref, _ = await start_store(nursery, backend)
        await stall(ref)
        ref.try_cast(append("r1", 1))  # queued behind the stall when the stop comes
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert backend.result_ids() == ["r1"] and not backend.opened


async def test_the_sqlite_backend_still_runs_on_a_worker_thread(tmp_path):
    actor = StoreActor(SQLiteBackend(tmp_path / "o.db"))
    ref = ActorRef("store")
    with trio.fail_after(10):  # real time: a thread is in flight
        async with trio.open_nursery() as nursery:
            await nursery.start(Supervisor("root", [ChildSpec.actor("store", ref, lambda: actor)]).run)
            assert await ref.call(append("r1", 1)) is None
            assert actor.thread is not None
            nursery.cancel_scope.cancel()


async def test_a_crashed_sqlite_store_closes_its_connection_and_the_restart_opens_another(tmp_path):
    # Before: an incarnation that crashed left its SQLite connection open (only an orderly stop
    # closed it); each crash kept one more until the collector found it.
    backend = SQLiteBackend(tmp_path / "o.db")  # shared by the incarnations, as a test may
    ref = ActorRef("store")
    sup = Supervisor("root", [ChildSpec.actor("store", ref, lambda: StoreActor(backend))], max_restarts=10)
    with trio.fail_after(10):  # real time: a thread is in flight
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            assert await ref.call(append("r1", 1)) is None
            first = backend.db
            assert first is not None
            assert ref.inject_fault("crash")
            with pytest.raises(ActorCrashed):
                await ref.call(append("r2", 2))
            assert await ref.call(append("r3", 3)) is None  # the restarted store serves
            assert ref.incarnation == 2
            assert backend.db is not None and backend.db is not first
            while True:  # closed on the crashed incarnation's thread, soon after
                try:
                    first.execute("SELECT 1")
                except sqlite3.ProgrammingError:
                    break
                await trio.sleep(0.01)
            assert await ref.call(StoreCounts()) == {"results": 2, "events": 2, "projects": 1}
            nursery.cancel_scope.cancel()
