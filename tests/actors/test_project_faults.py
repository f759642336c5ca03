"""The project actor on MockClock(autojump_threshold=0) over the real store actor with the
in-memory backend: crash points of the store, errors inside a batch, backpressure, waits that
end exactly at their deadline, expiry, and the replay-then-live seam with a filter.

No sockets, no sleeps on real time, no threads.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
import trio
import trio.testing
from orchestra.actors.errors import NotFound, NotStored
from orchestra.actors.events import EventFilter
from orchestra.actors.project import (
    GetResult,
    ProjectStats,
    Publish,
    StoreResult,
    Subscribe,
    Unsubscribe,
    Wait,
)
from orchestra.actors.runtime import ActorRef, CallTimeout
from orchestra.actors.store import AppendBatch, HighWater, LoadProject, PurgeExpired

from tests.actors.conftest import Sink, batch_outcomes, stall, start_domain


def publish(n: int, topic: str = "t", ttl: float = 3600) -> Publish:
    return Publish("build", {"topic": topic, "data": {"n": n}, "ttl_seconds": ttl}, "agent-1", None)


def result(n: int) -> StoreResult:
    return StoreResult({"agent_id": "a1", "agent_type": "python-specialist", "issue_id": "i1",
                        "result": {"status": "success", "n": n}})


def wait(since: int | None = 0, timeout: float = 0.0, event_type: str = "build") -> Wait:
    return Wait("w", event_type, EventFilter.parse(None), since, 100, timeout)


async def seen(ref: ActorRef, since: int = 0) -> list[int]:
    """Cursors of the retained "build" events after ``since`` the project answers now."""
    found = orjson.loads((await ref.call(wait(since))).reply)["events"]
    return [int(e["cursor"]) for e in found]


# -- crash points --


async def test_a_store_crash_during_a_commit_fails_the_writer_and_cursors_never_go_back(nursery, autojump_clock):
    d = await start_domain(nursery)
    ok = [await d.project.call(publish(n)) for n in range(2)]
    stored = await d.project.call(result(0))
    d.backend.crash(AppendBatch)  # the store dies holding the next append, before committing it
    with pytest.raises(NotStored):  # settled by asking the restarted store: not stored
        await d.project.call(publish(99))
    assert d.store.incarnation == 2 and d.project.incarnation == 1
    after = await d.project.call(publish(2))
    assert int(after["cursor"]) > int(stored["event_cursor"]) + 1  # the failed append's cursor is skipped
    # the project restarts too: what was acknowledged is loaded, the cursor continues after it
    assert d.project.inject_fault("crash")
    await trio.testing.wait_all_tasks_blocked()
    assert d.project.incarnation == 2
    assert await seen(d.project) == [int(ok[0]["cursor"]), int(ok[1]["cursor"]), int(after["cursor"])]
    assert await d.project.call(GetResult(stored["id"]))
    again = await d.project.call(publish(3))
    assert int(again["cursor"]) == int(after["cursor"]) + 1
    assert await d.store.call(HighWater("p1")) == int(again["cursor"])


async def test_a_store_crash_after_the_commit_is_acknowledged_and_delivered_once(nursery, autojump_clock):
    d = await start_domain(nursery)
    sink = Sink()
    await d.project.call(Subscribe(sink, None, None, EventFilter.parse(None), None))
    d.backend.crash(AppendBatch, after_commit=True)
    reply = await d.project.call(publish(1))  # the store's high-water mark says it committed
    assert reply["published"] is True and d.store.incarnation == 2
    assert [int(c) for c in await sink.drain()] == [int(reply["cursor"])]
    assert await seen(d.project) == [int(reply["cursor"])]


async def test_a_store_that_cannot_say_whether_it_committed_is_answered_and_the_project_serves_on(nursery, autojump_clock):
    from orchestra.actors.errors import OutcomeUnknown

    d = await start_domain(nursery)
    d.backend.crash(AppendBatch, after_commit=True)
    d.backend.fail_reads(HighWater)
    with pytest.raises(OutcomeUnknown):
        await d.project.call(publish(1))
    assert (await d.project.call(publish(2)))["published"] is True
    assert d.project.incarnation == 1 and d.sup.total_restarts() == 1  # the store's only


# -- errors inside a batch --


async def test_a_rolled_back_append_fails_only_the_writes_of_its_batch(nursery, autojump_clock):
    d = await start_domain(nursery)
    kept = await d.project.call(publish(0))
    d.backend.fail_writes(AppendBatch)
    out = await batch_outcomes(d.project, {
        "pub1": publish(1), "pub2": publish(2), "res": result(1),
        "get": GetResult("nope"), "unsub": Unsubscribe("x#1", "p1/9"), "stats": ProjectStats(),
        "wait": wait(),
    })
    assert all(isinstance(out[k], NotStored) for k in ("pub1", "pub2", "res"))  # one append: all
    assert isinstance(out["get"], NotFound) and isinstance(out["unsub"], NotFound)
    assert out["stats"]["last_cursor"] >= kept["cursor"]
    assert [int(e["cursor"]) for e in orjson.loads(out["wait"].reply)["events"]] == [int(kept["cursor"])]
    later = await d.project.call(publish(3))  # the next batch commits; nothing restarted
    assert await seen(d.project) == [int(kept["cursor"]), int(later["cursor"])]
    assert d.sup.total_restarts() == 0 and d.backend.result_ids() == []


# -- backpressure --


async def test_a_full_mailbox_refuses_try_cast_and_makes_call_wait(nursery, autojump_clock):
    d = await start_domain(nursery, mailbox_size=4)
    await stall(d.project, 10_000)
    queued = 0
    while d.project.try_cast(ProjectStats()):
        queued += 1
    assert queued == 4 and d.project.queued == 4
    with pytest.raises(CallTimeout):  # waiting for room counts against the call's timeout
        await d.project.call(ProjectStats(), timeout=1.0)
    t0 = trio.current_time()
    stats = await d.project.call(ProjectStats())  # waits for room, then for its answer
    assert trio.current_time() - t0 == pytest.approx(9.0)  # the rest of the stall, no more
    assert stats["subscriptions"] == 0 and d.project.try_cast(ProjectStats())


# -- waits end exactly at their deadline --


async def test_waits_time_out_exactly_at_their_deadlines(nursery, autojump_clock):
    d = await start_domain(nursery)
    ended: dict[str, float] = {}
    t0 = trio.current_time()

    async def waiting(name: str, timeout: float) -> None:
        answer = await d.project.call(wait(since=0, timeout=timeout))
        ended[name] = trio.current_time() - t0
        assert orjson.loads(answer.reply) == {"events": [], "more_available": False,
                                              "next_cursor": "0" * 20, "timeout": True}

    async with trio.open_nursery() as waits:
        waits.start_soon(waiting, "short", 2.5)
        waits.start_soon(waiting, "long", 7.0)
    assert ended == {"short": 2.5, "long": 7.0}
    assert (await d.project.call(ProjectStats()))["waiters"] == 0


async def test_a_wait_is_answered_when_its_event_commits_not_at_its_deadline(nursery, autojump_clock):
    d = await start_domain(nursery)
    t0 = trio.current_time()
    answer: dict[str, Any] = {}

    async def waiting() -> None:
        found = await d.project.call(wait(since=0, timeout=60.0))
        answer.update(orjson.loads(found.reply), at=trio.current_time() - t0)

    async with trio.open_nursery() as n:
        n.start_soon(waiting)
        await trio.sleep(3.0)
        await d.project.call(publish(1, ttl=60))
    assert answer["at"] == 3.0 and [e["data"] for e in answer["events"]] == [{"n": 1}]
    assert "timeout" not in answer


# -- expiry --


async def test_an_expired_event_is_never_given_again(nursery, autojump_clock):
    d = await start_domain(nursery)
    short = await d.project.call(publish(1, ttl=10))
    long = await d.project.call(publish(2, ttl=1000))
    assert await seen(d.project) == [int(short["cursor"]), int(long["cursor"])]
    d.clock.now += 10  # its ttl has passed (wall clock)
    assert await seen(d.project) == [int(long["cursor"])]  # waits
    sink = Sink()
    await d.project.call(Subscribe(sink, None, None, EventFilter.parse(None), 0))
    assert await sink.drain() == [int(long["cursor"])]  # replay
    assert d.project.inject_fault("crash")  # a restart loads only what has not expired
    await trio.testing.wait_all_tasks_blocked()
    assert d.backend.seen[LoadProject] == 2 and await seen(d.project) == [int(long["cursor"])]
    await trio.sleep(31.0)  # the store's periodic purge (every 30 s) deletes it for good
    assert d.backend.seen[PurgeExpired] >= 1
    assert [c for c, _ in d.backend.events_of("p1")] == [int(long["cursor"])]


# -- replay, then live --


async def test_a_filtered_replay_joins_live_without_gap_or_duplicate(nursery, autojump_clock):
    d = await start_domain(nursery)
    wanted: list[int] = []
    for n in range(12):
        reply = await d.project.call(publish(n, topic="a" if n % 3 else "b"))
        if n % 3:
            wanted.append(int(reply["cursor"]))
    sink = Sink(max_messages=4)  # replay takes at most 2 at a time
    await d.project.call(Subscribe(sink, None, frozenset({"a"}), EventFilter.parse(None), 0))
    got = await sink.drain()
    n = 12
    while sink.pull is not None:  # each pull, one event of each topic is published meanwhile
        for topic in "ab":
            reply = await d.project.call(publish(n, topic=topic))
            if topic == "a":
                wanted.append(int(reply["cursor"]))
            n += 1
        pull_ref, msg = sink.pull
        sink.pull = None
        await pull_ref.cast(msg)
        await d.project.call(ProjectStats())
        got += await sink.drain()
    live = await d.project.call(publish(n, topic="a"))  # live now: at once
    wanted.append(int(live["cursor"]))
    got += await sink.drain()
    assert got == wanted and len(set(got)) == len(got)
    assert sink.cut is None and not sink.outbox.overflowed


async def test_a_subscription_from_the_last_cursor_is_live_at_once(nursery, autojump_clock):
    d = await start_domain(nursery)
    last = await d.project.call(publish(0))
    sink = Sink(max_messages=2)
    reply = await d.project.call(Subscribe(sink, None, None, EventFilter.parse(None), int(last["cursor"])))
    assert reply["recovered"] is True and sink.pull is None and len(sink.outbox) == 0
    nxt = await d.project.call(publish(1))
    assert await sink.drain() == [int(nxt["cursor"])]
