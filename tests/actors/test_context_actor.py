"""The context actor's bookkeeping on MockClock(autojump_threshold=0): the answer cache,
single-flight builds, failed builds and clears. The engine's threaded work (cold index, sweeps,
builds) is stubbed out by a subclass, so no thread runs; the store is the real store actor
over the in-memory backend. The engine itself is tested in test_context.py.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import pytest
import trio
import trio.testing
from orchestra.actors.context_actor import (
    ClearContext,
    ContextActor,
    ContextGet,
    ContextStats,
    _Built,
    _Indexed,
    _Swept,
)
from orchestra.actors.errors import Overloaded
from orchestra.actors.profiles import Profiles
from orchestra.actors.runtime import ActorRef, ChildSpec, Supervisor
from orchestra.actors.store import AppendBatch, QueryResults, ResultRow
from orchestra.actors.store_memory import MemoryBackend

from tests.actors.conftest import store_spec


@dataclass
class Script:
    """What the stubbed builds do: tasks held until released, tasks that fail."""

    held: dict[str, trio.Event] = field(default_factory=dict)
    failing: set[str] = field(default_factory=set)
    built: list[str] = field(default_factory=list)

    def hold(self, task: str) -> trio.Event:
        self.held[task] = trio.Event()
        return self.held[task]


class ScriptedContext(ContextActor):
    """The real actor; its thread work replaced by the script (no thread, no watcher)."""

    script: Script

    async def _index_cold(self) -> None:
        await self.ref.cast(_Indexed())

    async def _watch(self) -> None:
        await trio.sleep_forever()

    async def _sweep(self, paths: set[str] | None) -> None:
        await self.ref.cast(_Swept(full=paths is None))

    async def _build(self, key: tuple[Any, ...], msg: ContextGet, rows: list[bytes],
                     signals: Any, agent_profile: dict[str, Any]) -> None:
        self.script.built.append(msg.task)
        if msg.task in self.script.held:
            await self.script.held[msg.task].wait()
        if msg.task in self.script.failing:
            await self.ref.cast(_Built(key, error=RuntimeError(f"build of {msg.task!r} failed")))
            return
        body = orjson.dumps({"task": msg.task, "results": len(rows), "cache_hit": False})
        await self.ref.cast(_Built(key, body=body))


@dataclass
class Rig:
    ref: ActorRef
    backend: MemoryBackend
    script: Script

    async def get(self, task: str = "fix the parser") -> dict[str, Any]:
        return orjson.loads(await self.ref.call(ContextGet("iss-1", "python-specialist", task, 100_000)))

    async def stats(self) -> dict[str, Any]:
        return await self.ref.call(ContextStats())


async def start_context(nursery: trio.Nursery, root: Path) -> Rig:
    backend, script = MemoryBackend(), Script()
    store, ref = ActorRef("store"), ActorRef("context:p1")

    def make() -> ContextActor:
        actor = ScriptedContext("p1", root, store, Profiles())
        actor.script = script
        return actor

    sup = Supervisor("root", [store_spec(backend, store), ChildSpec.actor("context:p1", ref, make)])
    await nursery.start(sup.run)
    return Rig(ref, backend, script)


async def test_identical_requests_during_a_build_share_it_and_later_ones_hit_the_cache(nursery, autojump_clock, tmp_path):
    rig = await start_context(nursery, tmp_path)
    release = rig.script.hold("fix the parser")
    answers: list[dict[str, Any]] = []

    async def ask() -> None:
        answers.append(await rig.get())

    async with trio.open_nursery() as callers:
        for _ in range(3):
            callers.start_soon(ask)
        await trio.testing.wait_all_tasks_blocked()
        assert (await rig.stats())["building"] == 1
        release.set()
    assert rig.script.built == ["fix the parser"]  # built once for the three
    assert answers == [{"task": "fix the parser", "results": 0, "cache_hit": False}] * 3
    assert (await rig.get())["cache_hit"] is True
    stats = await rig.stats()
    assert (stats["misses"], stats["hits"], stats["shared"], stats["entries"]) == (1, 3, 2, 1)


async def test_a_failed_build_fails_its_requests_only_and_is_not_cached(nursery, autojump_clock, tmp_path):
    rig = await start_context(nursery, tmp_path)
    rig.script.failing.add("broken")
    with pytest.raises(RuntimeError):
        await rig.get("broken")
    assert (await rig.get("fine"))["cache_hit"] is False  # the actor serves on
    rig.script.failing.clear()
    assert (await rig.get("broken"))["cache_hit"] is False  # built again, not a cached failure
    assert rig.script.built == ["broken", "fine", "broken"]
    assert rig.ref.incarnation == 1


async def test_a_clear_during_a_build_keeps_that_answer_out_of_the_cache(nursery, autojump_clock, tmp_path):
    rig = await start_context(nursery, tmp_path)
    release = rig.script.hold("fix the parser")
    async with trio.open_nursery() as callers:
        callers.start_soon(rig.get)
        await trio.testing.wait_all_tasks_blocked()
        assert (await rig.ref.call(ClearContext("iss-1")))["cleared"] is True
        release.set()
    assert (await rig.stats())["entries"] == 0
    del rig.script.held["fix the parser"]
    assert (await rig.get())["cache_hit"] is False and rig.script.built == ["fix the parser"] * 2


async def test_a_new_result_of_the_issue_makes_a_new_answer(nursery, autojump_clock, tmp_path):
    rig = await start_context(nursery, tmp_path)
    assert (await rig.get())["results"] == 0
    assert (await rig.get())["cache_hit"] is True
    rig.backend.apply([AppendBatch("p1", 0, (ResultRow(
        "r1", "p1", "iss-1", "python-specialist", "a1", "success", "2026-01-01T00:00:00Z", b"{}"),))], [])
    fresh = await rig.get()
    assert fresh == {"task": "fix the parser", "results": 1, "cache_hit": False}


async def test_a_store_that_cannot_answer_fails_that_request_and_keeps_the_cache(nursery, autojump_clock, tmp_path):
    rig = await start_context(nursery, tmp_path)
    await rig.get()
    rig.backend.fail_reads(QueryResults)
    with pytest.raises(Overloaded):
        await rig.get()
    assert (await rig.get())["cache_hit"] is True and rig.ref.incarnation == 1
