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

from .. import __version__
from ..actors.agents import AgentHooks, AgentSpec, server_hooks
from ..actors.principal import ALL_PROJECTS, Principal
from ..actors.records import MAX_JSON_DEPTH
from ..actors.runtime import ActorError, ActorRef
from ..actors.store import QueryResults, StoreError
from ..actors.system import ActorSystem
from .auth import Auth
from .errors import ApiError, from_exception, shutting_down
from .metrics import Metrics, Snapshot
from .observability import current_scope
from .ops import OPS
from .ratelimit import RateLimiter, ceil_seconds
from .services import Ctx, OpContext, OpLimits, Reply, Services
from .tracing import NoTracing, OtelTracing, Tracing

__all__ = ["Api", "ApiConfig", "VERSION"]


def _restarting(tree: dict[str, Any]) -> list[str]:
    """The ids of the permanent actors of ``tree`` (nested) that crashed and are not running
    again yet. A first start is not a restart; temporary and transient children (sessions,
    spawned agents) come and go as clients and processes do."""
    out = []
    for child in tree["children"]:
        if child["restart"] == "permanent" and child["state"] != "running" and child["crashes"]:
            out.append(child["id"])
        if "supervisor" in child:
            out.extend(_restarting(child["supervisor"]))
    return out

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
    #: OpenTelemetry spans of requests (transport/tracing.py); needs the ``otel`` extra
    otel: bool = False


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
        self.metrics_registry = Metrics(VERSION)
        self.tracing: Tracing = OtelTracing(VERSION) if config.otel else NoTracing()

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
        scope = current_scope()
        if scope is not None:
            scope.op = name
        if principal is None:
            raise ApiError(401, "AUTH_001", "missing token: send 'Authorization: Bearer <jwt>'")
        if scope is not None:
            scope.agent = principal.sub
            named = args.get("project_id")
            scope.project = named if isinstance(named, str) and named else principal.project_id
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
            self.metrics_registry.observe_request(name, status, elapsed)

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
        # every process of the deployment (PostgreSQL: from the lease table), not only this one:
        # counts for anyone, each process (host, pid) for an admin
        deployment = await self.system.processes(timeout=self.config.call_timeout)
        states = collections.Counter(p["state"] for p in deployment["processes"])
        body["deployment"] = {"processes_alive": states["alive"], "processes_lost": states["lost"]}
        if principal is not None and principal.is_admin:
            detail = await self.system.project_stats()
            if principal.project_id != ALL_PROJECTS:
                detail = {k: v for k, v in detail.items() if k == principal.project_id}
            body["projects"]["detail"] = detail
            body["actors"]["tree"] = self.system.root.tree()
            body["deployment"].update(deployment)
        return body

    def health(self) -> tuple[bool, dict[str, Any]]:
        """Whether the server is healthy, and the body of ``GET /health`` saying why not.

        Degraded (503) while: it drains (shutting down), the store or the broker is not
        running (restarting after a crash), the supervision tree stopped (a supervisor gave
        up), or any permanent actor is restarting. Sessions and agents ending are no sign of it.
        """
        system = self.system
        restarting = sorted(_restarting(system.root.tree()))
        checks: dict[str, Any] = {
            "store": "ok" if system.store.alive else "restarting",
            "broker": "ok" if system.broker.alive else "restarting",
            "supervisors": "ok" if system.root.running else "stopped",
            "accepting": not self.shutting_down,
        }
        reasons = ["shutting down (draining)"] if self.shutting_down else []
        reasons += [f"{name} is {checks[name]}" for name in ("store", "broker", "supervisors")
                    if checks[name] != "ok"]
        reasons += [f"{child} is restarting" for child in restarting if child not in ("store", "broker")]
        if restarting:
            checks["restarting"] = restarting
        body: dict[str, Any] = {
            "status": "degraded" if reasons else "healthy",
            "service": "orchestration-sidecar",
            "version": VERSION,
            "uptime_seconds": round(time.time() - self.started_at, 3),
            "checks": checks,
        }
        if reasons:
            body["reasons"] = reasons
        return not reasons, body

    async def metrics(self, connections: int = 0) -> bytes:
        """The body of ``GET /metrics``; ``connections``: the server's open connections."""
        cache = await self.system.context_stats()
        projects = await self.system.project_stats()
        totals = self.system.project_totals()
        root = self.system.root
        children: dict[tuple[str, str], int] = {}

        def walk(tree: dict[str, Any]) -> None:
            for child in tree["children"]:
                if child["restart"] != "temporary":
                    children[(tree["name"], child["id"])] = child["restarts"]
                if "supervisor" in child:
                    walk(child["supervisor"])

        walk(root.tree())
        snapshot = Snapshot(
            counters={
                "orchestra_actor_restarts": ("Actor restarts since start", root.total_restarts()),
                "orchestra_actor_crashes": (
                    "Actor crashes since start, also of actors not restarted (sessions)", root.total_crashes()),
                "orchestra_context_cache_hits": ("Context answers served from the cache", cache["hits"]),
                "orchestra_context_cache_misses": ("Context answers computed", cache["misses"]),
                "orchestra_results_stored": ("Results stored since start", totals.get("results_stored", 0)),
                "orchestra_events_published": (
                    "Events published since start (also the server's own)", totals.get("events_published", 0)),
                "orchestra_rate_limited": ("Requests refused by a rate limit (429 RATE_001)", self.rate_limited),
            },
            gauges={
                "orchestra_connections": ("Open client connections (HTTP and WebSocket)", connections),
                "orchestra_sessions": ("Connected WebSocket sessions", len(self.system.live_sessions)),
                "orchestra_projects": ("Running project actors", len(self.system.running_projects())),
                "orchestra_subscriptions": ("Event subscriptions of running projects",
                                            sum(p.get("subscriptions", 0) for p in projects.values())),
                "orchestra_waiters": ("Long-poll waits in progress",
                                      sum(p.get("waiters", 0) for p in projects.values())),
                "orchestra_agents_running": ("Spawned agents live (starting, running, stalled)",
                                             self.system.agents.running()),
            },
            child_restarts=children,
        )
        return self.metrics_registry.expose(snapshot)
