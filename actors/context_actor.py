"""The context actor: one per project; owns that project's index and answer cache.

The actor itself never waits on a thread or the store: reading the store, indexing, sweeps
and ranking run in helper tasks (the index's work on one worker thread at a time), which send
their outcome back as messages. So a cached answer never queues behind an uncached one, and
identical requests arriving together are computed once (single-flight: the later ones wait
for the first one's build). An answer is cached under the index generation and the ids of
the issue's stored results, so a changed file or a new result makes a new entry.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import anyio
import orjson
import trio

from .context.engine import DEFAULT_LIMITS, ContextEngine, ContextLimits
from .context.ranking import Signals
from .errors import store_unavailable
from .lru import LruCache
from .profiles import Profiles
from .runtime import DEFERRED, Actor, ActorError, ActorRef, Call
from .store import QueryResults, StoreError

__all__ = ["ContextActor", "ContextGet", "ClearContext", "ContextStats"]

log = logging.getLogger("orchestra")


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
class _Indexed:
    """The cold index is built."""


@dataclass(frozen=True, slots=True)
class _Swept:
    full: bool


@dataclass(frozen=True, slots=True)
class _FilesChanged:
    paths: frozenset[str]


@dataclass(frozen=True, slots=True)
class _Looked:
    """A request's issue results are read: serve it from the cache or build it."""
    call: Call
    generation: int
    rows: list[tuple[int, bytes]]


@dataclass(frozen=True, slots=True)
class _Built:
    key: tuple[Any, ...]
    body: bytes | None = None
    error: BaseException | None = None


class ContextActor(Actor):
    """See the module docstring.

    File changes are found by a file watcher (watchfiles: inotify and its kin) whose batches
    become scans of just those paths, plus a full stat sweep every ``full_sweep_interval``
    seconds as a safety net (or every ``sweep_interval`` if watching cannot start). Scans run
    on their own thread from a helper task, so requests never wait for one. With
    ``sweep_interval <= 0`` every request sweeps first instead (deterministic, for benches).
    """

    full_sweep_interval = 60.0
    #: the answer cache's bound in bytes (answers are up to 4 MiB each)
    cache_bytes = 64 << 20

    def __init__(self, project_id: str, root: Path, store: ActorRef, profiles: Profiles,
                 cache_size: int = 256, sweep_interval: float = 2.0,
                 withhold: tuple[str, ...] = (), limits: ContextLimits = DEFAULT_LIMITS) -> None:
        self.sweep_interval = sweep_interval
        #: the engine's bounds (docs/configuration.md: --context-listing-share, ...)
        self.limits = limits
        #: patterns of files whose content is never given out, beyond the defaults (secrets.py)
        self.withhold = withhold
        self.project_id = project_id
        self.root = root
        self.store = store
        self.profiles = profiles
        self.cache_size = cache_size
        self.limiter = trio.CapacityLimiter(1)

    async def on_start(self) -> None:
        self.engine = ContextEngine(self.root, withhold=self.withhold, limits=self.limits)
        #: answers as a cache hit reads them (``"cache_hit":true``), least recently used first,
        #: at most cache_size of them and cache_bytes in all
        self.cache: LruCache[tuple[Any, ...], bytes] = LruCache(
            self.cache_size, max_bytes=self.cache_bytes, size=len)
        self.inflight: dict[tuple[Any, ...], list[Call]] = {}
        self.stale: set[tuple[Any, ...]] = set()  # builds in flight whose issue was cleared
        self.waiting: list[Call] = []  # requests that came before the cold index was ready
        self.hits = 0  # answers not computed for their request: from the cache, or shared
        self.shared = 0  # ... of them, answers shared with an identical request in flight
        self.misses = 0  # answers computed
        self.sweeping = False
        self.indexing = False
        self.indexed = False
        self.watching = False
        self.watch_stop = anyio.Event()
        self.dirty: set[str] = set()
        self.next_sweep = trio.current_time() + max(self.sweep_interval, 0.0)

    def _interval(self) -> float:
        return self.full_sweep_interval if self.watching else self.sweep_interval

    async def _watch(self) -> None:
        """Feed file changes to the actor; on any failure, fall back to periodic sweeps."""
        import watchfiles

        prefix = str(self.engine.root) + os.sep  # resolved once, when the engine was made
        try:
            # The watcher's thread call does not see trio's cancellation: it returns when the
            # stop event is set (on_stop) or, at the latest, after rust_timeout (a crash).
            async for changes in watchfiles.awatch(self.engine.root, debounce=100, step=20, recursive=True,
                                                   watch_filter=None, yield_on_timeout=False,
                                                   stop_event=self.watch_stop, rust_timeout=500):
                paths = set()
                for _, path in changes:
                    if path.startswith(prefix):  # watchfiles reports absolute paths
                        paths.add(path[len(prefix):].replace(os.sep, "/"))
                if paths:
                    await self.ref.cast(_FilesChanged(frozenset(paths)))
        except Exception as exc:  # no inotify here (or out of watches): sweep instead
            log.warning("context %s: file watching stopped (%s); sweeping every %ss",
                        self.project_id, exc, self.sweep_interval)
        self.watching = False

    async def on_stop(self) -> None:
        self.watch_stop.set()
        self.engine.stop()  # a cold index being read ends now, not when the whole root is read

    def next_deadline(self) -> float:
        if self.sweep_interval <= 0 or self.sweeping or not self.indexed:
            return math.inf
        if self.dirty:
            return trio.current_time()
        return self.next_sweep

    async def on_timeout(self) -> None:
        self.sweeping = True
        paths, self.dirty = self.dirty, set()
        full = not paths or trio.current_time() >= self.next_sweep
        self.helpers.start_soon(self._sweep, None if full else paths)

    async def _sweep(self, paths: set[str] | None) -> None:
        """Find what changed (all files, or the watched ones) and apply it to the index. Only
        the stat snapshot and the apply hold the index's thread; reading files does not."""
        index = self.engine.index
        known = await trio.to_thread.run_sync(index.stat_snapshot, limiter=self.limiter)
        head = index.head
        if paths is None:
            changes = await trio.to_thread.run_sync(index.scanner.scan, known, head)
        else:
            changes = await trio.to_thread.run_sync(index.scanner.scan_paths, paths, known, head)
        await trio.to_thread.run_sync(index.apply, changes, limiter=self.limiter)
        await self.ref.cast(_Swept(full=paths is None))

    async def _index_cold(self) -> None:
        await trio.to_thread.run_sync(self.engine.refresh, limiter=self.limiter)
        await self.ref.cast(_Indexed())

    async def handle(self, msg: Any) -> Any:
        if isinstance(msg, ContextGet):
            call = self.defer()
            if not self.indexed:
                self.waiting.append(call)
                if not self.indexing:
                    self.indexing = True
                    if self.sweep_interval > 0:
                        self.watching = True  # watch before indexing: no change falls between
                        self.helpers.start_soon(self._watch)
                    self.helpers.start_soon(self._index_cold)
            else:
                self.helpers.start_soon(self._look, call)
            return DEFERRED
        if isinstance(msg, _Looked):
            self._serve(msg)
            return None
        if isinstance(msg, _Built):
            self._finish(msg)
            return None
        if isinstance(msg, ClearContext):
            self.stale.update(k for k in self.inflight if k[0] == msg.issue_id)
            keys = [k for k in self.cache if k[0] == msg.issue_id]
            for k in keys:
                self.cache.pop(k)
            return {"cleared": True, "entries_removed": len(keys)}
        if isinstance(msg, _Indexed):
            self.indexed, self.indexing = True, False
            self.next_sweep = trio.current_time() + max(self._interval(), 0.0)
            waiting, self.waiting = self.waiting, []
            for call in waiting:
                self.helpers.start_soon(self._look, call)
            return None
        if isinstance(msg, _Swept):
            self.sweeping = False
            if msg.full:
                self.next_sweep = trio.current_time() + self._interval()
            return None
        if isinstance(msg, _FilesChanged):
            self.dirty.update(msg.paths)
            return None
        if isinstance(msg, ContextStats):
            total = self.hits + self.misses
            return {"hits": self.hits, "shared": self.shared, "misses": self.misses,
                    "entries": len(self.cache), "bytes": self.cache.bytes,
                    "hit_rate": round(self.hits / total, 4) if total else None,
                    "indexed_files": len(self.engine.index.files), "building": len(self.inflight)}
        raise TypeError(f"unexpected message {msg!r}")

    async def _look(self, call: Call) -> None:
        """Read the issue's stored results (they are part of the answer and of its cache key)."""
        msg: ContextGet = call.msg
        if self.sweep_interval <= 0:  # deterministic mode: every request sees every change
            await trio.to_thread.run_sync(self.engine.refresh, limiter=self.limiter)
        try:
            rows = await self.store.call(
                QueryResults(project_id=self.project_id, issue_id=msg.issue_id, limit=20), timeout=30
            )
        except (StoreError, ActorError) as exc:  # fail this request, keep the warm index
            call.fail(store_unavailable(exc))
            return
        await self.ref.cast(_Looked(call, self.engine.index.generation, rows))

    def _serve(self, looked: _Looked) -> None:
        call, msg = looked.call, looked.call.msg
        key = (msg.issue_id, msg.agent_type, msg.task, msg.max_bytes, looked.generation,
               tuple(seq for seq, _ in looked.rows))
        cached = self.cache.get(key)
        if cached is not None:
            self.hits += 1
            call.reply(cached)  # the stored bytes themselves: no copy per hit
            return
        waiting = self.inflight.get(key)
        if waiting is not None:  # the same answer is being built: wait for it (not computed again)
            self.hits += 1
            self.shared += 1
            waiting.append(call)
            return
        self.misses += 1
        self.inflight[key] = [call]
        profile = self.profiles.get(msg.agent_type)
        prefer = "test" if "test" in msg.agent_type else "doc" if "doc" in msg.agent_type else None
        signals = Signals(globs=profile.context_globs, keywords=profile.context_keywords, prefer_kind=prefer)
        agent_profile = {
            "agent_type": msg.agent_type, "model": profile.model,
            "capabilities": list(profile.capabilities), "authority_level": profile.authority_level,
            "next_agents": list(profile.next_agents),
            "event_subscriptions": list(profile.event_subscriptions),
        }
        self.helpers.start_soon(self._build, key, msg,
                                [body for _, body in looked.rows], signals, agent_profile)

    async def _build(self, key: tuple[Any, ...], msg: ContextGet, rows: list[bytes],
                     signals: Signals, agent_profile: dict[str, Any]) -> None:
        def build() -> bytes:
            previous = [orjson.loads(body) for body in rows]
            return orjson.dumps(self.engine.build(msg.issue_id, msg.agent_type, msg.task, msg.max_bytes,
                                                  previous, signals, agent_profile))
        try:
            body = await trio.to_thread.run_sync(build, limiter=self.limiter)
        except Exception as exc:  # this answer failed; the index and every other answer stay
            await self.ref.cast(_Built(key, error=exc))
        else:
            await self.ref.cast(_Built(key, body=body))

    def _finish(self, built: _Built) -> None:
        calls = self.inflight.pop(key := built.key, [])
        stale = key in self.stale  # cleared while it was built: answer, but do not keep
        self.stale.discard(key)
        if built.body is None:
            for call in calls:
                call.fail(built.error or RuntimeError("no answer"))
            return
        if not stale:
            hit = built.body.replace(b'"cache_hit":false', b'"cache_hit":true ', 1)
            self.cache.put(key, hit)
        for call in calls:
            call.reply(built.body)
