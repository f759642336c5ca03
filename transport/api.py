"""The operation table: one entry per operation, served alike over HTTP and WebSocket.

Each operation takes the verified :class:`Principal` and a dict of arguments (from the path,
query and body on HTTP; from the frame on WebSocket) and returns a dict, or bytes already
encoded as JSON. Authentication, permissions, rate limits, metrics and the mapping of errors
happen here once, for both transports.
"""

from __future__ import annotations

import collections
import itertools
import logging
import time
from dataclasses import dataclass
from typing import Any

import orjson
import prometheus_client as prom

from ..actors.broker import DropGlobals
from ..actors.errors import InvalidRequest
from ..actors.principal import Principal
from ..actors.project import (
    DropSession,
)
from ..actors.records import MAX_ID_CHARS, MAX_JSON_DEPTH, validate_depth
from ..actors.runtime import ActorError
from ..actors.session import CLOSE_AUTH, CloseSession, Session
from ..actors.store import StoreError
from ..actors.system import ActorSystem
from .auth import Auth
from .errors import ApiError, encode_error, from_exception, shutting_down
from .ops import OPS, Ctx, Op, Reply
from .ratelimit import RateLimiter, ceil_seconds

__all__ = ["Api", "ApiConfig", "Ctx", "Op", "OPS", "Reply", "valid_request_id"]

log = logging.getLogger("orchestra")
VERSION = "0.1.0"

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


def valid_request_id(value: Any) -> bool:
    """A WebSocket request ``id`` the server echoes: a string of at most 256 characters, a
    number, a boolean or null."""
    if isinstance(value, str):
        return len(value) <= MAX_ID_CHARS
    return value is None or isinstance(value, int | float)


_BAD_ID = ApiError(
    400, "REQ_001", f"'id' must be a string of at most {MAX_ID_CHARS} characters, a number, a boolean or null",
    field="id",
)


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
        self.request_ids = itertools.count(1)
        self.sessions: dict[str, Session] = {}
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
        self.events_published = 0
        self.results_stored = 0
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
            return await op.handler(self, principal, args, ctx), headers
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
            raise ApiError(
                429, "RATE_001",
                f"rate limit of {profile.rate_per_second:g}/s (burst {d.limit}) for agent type "
                f"'{principal.agent_type}' exceeded; retry after {d.retry_after:.3f}s",
                retry_after_seconds=round(d.retry_after, 3), limit=d.limit,
                headers=[(b"retry-after", str(ceil_seconds(d.retry_after)).encode()), *headers],
            )
        return headers

    async def project(self, project_id: str) -> Any:
        return await self.system.project(project_id, timeout=self.config.call_timeout)

    async def ask(self, project_id: str, msg: Any, timeout: float | None = None) -> Any:
        ref = await self.project(project_id)
        return await ref.call(msg, timeout=timeout or self.config.call_timeout)

    # -- public status (also for HTTP without a token) --

    async def status(self, principal: Principal | None) -> dict[str, Any]:
        counts: dict[str, int | str]
        try:
            counts = dict(await self.system.store_counts())
        except (ActorError, StoreError) as exc:  # the store restarting: say so, answer the rest
            counts = {"error": type(exc).__name__}
        by_type: dict[str, int] = collections.Counter(
            s.claims.get("agent_type", "?") for s in self.sessions.values()
        )
        body: dict[str, Any] = {
            "service": "orchestration-sidecar",
            "version": VERSION,
            "uptime_seconds": round(time.time() - self.started_at, 3),
            "agents": {"connected": len(self.sessions), "by_type": dict(by_type)},
            "projects": {"running": len(self.system.running_projects())},
            "storage": {
                "results_stored": counts.get("results"),
                "events_retained": counts.get("events"),
                "projects": counts.get("projects"),
                "results_stored_since_start": self.results_stored,
            },
            "events": {"total_published": self.events_published},
            "performance": {name: lat.summary() for name, lat in sorted(self.latency.items())},
            "actors": {"restarts": self.system.root.total_restarts(),
                       "crashes": self.system.root.total_crashes()},
            "context_cache": await self.system.context_stats(),
        }
        if principal is not None and principal.is_admin:
            detail = await self.system.project_stats()
            if principal.project_id != "*":
                detail = {k: v for k, v in detail.items() if k == principal.project_id}
            body["projects"]["detail"] = detail
            body["actors"]["tree"] = self.system.root.tree()
        return body

    async def metrics(self) -> bytes:
        cache = await self.system.context_stats()
        self.m_context_hits.set(cache["hits"])
        self.m_context_misses.set(cache["misses"])
        self.m_context_hit_rate.set(cache["hit_rate"] or 0.0)
        self.m_sessions.set(len(self.sessions))
        self.m_projects.set(len(self.system.running_projects()))
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

    # -- WebSocket dispatch (the session's Dispatcher) --

    def parse(self, session: Session, raw: str | bytes) -> tuple[dict[str, Any], str] | bytes:
        try:
            request = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            return self.ws_error(None, ApiError(400, "REQ_001", f"malformed JSON: {exc}"))
        if not isinstance(request, dict):
            return self.ws_error(None, ApiError(400, "REQ_001", "a request is a JSON object with 'op'", field="op"))
        try:
            validate_depth(raw, request, self.config.max_json_depth)
        except InvalidRequest as exc:
            return self.ws_error(None, ApiError(400, "REQ_001", exc.message, field=exc.field))
        rid = request.get("id")
        if not valid_request_id(rid):
            return self.ws_error(None, _BAD_ID)
        name = request.get("op")
        op = OPS.get(name) if isinstance(name, str) else None
        if op is None or not op.ws:
            shown = repr(name[:64]) + ("..." if len(name) > 64 else "") if isinstance(name, str) else type(name).__name__
            return self.ws_error(rid, ApiError(404, "NOT_FOUND", f"unknown op {shown}", field="op"))
        return request, op.mode

    async def handle(self, session: Session, request: dict[str, Any]) -> bytes | None:
        rid = request.get("id")
        request_id = self.new_request_id()
        try:
            args = {k: v for k, v in request.items() if k not in ("id", "op", "idempotency_key")}
            ctx = Ctx(request_id, session, rid, request.get("idempotency_key"))
            reply, _ = await self.call(request["op"], session.principal, args, ctx)
        except Exception as exc:
            error = from_exception(exc, request_id)
            close_code = error.close_code
            if error.code in ("AUTH_001", "AUTH_002") and request["op"] != "auth.refresh":
                close_code = CLOSE_AUTH
            if close_code is not None:  # answer first, then close
                session.send_frame(self.ws_error(rid, error, request_id))
                await session.ref.cast(CloseSession(close_code, error.message[:120]))
                return None
            return self.ws_error(rid, error, request_id)
        if reply is None:
            return None
        result = reply if isinstance(reply, bytes) else orjson.dumps(reply)
        frame = b'{"id":%s,"ok":true,"result":%s}' % (orjson.dumps(rid), result)
        if ctx.on_sent:
            hooks = ctx.on_sent

            def sent() -> None:
                for hook in hooks:
                    hook()

            session.send_frame(frame, sent)
            return None
        return frame

    async def drop_session(self, session: Session) -> None:
        """Forget a closed session: its subscriptions at every project."""
        self.sessions.pop(session.key, None)
        if session.global_subscriptions:
            self.system.broker.try_cast(DropGlobals(session.key))
        for ref in set(session.subscriptions.values()):
            ref.try_cast(DropSession(session.key))

    def ws_error(self, rid: Any, error: ApiError, request_id: str | None = None) -> bytes:
        request_id = request_id or self.new_request_id()
        log.log(logging.WARNING if error.status >= 500 else logging.INFO,
                "ws request %s: %s %s", request_id, error.code, error.message)
        return b'{"id":%s,"ok":false,"error":%s}' % (orjson.dumps(rid), encode_error(error, request_id))

    def notice_frame(self, op: str, fields: dict[str, Any]) -> bytes:
        return orjson.dumps({"op": op, **fields})

    def reply_frame(self, reply_id: Any, result: dict[str, Any]) -> bytes:
        return b'{"id":%s,"ok":true,"result":%s}' % (orjson.dumps(reply_id), orjson.dumps(result))
