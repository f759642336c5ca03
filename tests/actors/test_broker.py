"""The broker on MockClock(autojump_threshold=0), with real project actors over the real
store actor and the in-memory backend: starts, failed starts, and '*' subscriptions.
"""

from __future__ import annotations

from typing import Any

import pytest
import trio
import trio.testing
from orchestra.actors.broker import BrokerStats, EnsureProject, ProjectUnavailable, SubscribeAll
from orchestra.actors.events import EventFilter
from orchestra.actors.project import ProjectStats, Publish
from orchestra.actors.runtime import Actor, ActorRef
from orchestra.actors.store import AppendBatch, EventRow, LoadProject
from orchestra.actors.store_memory import MemoryBackend

from tests.actors.conftest import Sink, WallClock, start_broker


class GlobalSink(Sink):
    """A session holding '*' subscriptions: records each attachment."""

    def __init__(self, key: str = "admin#1", max_messages: int = 1000) -> None:
        super().__init__(key, max_messages)
        self.attachments: list[tuple[str, str]] = []

    def attached(self, project_id: str, sid: str, ref: ActorRef) -> None:
        self.attachments.append((project_id, sid))


def publish(n: int) -> Publish:
    return Publish("build", {"topic": "t", "data": {"n": n}, "ttl_seconds": 3600}, "agent-1", None)


def everything(sink: GlobalSink, since: Any = None) -> SubscribeAll:
    return SubscribeAll(sink, None, None, EventFilter.parse(None), since)


async def test_concurrent_first_requests_start_the_project_once(nursery, autojump_clock):
    d = await start_broker(nursery)
    refs: list[ActorRef] = []

    async def ensure() -> None:
        refs.append(await d.broker.call(EnsureProject("p1")))

    async with trio.open_nursery() as callers:
        for _ in range(20):
            callers.start_soon(ensure)
    assert len(refs) == 20 and all(r is refs[0] for r in refs)
    assert (await d.broker.call(BrokerStats()))["started"] == 1
    assert d.backend.seen[LoadProject] == 1 and len(d.projects) == 1 and refs[0].incarnation == 1


async def test_a_start_that_fails_is_answered_to_each_request_and_the_next_one_retries(nursery, autojump_clock):
    d = await start_broker(nursery)
    d.backend.crash(LoadProject)  # the store itself dies while loading the project
    failed: list[Exception] = []

    async def ensure() -> None:
        try:
            await d.broker.call(EnsureProject("p1"))
        except ProjectUnavailable as exc:
            failed.append(exc)

    async with trio.open_nursery() as callers:
        for _ in range(3):
            callers.start_soon(ensure)
    # the first start failed (ActorCrashed from the store); the others started it again
    assert len(failed) == 1 and failed[0].details["retry_after_seconds"] == 1.0
    stats = await d.broker.call(BrokerStats())
    assert stats == {"started": 1, "contexts_started": 0, "failed_starts": 1, "global_subscriptions": 0}
    assert d.store.incarnation == 2 and d.broker.incarnation == 1
    ref = await d.broker.call(EnsureProject("p1"))
    assert (await ref.call(publish(1)))["published"] is True


async def test_a_project_that_raises_at_start_is_unavailable_and_other_projects_start(nursery, autojump_clock):
    class Broken(Actor):
        async def on_start(self) -> None:
            raise KeyError("a bug in the project's start")

    def make(pid: str, store: ActorRef, clock: WallClock) -> Actor:
        from orchestra.actors.profiles import Profiles
        from orchestra.actors.project import ProjectActor

        return Broken() if pid == "bad" else ProjectActor(pid, store, Profiles(), wall_clock=clock)

    d = await start_broker(nursery, make_project=make)
    for _ in range(10):  # past every restart intensity of the tree (3 in 60 s)
        with pytest.raises(ProjectUnavailable):
            await d.broker.call(EnsureProject("bad"))
    good = await d.broker.call(EnsureProject("good"))
    assert (await good.call(publish(1)))["published"] is True
    assert d.root.total_restarts() == 0 and d.broker.incarnation == 1
    assert (await d.broker.call(BrokerStats()))["failed_starts"] == 10


async def test_a_star_subscription_is_attached_to_a_project_started_later_from_its_beginning(nursery, autojump_clock):
    backend = MemoryBackend()
    # p2 published before this process: two events in the store, not yet loaded by any actor
    backend.open()
    body = b'{"cursor":"%020d","event_type":"build","topic":"t","expires_at":"2100-01-01T00:00:00Z"}'
    backend.apply([AppendBatch("p2", 2, (), tuple(
        EventRow("p2", c, "build", 4.1e9, body % c) for c in (1, 2)))], [])
    d = await start_broker(nursery, backend=backend)
    p1 = await d.broker.call(EnsureProject("p1"))
    sink = GlobalSink()
    reply = await d.broker.call(everything(sink))
    assert [s["project_id"] for s in reply["subscriptions"]] == ["p1"]
    p2 = await d.broker.call(EnsureProject("p2"))  # started after the '*' subscription
    assert [p for p, _ in sink.attachments] == ["p1", "p2"]
    assert await sink.drain() == [1, 2]  # p2's stored events, replayed: none missed
    live1 = await p1.call(publish(1))
    live2 = await p2.call(publish(2))
    assert await sink.drain() == [int(live1["cursor"]), int(live2["cursor"])]
    assert (await p2.call(ProjectStats()))["subscriptions"] == 1


async def test_a_star_subscription_to_a_project_that_cannot_start_attaches_when_it_does(nursery, autojump_clock):
    d = await start_broker(nursery)
    sink = GlobalSink()
    await d.broker.call(everything(sink))
    d.backend.fail_reads(LoadProject)
    with pytest.raises(ProjectUnavailable):
        await d.broker.call(EnsureProject("p1"))
    assert sink.attachments == []
    ref = await d.broker.call(EnsureProject("p1"))
    assert [p for p, _ in sink.attachments] == ["p1"]
    live = await ref.call(publish(1))
    assert await sink.drain() == [int(live["cursor"])]
