"""Shared fixtures of the domain tests: the real actors over the real store actor running an
in-memory backend, under real supervisors, on ``MockClock(autojump_threshold=0)``.

``StoreActor(MemoryBackend())`` runs its backend inline (no thread), so time moves only when
every task is blocked on a timer: no sockets, no sleeps, no threads. The backend object
outlives restarts of the store actor (what was committed is still there) and carries the
fault hooks that crash or fail the store at chosen points.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import trio
import trio.testing
from orchestra.actors.broker import BrokerActor
from orchestra.actors.profiles import Profiles
from orchestra.actors.project import ProjectActor, ProjectConfig
from orchestra.actors.runtime import Actor, ActorRef, ChildSpec, Outbox, Supervisor
from orchestra.actors.store import StoreActor
from orchestra.actors.store_memory import MemoryBackend


async def stall(ref: ActorRef, ms: float = 100) -> None:
    """The actor stalls ``ms`` ms from now (mock time, or real): what is sent meanwhile
    queues up and reaches it as one batch."""
    assert ref.inject_fault("delay", ms)
    await trio.testing.wait_all_tasks_blocked()  # it took the fault: nothing else with it


async def batch_outcomes(ref: ActorRef, msgs: dict[str, Any], *, stall_ms: float = 100,
                         names: bool = False) -> dict[str, Any]:
    """Send ``msgs`` behind a stall of the actor, so they reach it as one batch; each reply,
    or the exception it raised (its class name with ``names``)."""
    out: dict[str, Any] = {}

    async def one(name: str, msg: Any) -> None:
        try:
            out[name] = await ref.call(msg)
        except Exception as exc:
            out[name] = type(exc).__name__ if names else exc

    await stall(ref, stall_ms)
    async with trio.open_nursery() as callers:
        for name, msg in msgs.items():
            callers.start_soon(one, name, msg)
    return out


def read_one(backend: Any, request: Any) -> Any:
    """What a backend answers to one read ``request`` (applied alone); its failure raised."""
    _, (outcome,) = backend.apply([], [request])
    if isinstance(outcome, Exception):
        raise outcome
    return outcome


class WallClock:
    """A settable wall clock (``time.time`` for the actors that stamp records)."""

    def __init__(self, now: float = 1_800_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def store_spec(backend: MemoryBackend, ref: ActorRef, **kwargs: Any) -> ChildSpec:
    """The store actor over ``backend``: every restart runs a fresh actor on the same data."""
    return ChildSpec.actor("store", ref, lambda: StoreActor(backend, **kwargs))


class Sink:
    """A session's outbox as the project sees it."""

    def __init__(self, key: str = "agent-1#1", max_messages: int = 1000) -> None:
        self.session_key = key
        self.agent_id = key.split("#")[0]
        self.outbox = Outbox(max_messages, 1 << 30)
        self.answers: list[dict[str, Any]] = []
        self.pull: tuple[ActorRef, Any] | None = None
        self.cut: str | None = None
        self.started_from: str | None = None

    def subscribed(self, reply_id: Any, reply: dict[str, Any]) -> None:
        self.answers.append(reply)

    def deliver(self, sid: str, cursor: str, event: bytes) -> bool:
        return self.outbox.offer(event, (sid, cursor))

    def begin(self, sid: str, cursor: str) -> None:
        self.started_from = cursor

    def replay(self, sid: str, cursor: str, event: bytes) -> bool:
        if len(self.outbox) >= max(1, self.outbox.max_messages // 2):
            return False
        return self.outbox.offer(event, (sid, cursor))

    def want_more(self, ref: ActorRef, msg: Any) -> None:
        self.pull = (ref, msg)

    def behind(self, sid: str) -> None:
        self.cut = sid

    async def drain(self) -> list[int]:
        """Take everything queued; the cursors taken."""
        return [int(tag[1]) for _, tag in await self.outbox.get_batch(10_000)]


@dataclass
class Domain:
    """A root supervisor holding the store actor and one project actor (``p1``)."""

    backend: MemoryBackend
    store: ActorRef
    project: ActorRef
    sup: Supervisor
    clock: WallClock


async def start_domain(
    nursery: trio.Nursery,
    config: ProjectConfig | None = None,
    *,
    backend: MemoryBackend | None = None,
    clock: WallClock | None = None,
    mailbox_size: int = 256,
    max_restarts: int = 100,
    purge_interval: float = 30.0,
) -> Domain:
    backend = backend if backend is not None else MemoryBackend()
    clock = clock or WallClock()
    store = ActorRef("store", mailbox_size)
    project = ActorRef("project:p1", mailbox_size)
    cfg = config or ProjectConfig()
    sup = Supervisor("root", [
        store_spec(backend, store, purge_interval=purge_interval, wall_clock=clock),
        ChildSpec.actor("project:p1", project,
                        lambda: ProjectActor("p1", store, Profiles(), cfg, wall_clock=clock)),
    ], max_restarts=max_restarts)
    await nursery.start(sup.run)
    return Domain(backend, store, project, sup, clock)


@dataclass
class BrokerDomain:
    """The store, the dynamic projects supervisor and the broker, as the server's tree has them."""

    backend: MemoryBackend
    store: ActorRef
    broker: ActorRef
    projects: Supervisor
    root: Supervisor
    clock: WallClock


async def start_broker(
    nursery: trio.Nursery,
    *,
    backend: MemoryBackend | None = None,
    make_project: Callable[[str, ActorRef, WallClock], Actor] | None = None,
    config: ProjectConfig | None = None,
    max_restarts: int = 3,
    **broker_kwargs: Any,
) -> BrokerDomain:
    backend = backend if backend is not None else MemoryBackend()
    clock = WallClock()
    store, broker = ActorRef("store"), ActorRef("broker")
    projects = Supervisor("projects", max_restarts=max_restarts, period=60)
    cfg = config or ProjectConfig()

    def make(pid: str) -> Actor:
        if make_project is not None:
            return make_project(pid, store, clock)
        return ProjectActor(pid, store, Profiles(), cfg, wall_clock=clock)

    root = Supervisor("root", [
        store_spec(backend, store, wall_clock=clock),
        ChildSpec("projects", lambda: projects),
        ChildSpec.actor("broker", broker, lambda: BrokerActor(projects, make, **broker_kwargs)),
    ], max_restarts=max_restarts, period=60)
    await nursery.start(root.run)
    return BrokerDomain(backend, store, broker, projects, root, clock)


def write_files(root: Path, files: dict[str, str]) -> Path:
    """Write each ``path: text`` of ``files`` under ``root`` (folders made); returns ``root``."""
    for rel, text in files.items():
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
    return root
