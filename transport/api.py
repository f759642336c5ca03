"""The one entry point of operations, for both transports: authentication, permissions, rate
limits and metrics happen here once; the handler then sees only an
:class:`~orchestra.transport.ops.OpContext`. Also the /status and /metrics figures, which come
from the actors.
"""

from __future__ import annotations

import collections
import itertools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import prometheus_client as prom

from .. import __version__
from ..actors.agents import AgentHooks, AgentSpec, server_hooks
from ..actors.principal import ALL_PROJECTS, Principal
from ..actors.records import MAX_JSON_DEPTH
from ..actors.runtime import ActorError, ActorRef
from ..actors.store import QueryResults, StoreError
from ..actors.system import ActorSystem
from .auth import Auth
from .errors import ApiError, from_exception, shutting_down
from .ops import OPS
from .ratelimit import RateLimiter, ceil_seconds
from .services import Ctx, OpContext, OpLimits, Reply, Services

__all__ = ["Api", "ApiConfig", "VERSION"]

VERSION = __version__  # said once, in the package face (orchestra/__init__.py)


@dataclass(frozen=True)
class ApiConfig:
    rate_limits: bool = True
    fault_injection: bool = False
    max_body_bytes: int = 10 * 1024 * 1024
    wait_max_ms: int = 300_000
    wait_default_ms: int = 30_000
    call_timeout: float = 30.0
    #: JSON nesting of a WebSocket frame, the frame object counting as 1 (see records.MAX_JSON_DEPTH)
    max_json_depth: int = MAX_JSON_DEPTH


class _Latency:
    """The last few thousand latencies of one operation, for percentiles in /status."""

    def __init__(self, size: int = 2048) -> None:
        self.samples: collections.deque[float] = collections.deque(maxlen=size)
        self.count = 0

    def add(self, seconds: float) -> None:
        self.samples.append(seconds)
        self.count += 1

    def summary(self) -> dict[str, float | int]:
        data = sorted(self.samples)
        if not data:
            return {"count": self.count}

        def pct(p: float) -> float:
            return round(data[min(len(data) - 1, int(p * len(data)))] * 1000, 3)

        return {"count": self.count, "p50_ms": pct(0.50), "p95_ms": pct(0.95), "p99_ms": pct(0.99)}


class Api:
    """Serves operations for both transports. Owns no actor state: it calls the actors."""

    def __init__(self, system: ActorSystem, auth: Auth, config: ApiConfig) -> None:
        self.system = system
        self.auth = auth
        self.config = config
        self.limiter = RateLimiter()
        self.started_at = time.time()
        self.shutting_down = False
        self.latency: dict[str, _Latency] = collections.defaultdict(_Latency)
        #: requests refused by a rate limit (429 RATE_001) since start, for /status
        self.rate_limited = 0
        self.request_ids = itertools.count(1)
        self.services = Services(
            project=self._project,
            context=self._context,
            query_store=self._query_store,
            broker=system.broker,
            profiles=auth.profiles,
            tokens=auth,
            limits=OpLimits(config.call_timeout, config.wait_default_ms, config.wait_max_ms,
                            config.fault_injection),
            status=self.status,
            fault_target=system.actor_ref,
            disk=system.disk,
            agents=system.agents,
        )
        self.registry = prom.CollectorRegistry()
        self.m_requests = prom.Counter(
            "orchestra_requests", "Requests served, by operation and status",
            ["op", "status"], registry=self.registry,
        )
        self.m_latency = prom.Histogram(
            "orchestra_request_seconds", "Request latency by operation", ["op"],
            registry=self.registry,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5, 30),
        )
        self.m_sessions = prom.Gauge("orchestra_sessions", "Connected WebSocket sessions", registry=self.registry)
        self.m_projects = prom.Gauge("orchestra_projects", "Running project actors", registry=self.registry)
        self.m_agents = prom.Gauge("orchestra_agents_running",
                                   "Spawned agents live (starting, running, stalled)", registry=self.registry)
        self.m_restarts = prom.Gauge("orchestra_actor_restarts", "Actor restarts since start", registry=self.registry)
        self.m_crashes = prom.Counter(
            "orchestra_actor_crashes", "Actor crashes since start, also of actors not restarted (sessions)",
            registry=self.registry,
        )
        self._crashes_reported = 0
        self.m_context_hits = prom.Gauge("orchestra_context_cache_hits", "Context answers served from the cache", registry=self.registry)
        self.m_context_misses = prom.Gauge("orchestra_context_cache_misses", "Context answers computed", registry=self.registry)
        self.m_context_hit_rate = prom.Gauge("orchestra_context_cache_hit_rate",
                                             "Share of context answers not computed for their request (0 before any)",
                                             registry=self.registry)
        self.m_child_restarts = prom.Gauge(
            "orchestra_actor_child_restarts", "Restarts of each supervised actor since start",
            ["supervisor", "child"], registry=self.registry,
        )
        self._counters: dict[tuple[str, str], Any] = {}
        self._histograms: dict[str, Any] = {}

    def new_request_id(self) -> str:
        return f"req-{int(self.started_at):x}-{next(self.request_ids)}"

    # -- the one entry point --

    async def call(
        self, name: str, principal: Principal | None, args: dict[str, Any], ctx: Ctx,
    ) -> tuple[Reply, list[tuple[bytes, bytes]]]:
        """Run operation ``name``; returns the reply and extra HTTP headers, or raises ApiError."""
        op = OPS.get(name)
        if op is None:
            raise ApiError(404, "NOT_FOUND", f"unknown operation {name!r}")
        if principal is None:
            raise ApiError(401, "AUTH_001", "missing token: send 'Authorization: Bearer <jwt>'")
        # a spawned agent's request is its sign of life (one dict lookup for any other token)
        self.system.agents.touch(principal.sub)
        if principal.claims.get("spawned") is True and not self.system.agents.is_live(principal.sub):
            raise ApiError(401, "AUTH_001", f"the spawned agent {principal.sub!r} this token was issued to "
                                            "has ended: its token is no longer accepted")
        if self.shutting_down:
            raise shutting_down()
        headers: list[tuple[bytes, bytes]] = []
        if op.rate_limited and self.config.rate_limits:
            headers = self._rate_limit(principal)
        if op.permission is not None:
            principal.require(op.permission)
        started = time.perf_counter()
        status = "200"
        try:
            return await op.handler(OpContext(principal, ctx, self.services), args), headers
        except BaseException as exc:
            if isinstance(exc, Exception):
                status = str(from_exception(exc, ctx.request_id).status)
            else:
                status = "cancelled"
            raise
        finally:
            elapsed = time.perf_counter() - started
            self.latency[name].add(elapsed)
            counter = self._counters.get((name, status))
            if counter is None:
                counter = self._counters[(name, status)] = self.m_requests.labels(name, status)
            counter.inc()
            histogram = self._histograms.get(name)
            if histogram is None:
                histogram = self._histograms[name] = self.m_latency.labels(name)
            histogram.observe(elapsed)

    def _rate_limit(self, principal: Principal) -> list[tuple[bytes, bytes]]:
        profile = self.auth.profiles.get(principal.agent_type)
        d = self.limiter.take(principal.sub, profile.rate_per_second, profile.burst, time.monotonic())
        headers = [
            (b"x-ratelimit-limit", str(d.limit).encode()),
            (b"x-ratelimit-remaining", str(d.remaining).encode()),
            (b"x-ratelimit-reset", str(ceil_seconds(d.reset)).encode()),
        ]
        if not d.allowed:
            self.rate_limited += 1
            raise ApiError(
                429, "RATE_001",
                f"rate limit of {profile.rate_per_second:g}/s (burst {d.limit}) for agent type "
                f"'{principal.agent_type}' exceeded; retry after {d.retry_after:.3f}s",
                retry_after_seconds=round(d.retry_after, 3), limit=d.limit,
                headers=[(b"retry-after", str(ceil_seconds(d.retry_after)).encode()), *headers],
            )
        return headers

    def spawn_hooks(self, url: Callable[[], str]) -> AgentHooks:
        """What spawned agents need of the server: ``url()`` its base URL (known once it
        listens), tokens minted for ``sub = agent_id`` in the agent's project with its
        profile's permissions and ``token_ttl``, contexts and events through the actors.
        Set as ``system.agents.hooks`` before the system runs."""
        auth = self.auth

        def mint_token(spec: AgentSpec) -> str:
            return auth.mint(sub=spec.agent_id, agent_type=spec.agent_type, project_id=spec.project_id,
                             ttl=spec.profile.token_ttl, spawned=True)

        return server_hooks(url=url, mint_token=mint_token, project=self._project, context=self._context,
                            timeout=self.config.call_timeout)

    # -- the services handlers use --

    async def _project(self, project_id: str) -> ActorRef:
        return await self.system.project(project_id, timeout=self.config.call_timeout)

    async def _context(self, project_id: str) -> ActorRef:
        return await self.system.context(project_id, timeout=self.config.call_timeout)

    async def _query_store(self, query: QueryResults) -> list[tuple[int, bytes]]:
        rows: list[tuple[int, bytes]] = await self.system.store.call(
            query, timeout=self.config.call_timeout
        )
        return rows

    # -- public status (also for HTTP without a token) --

    async def status(self, principal: Principal | None) -> dict[str, Any]:
        counts: dict[str, int | str]
        try:
            counts = dict(await self.system.store_counts())
        except (ActorError, StoreError) as exc:  # the store restarting: say so, answer the rest
            counts = {"error": type(exc).__name__}
        sessions = list(self.system.live_sessions)
        by_type = collections.Counter(s.principal.agent_type for s in sessions)
        # the project actors count what they stored and published (across their restarts)
        totals = self.system.project_totals()
        body: dict[str, Any] = {
            "service": "orchestration-sidecar",
            "version": VERSION,
            "uptime_seconds": round(time.time() - self.started_at, 3),
            "agents": {"connected": len(sessions), "by_type": dict(by_type),
                       "spawned_running": self.system.agents.running()},
            "projects": {"running": len(self.system.running_projects())},
            "storage": {
                "results_stored": counts.get("results"),
                "events_retained": counts.get("events"),
                "projects": counts.get("projects"),
                "results_stored_since_start": totals.get("results_stored", 0),
            },
            "events": {"total_published": totals.get("events_published", 0)},
            "performance": {name: lat.summary() for name, lat in sorted(self.latency.items())},
            "requests": {"rate_limited": self.rate_limited},
            "actors": {"restarts": self.system.root.total_restarts(),
                       "crashes": self.system.root.total_crashes()},
            "context_cache": await self.system.context_stats(),
        }
        if principal is not None and principal.is_admin:
            detail = await self.system.project_stats()
            if principal.project_id != ALL_PROJECTS:
                detail = {k: v for k, v in detail.items() if k == principal.project_id}
            body["projects"]["detail"] = detail
            body["actors"]["tree"] = self.system.root.tree()
        return body

    async def metrics(self) -> bytes:
        cache = await self.system.context_stats()
        self.m_context_hits.set(cache["hits"])
        self.m_context_misses.set(cache["misses"])
        self.m_context_hit_rate.set(cache["hit_rate"] or 0.0)
        self.m_sessions.set(len(self.system.live_sessions))
        self.m_projects.set(len(self.system.running_projects()))
        self.m_agents.set(self.system.agents.running())
        self.m_restarts.set(self.system.root.total_restarts())
        crashes = self.system.root.total_crashes()  # cumulative: the counter follows it
        self.m_crashes.inc(crashes - self._crashes_reported)
        self._crashes_reported = crashes

        def walk(tree: dict[str, Any]) -> None:
            for child in tree["children"]:
                if child["restart"] != "temporary":
                    self.m_child_restarts.labels(tree["name"], child["id"]).set(child["restarts"])
                if "supervisor" in child:
                    walk(child["supervisor"])

        walk(self.system.root.tree())
        return prom.generate_latest(self.registry)
