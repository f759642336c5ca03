"""The project actor and the broker on MockClock(autojump_threshold=0), over the real store
actor running the in-memory backend (tests/actors/conftest.py).

No sockets, no sleeps, no threads: a fake sink stands for a session's outbox.
"""

from __future__ import annotations

from typing import Any

import orjson
import pytest
import trio
import trio.testing
from orchestra.actors.broker import BrokerActor, EnsureProject
from orchestra.actors.errors import Overloaded
from orchestra.actors.events import EventFilter
from orchestra.actors.project import (
    ProjectConfig,
    ProjectStats,
    Publish,
    Subscribe,
)
from orchestra.actors.runtime import ActorRef, ChildSpec, Supervisor
from orchestra.actors.store import LoadProject
from orchestra.actors.store_memory import MemoryBackend

from tests.actors.conftest import Sink, batch_outcomes, start_broker, start_domain


def publish(topic: str = "t", **data: Any) -> Publish:
    return Publish("build", {"topic": topic, "data": data, "ttl_seconds": 3600}, "agent-1", None)


def subscribe(sink: Sink, since: int | None = None) -> Subscribe:
    return Subscribe(sink, None, None, EventFilter.parse(None), since)


async def start_project(
    nursery: trio.Nursery, config: ProjectConfig | None = None, store: MemoryBackend | None = None,
) -> tuple[ActorRef, Supervisor, MemoryBackend]:
    d = await start_domain(nursery, config, backend=store)
    return d.project, d.sup, d.backend


# -- 1. one request's content fails only that request --


async def test_a_subscription_past_the_limit_fails_alone(autojump_clock):
    async with trio.open_nursery() as nursery:
        ref, sup, _ = await start_project(nursery, ProjectConfig(max_subscriptions=1))
        first = Sink("a#1")
        await ref.call(subscribe(first))
        with pytest.raises(Overloaded):
            await ref.call(subscribe(Sink("b#2")))
        # the actor kept its state: the first subscriber still gets events
        await ref.call(publish())
        assert len(first.outbox) == 1
        stats = await ref.call(ProjectStats())
        assert stats["subscriptions"] == 1
        assert sup.total_restarts() == 0
        nursery.cancel_scope.cancel()


async def test_a_failing_message_in_a_batch_leaves_the_others_answered(autojump_clock):
    async with trio.open_nursery() as nursery:
        ref, sup, _ = await start_project(nursery, ProjectConfig(max_subscriptions=1))
        await ref.call(subscribe(Sink("a#1")))
        # queued together: one batch holds a subscribe past the limit and a publish
        with trio.fail_after(60):
            outcomes = await batch_outcomes(ref, {"sub": subscribe(Sink("b#2")), "pub": publish()})
        assert isinstance(outcomes["sub"], Overloaded)
        assert outcomes["pub"]["published"] is True
        assert sup.total_restarts() == 0
        nursery.cancel_scope.cancel()


# -- 2. a project that fails to start fails its request, not the broker --


async def test_a_project_that_cannot_load_answers_unavailable_and_the_broker_lives(autojump_clock):
    store = MemoryBackend()
    store.fail_reads(LoadProject, times=None)
    async with trio.open_nursery() as nursery:
        d = await start_broker(nursery, backend=store)
        root, projects, broker_ref = d.root, d.projects, d.broker
        for _ in range(10):  # past every restart intensity in the tree
            with pytest.raises(Overloaded):
                await broker_ref.call(EnsureProject("p1"))
        assert root.total_restarts() == 0
        assert broker_ref.alive
        assert len(projects) == 0
        store.disarm()  # the store recovered: the project starts
        ref = await broker_ref.call(EnsureProject("p1"))
        assert (await ref.call(publish()))["published"] is True
        nursery.cancel_scope.cancel()


# -- 3. a wait's position moves only when its answer was delivered --


async def test_a_wait_position_moves_only_on_confirmation(autojump_clock):
    from orchestra.actors.project import Wait, WaitAnswer

    def wait() -> Wait:
        return Wait("w", "build", EventFilter.parse(None), None, 10, 0.0)

    async with trio.open_nursery() as nursery:
        ref, _, store = await start_project(nursery)
        await ref.call(publish(n=1))
        first = await ref.call(wait())
        assert isinstance(first, WaitAnswer) and first.confirm is not None
        # not confirmed (the answer was lost): the same event is given again
        again = await ref.call(wait())
        assert [e["data"] for e in orjson.loads(again.reply)["events"]] == [{"n": 1}]
        await ref.cast(again.confirm)
        after = await ref.call(wait())
        assert orjson.loads(after.reply)["events"] == [] and after.confirm is None
        await trio.testing.wait_all_tasks_blocked()  # the store took the position's cast
        assert store.wait_cursors_of("p1") == {("w", "build\x00"): 1}
        # an old confirmation arriving late never moves the position back
        await ref.cast(first.confirm)
        await ref.call(publish(n=2))
        assert [e["data"] for e in orjson.loads((await ref.call(wait())).reply)["events"]] == [{"n": 2}]
        nursery.cancel_scope.cancel()


# -- 4. replay at the consumer's pace; live in the step that reaches the end of the log --


async def test_replay_follows_the_consumer_and_joins_live_without_gap_or_duplicate(autojump_clock):
    async with trio.open_nursery() as nursery:
        ref, _, _ = await start_project(nursery)
        for i in range(10):
            await ref.call(publish(n=i))
        sink = Sink(max_messages=4)  # replay takes at most 2 at a time
        await ref.call(subscribe(sink, since=0))
        assert sink.started_from == "0" * 20
        seen = await sink.drain()
        assert seen == [1, 2]
        await ref.call(publish(n=10))  # live while catching up: comes from the log, in order
        while sink.pull is not None:
            pull_ref, msg = sink.pull
            sink.pull = None
            await pull_ref.cast(msg)
            await ref.call(ProjectStats())  # the pull was served
            seen += await sink.drain() if len(sink.outbox) else []
        await ref.call(publish(n=11))  # live now: delivered at once
        seen += await sink.drain()
        assert seen == list(range(1, 13))
        assert sink.cut is None and not sink.outbox.overflowed
        nursery.cancel_scope.cancel()


async def test_a_replay_overtaken_by_trimming_is_cut_never_silently_gapped(autojump_clock):
    async with trio.open_nursery() as nursery:
        ref, _, _ = await start_project(nursery, ProjectConfig(max_events=5))
        for i in range(5):
            await ref.call(publish(n=i))
        sink = Sink(max_messages=2)
        reply = await ref.call(subscribe(sink, since=0))
        assert reply["recovered"] is True
        assert await sink.drain() == [1]
        for i in range(5):  # trims past where the replay stands
            await ref.call(publish(n=i))
        pull_ref, msg = sink.pull
        await pull_ref.cast(msg)
        assert (await ref.call(ProjectStats()))["subscriptions"] == 0
        assert sink.cut == reply["subscription"]
        nursery.cancel_scope.cancel()


# -- 6. retention bounded in bytes, at run time and at load --


async def test_retention_is_bounded_in_bytes_also_when_loading(autojump_clock):
    store = MemoryBackend()
    async with trio.open_nursery() as nursery:
        ref, _, _ = await start_project(nursery, ProjectConfig(max_event_bytes=1 << 30), store)
        for i in range(10):
            await ref.call(publish(n=i, pad="x" * 1000))
        one = len(store.events_of("p1")[0][1])
        nursery.cancel_scope.cancel()
    # the same store, a smaller byte bound: the load keeps the newest 3, the store follows
    async with trio.open_nursery() as nursery:
        ref, _, _ = await start_project(nursery, ProjectConfig(max_event_bytes=3 * one + 10), store)
        stats = await ref.call(ProjectStats())
        assert stats["retained_events"] == 3 and stats["retained_bytes"] <= 3 * one + 10
        sink = Sink()
        reply = await ref.call(subscribe(sink, since=0))
        assert reply["recovered"] is False  # 1..7 are gone: said, not silently skipped
        assert await sink.drain() == [8, 9, 10]
        await ref.call(publish(n=10, pad="x" * 1000))
        assert [c for c, _ in store.events_of("p1")] == [9, 10, 11]
        nursery.cancel_scope.cancel()


async def test_star_subscriptions_are_bounded(autojump_clock):
    from orchestra.actors.broker import SubscribeAll

    class GlobalSink(Sink):
        def attached(self, project_id: str, sid: str, ref: ActorRef) -> None:
            pass

    broker_ref = ActorRef("broker")
    projects = Supervisor("projects")
    root = Supervisor("root", [
        ChildSpec("projects", lambda: projects),
        ChildSpec.actor("broker", broker_ref, lambda: BrokerActor(projects, lambda pid: None, max_globals=2)),
    ])
    async with trio.open_nursery() as nursery:
        await nursery.start(root.run)
        for _ in range(2):
            await broker_ref.call(SubscribeAll(GlobalSink(), None, None, EventFilter.parse(None)))
        with pytest.raises(Overloaded):
            await broker_ref.call(SubscribeAll(GlobalSink(), None, None, EventFilter.parse(None)))
        assert broker_ref.alive
        nursery.cancel_scope.cancel()
