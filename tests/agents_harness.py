"""A store and the agents' subtree on a tmp data dir, with hooks that record what they are
asked (events published, contexts written): the smallest real thing for spawned agents."""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
import trio
from orchestra.actors.agents import AgentHooks, AgentsConfig, AgentSpec, AgentSupervisor, Spawn
from orchestra.actors.profiles import BUILTIN, AgentProfile, Profiles
from orchestra.actors.runtime import ActorRef, ChildSpec, Supervisor
from orchestra.actors.store import SQLiteBackend, StoreActor

PY = sys.executable


def script(code: str, **kw: Any) -> AgentProfile:
    """A profile ``worker`` whose command runs ``code`` with this Python."""
    return AgentProfile(agent_type=kw.pop("agent_type", "worker"), command=(PY, "-c", code), **kw)


def profiles(*extra: AgentProfile) -> Profiles:
    return Profiles(by_type={**BUILTIN, **{p.agent_type: p for p in extra}})


class AgentsHarness:
    def __init__(self, sup: AgentSupervisor, events: list[tuple[str, str, dict[str, Any]]], data_dir: Path) -> None:
        self.sup = sup
        self.events = events
        self.data_dir = data_dir

    async def spawn(self, agent_type: str = "worker", project: str = "p1", issue: str = "iss-1", **kw: Any) -> dict[str, Any]:
        return await self.sup.spawn(Spawn(project, agent_type, issue, **kw))

    async def until(self, agent_id: str, predicate: Callable[[dict[str, Any]], bool],
                    project: str = "p1", timeout: float = 10.0) -> dict[str, Any]:
        """The agent's record once ``predicate`` holds (polled every 20 ms)."""
        with trio.fail_after(timeout):
            while True:
                record = await self.sup.status(project, agent_id)
                if predicate(record):
                    return record
                await trio.sleep(0.02)

    async def log_until(self, agent_id: str, needle: str, project: str = "p1", timeout: float = 10.0) -> list[str]:
        with trio.fail_after(timeout):
            while True:
                lines = (await self.sup.logs(project, agent_id, tail=1000))["lines"]
                if any(needle in line for line in lines):
                    return lines
                await trio.sleep(0.02)

    def event_types(self, agent_id: str) -> list[str]:
        return [t for _, t, d in self.events if d.get("agent_id") == agent_id]


@asynccontextmanager
async def running_agents(data_dir: Path, profile_set: Profiles, root: Path | None = None,
                         **config: Any) -> AsyncIterator[AgentsHarness]:
    """Runs a store (real SQLite under ``data_dir``) and the agents' subtree; leaving the block
    shuts them down as the server does."""
    store = ActorRef("store")
    events: list[tuple[str, str, dict[str, Any]]] = []

    async def publish(project_id: str, event_type: str, data: dict[str, Any], traceparent: str | None) -> None:
        events.append((project_id, event_type, data))

    async def write_context(spec: AgentSpec, path: Path) -> None:
        body = orjson.dumps({"issue_id": spec.issue_id, "agent_type": spec.agent_type})
        await trio.Path(path).write_bytes(body)

    hooks = AgentHooks(url=lambda: "http://127.0.0.1:9", mint_token=lambda s: f"tok-{s.agent_id}",
                       write_context=write_context, publish=publish)
    workdir = root or data_dir
    cfg = AgentsConfig(data_dir=data_dir, root_of=lambda _p: workdir, **config)
    sup = AgentSupervisor(cfg, profile_set, store, hooks)
    tree = Supervisor("root", [
        ChildSpec.actor("store", store, lambda: StoreActor(SQLiteBackend(data_dir / "orchestra.db"))),
        ChildSpec("agents", lambda: sup.tree),
    ])
    async with trio.open_nursery() as nursery:
        await nursery.start(tree.run)
        try:
            yield AgentsHarness(sup, events, data_dir)
        finally:
            nursery.cancel_scope.cancel()


@asynccontextmanager
async def agents_over_a_system(
    data_dir: Path, kinds: Profiles, roots: dict[str, Path],
    wrap: Callable[[AgentHooks], AgentHooks] = lambda hooks: hooks,
) -> AsyncIterator[tuple[Any, AgentSupervisor]]:
    """The production hooks (``server_hooks``: contexts and events through the projects'
    actors) over a real ``ActorSystem``, and the agents' supervisor on them, both running:
    yields (system, supervisor); leaving the block stops the agents, then the system.
    ``wrap`` may replace hooks (e.g. to inject failures)."""
    from orchestra.actors.agents import server_hooks
    from orchestra.actors.system import ActorSystem, SystemConfig

    system = ActorSystem(SystemConfig(data_dir=data_dir, profiles=kinds, roots=roots))
    hooks = wrap(server_hooks(url=lambda: "http://127.0.0.1:9", mint_token=lambda s: "tok",
                              project=system.project, context=system.context))
    sup = AgentSupervisor(AgentsConfig(data_dir=data_dir, root_of=system.root_of), kinds, system.store, hooks)
    async with trio.open_nursery() as outer:
        await outer.start(system.run)
        async with trio.open_nursery() as inner:
            await inner.start(sup.run)
            yield system, sup
            inner.cancel_scope.cancel()
        outer.cancel_scope.cancel()


def alive(pid: int) -> bool:
    """True while ``pid`` is a live (not zombie) process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return False
    return raw[raw.rindex(b")") + 2:][:1] != b"Z"


async def gone(*pids: int, timeout: float = 5.0) -> None:
    """Returns once none of ``pids`` is alive; fails after ``timeout`` seconds."""
    with trio.fail_after(timeout):
        while True:
            if not any(alive(p) for p in pids):
                return
            await trio.sleep(0.02)

