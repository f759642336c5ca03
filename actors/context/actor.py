"""The context actor: one per project; owns that project's index and answer cache.

Indexing, sweeps and ranking run in a worker thread, so the event loop never stalls. Identical
requests arriving together are computed once (the actor serves them one at a time and the
second finds the first's answer cached). An answer is cached under the index generation and the
ids of the issue's stored results, so a changed file or a new result makes a new entry.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import trio

from ..errors import Overloaded
from ..profiles import Profiles
from ..runtime import Actor, ActorError, ActorRef
from ..store import QueryResults, StoreError
from .engine import ContextEngine
from .index import ChangeSet
from .ranking import Signals

__all__ = ["ContextActor", "ContextGet", "ClearContext", "ContextStats"]


@dataclass(frozen=True, slots=True)
class ContextGet:
    issue_id: str
    agent_type: str
    task: str
    max_bytes: int


@dataclass(frozen=True, slots=True)
class ClearContext:
    issue_id: str


@dataclass(frozen=True, slots=True)
class ContextStats:
    pass


@dataclass(frozen=True, slots=True)
class _ApplyChanges:
    changes: ChangeSet


class ContextActor(Actor):
    """See the module docstring. File changes are found by a background sweep every
    ``sweep_interval`` seconds (a helper task scanning on its own thread), so requests never
    wait for one; with ``sweep_interval <= 0`` every request sweeps first (deterministic)."""

    def __init__(self, project_id: str, root: Path, store: ActorRef, profiles: Profiles,
                 cache_size: int = 256, sweep_interval: float = 2.0) -> None:
        self.sweep_interval = sweep_interval
        self.project_id = project_id
        self.root = root
        self.store = store
        self.profiles = profiles
        self.cache_size = cache_size
        self.limiter = trio.CapacityLimiter(1)

    async def on_start(self) -> None:
        self.engine = ContextEngine(self.root, sweep_interval=self.sweep_interval)
        self.cache: OrderedDict[tuple[Any, ...], bytes] = OrderedDict()
        self.hits = 0
        self.misses = 0
        self.sweeping = False
        self.indexed = False
        self.next_sweep = trio.current_time() + max(self.sweep_interval, 0.0)

    def next_deadline(self) -> float:
        if self.sweep_interval <= 0 or self.sweeping or not self.indexed:
            return math.inf
        return self.next_sweep

    async def on_timeout(self) -> None:
        self.sweeping = True
        index = self.engine.index
        known = await trio.to_thread.run_sync(index.stat_snapshot, limiter=self.limiter)
        self.helpers.start_soon(self._scan, known, index.head)

    async def _scan(self, known: dict[str, tuple[float, int]], head: str | None) -> None:
        changes = await trio.to_thread.run_sync(self.engine.index.scan, known, head)
        await self.ref.cast(_ApplyChanges(changes))

    async def handle(self, msg: Any) -> Any:
        if isinstance(msg, ContextGet):
            return await self._get(msg)
        if isinstance(msg, ClearContext):
            keys = [k for k in self.cache if k[0] == msg.issue_id]
            for k in keys:
                del self.cache[k]
            return {"cleared": True, "entries_removed": len(keys)}
        if isinstance(msg, _ApplyChanges):
            await trio.to_thread.run_sync(self.engine.index.apply, msg.changes, limiter=self.limiter)
            self.sweeping = False
            self.next_sweep = trio.current_time() + self.sweep_interval
            return None
        if isinstance(msg, ContextStats):
            total = self.hits + self.misses
            return {"hits": self.hits, "misses": self.misses, "entries": len(self.cache),
                    "hit_rate": round(self.hits / total, 4) if total else None,
                    "indexed_files": len(self.engine.index.files)}
        raise TypeError(f"unexpected message {msg!r}")

    async def _get(self, msg: ContextGet) -> bytes:
        if self.sweep_interval <= 0 or not self.indexed:
            await trio.to_thread.run_sync(self.engine.refresh, True, limiter=self.limiter)
            self.indexed = True
            self.next_sweep = trio.current_time() + max(self.sweep_interval, 0.0)
        generation = self.engine.index.generation
        try:
            rows = await self.store.call(
                QueryResults(project_id=self.project_id, issue_id=msg.issue_id, limit=20), timeout=30
            )
        except (StoreError, ActorError) as exc:  # fail this request, keep the warm index
            raise Overloaded(f"the store could not answer: {exc}", retry_after=1.0) from None
        key = (msg.issue_id, msg.agent_type, msg.task, msg.max_bytes, generation,
               tuple(seq for seq, _ in rows))
        cached = self.cache.get(key)
        if cached is not None:
            self.hits += 1
            self.cache.move_to_end(key)
            return cached.replace(b'"cache_hit":false', b'"cache_hit":true ', 1)
        self.misses += 1
        previous = [orjson.loads(body) for _, body in rows]
        profile = self.profiles.get(msg.agent_type)
        prefer = "test" if "test" in msg.agent_type else "doc" if "doc" in msg.agent_type else None
        signals = Signals(globs=profile.context_globs, keywords=profile.context_keywords, prefer_kind=prefer)
        agent_profile = {
            "agent_type": msg.agent_type, "model": profile.model,
            "capabilities": list(profile.capabilities), "authority_level": profile.authority_level,
            "next_agents": list(profile.next_agents),
            "event_subscriptions": list(profile.event_subscriptions),
        }
        body = await trio.to_thread.run_sync(
            self.engine.build, msg.issue_id, msg.agent_type, msg.task, msg.max_bytes, previous,
            signals, agent_profile, limiter=self.limiter,
        )
        encoded = orjson.dumps(body)
        self.cache[key] = encoded
        if len(self.cache) > self.cache_size:
            self.cache.popitem(last=False)
        return encoded
