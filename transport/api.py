"""The operation table: one entry per operation, served alike over HTTP and WebSocket.

Each operation takes the verified :class:`Principal` and a dict of arguments (from the path,
query and body on HTTP; from the frame on WebSocket) and returns a dict, or bytes already
encoded as JSON. Authentication, permissions, rate limits, metrics and the mapping of errors
happen here once, for both transports.
"""

from __future__ import annotations

import base64
import collections
import itertools
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import orjson
import prometheus_client as prom
import trio

from ..actors.context.actor import ClearContext, ContextGet
from ..actors.context.engine import DEFAULT_BYTES, MAX_BYTES, MIN_BYTES
from ..actors.errors import InvalidRequest, NotFound
from ..actors.events import EventFilter, decode_cursor
from ..actors.project import (
    DropSession,
    GetResult,
    Publish,
    Query,
    StoreResult,
    StoreResults,
    Subscribe,
    Unsubscribe,
    Wait,
)
from ..actors.records import (
    parse_iso,
    validate_event_body,
    validate_event_type,
    validate_result_body,
)
from ..actors.session import CLOSE_AUTH, CLOSE_FORBIDDEN, CloseSession, Session, SetExpiry
from ..actors.store import QueryResults
from ..actors.system import ActorSystem
from .auth import Auth, Principal
from .errors import ApiError, encode_error, from_exception
from .ratelimit import RateLimiter, ceil_seconds

__all__ = ["Api", "ApiConfig", "Reply"]

log = logging.getLogger("orchestra")
VERSION = "0.1.0"

Reply = dict[str, Any] | bytes | None
Handler = Callable[["Api", Principal, dict[str, Any], "Ctx"], Awaitable[Reply]]


@dataclass(frozen=True, slots=True)
class Ctx:
    """What an operation knows of its request beyond its arguments."""

    request_id: str
    session: Session | None = None  # WebSocket only
    reply_id: Any = None  # the WebSocket request's "id"


@dataclass(frozen=True)
class ApiConfig:
    rate_limits: bool = True
    fault_injection: bool = False
    max_body_bytes: int = 10 * 1024 * 1024
    wait_max_ms: int = 300_000
    wait_default_ms: int = 30_000
    call_timeout: float = 30.0


@dataclass(frozen=True)
class Op:
    name: str
    handler: Handler
    permission: str | None = None  # None: any valid token of the project
    #: how a WebSocket session runs it: "inline", "pooled" or "blocking"
    mode: str = "pooled"
    rate_limited: bool = True
    ws: bool = True


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


def _str_arg(args: dict[str, Any], key: str, *, required: bool = True) -> str | None:
    value = args.get(key)
    if value is None or value == "":
        if required:
            raise InvalidRequest(key, f"missing '{key}' (a string)")
        return None
    if not isinstance(value, str):
        raise InvalidRequest(key, f"'{key}' must be a string")
    return value


def _int_arg(args: dict[str, Any], key: str, default: int, lo: int, hi: int) -> int:
    value = args.get(key)
    if value is None or value == "":
        return default
    if isinstance(value, str):
        try:
            value = int(value)
        except ValueError:
            raise InvalidRequest(key, f"'{key}' must be an integer from {lo} to {hi}") from None
    if isinstance(value, bool) or not isinstance(value, int) or not lo <= value <= hi:
        raise InvalidRequest(key, f"'{key}' must be an integer from {lo} to {hi}")
    return value


def _cursor_arg(args: dict[str, Any], key: str) -> int | None:
    value = args.get(key)
    if value is None or value == "":
        return None
    try:
        return decode_cursor(value)
    except ValueError as exc:
        raise InvalidRequest(key, f"'{key}': {exc}") from None


def _encode_page_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(f"r1:{seq}".encode()).decode().rstrip("=")


def _decode_page_cursor(text: str) -> int:
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4)).decode()
        tag, _, seq = raw.partition(":")
        if tag != "r1":
            raise ValueError
        return int(seq)
    except (ValueError, UnicodeDecodeError):
        raise InvalidRequest("cursor", "'cursor' is not a cursor this server returned") from None


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
        self.session_ids = itertools.count(1)
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
        self.m_context_hits = prom.Gauge("orchestra_context_cache_hits", "Context answers served from the cache", registry=self.registry)
        self.m_context_misses = prom.Gauge("orchestra_context_cache_misses", "Context answers computed", registry=self.registry)
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
            raise ApiError(503, "UNAVAILABLE", "the server is shutting down", retry_after_seconds=5)
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
        try:
            counts = await self.system.store_counts()
        except Exception as exc:
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
            "actors": {"restarts": self.system.root.total_restarts()},
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
        self.m_sessions.set(len(self.sessions))
        self.m_projects.set(len(self.system.running_projects()))
        self.m_restarts.set(self.system.root.total_restarts())

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
        name = request.get("op")
        op = OPS.get(name) if isinstance(name, str) else None
        if op is None or not op.ws:
            return self.ws_error(
                request.get("id"), ApiError(404, "NOT_FOUND", f"unknown op {name!r}", field="op")
            )
        return request, op.mode

    async def handle(self, session: Session, request: dict[str, Any]) -> bytes | None:
        rid = request.get("id")
        request_id = self.new_request_id()
        try:
            args = {k: v for k, v in request.items() if k not in ("id", "op")}
            reply, _ = await self.call(
                request["op"], session.principal, args, Ctx(request_id, session, rid)
            )
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
        return b'{"id":%s,"ok":true,"result":%s}' % (orjson.dumps(rid), result)

    async def drop_session(self, session: Session) -> None:
        """Forget a closed session: its subscriptions at every project."""
        self.sessions.pop(session.key, None)
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


# -- operations --


async def op_ping(api: Api, p: Principal, args: dict[str, Any], c: Ctx) -> Reply:
    return b'{"pong":true}'


async def op_status(api: Api, p: Principal, args: dict[str, Any], c: Ctx) -> Reply:
    return await api.status(p)


async def op_result_store(api: Api, p: Principal, args: dict[str, Any], c: Ctx) -> Reply:
    body = validate_result_body(args, p.project_id)
    project = p.project_for(body.get("project_id"))
    reply = await api.ask(project, StoreResult(body))
    api.results_stored += 1
    api.events_published += 1
    return reply  # type: ignore[no-any-return]


MAX_BATCH_RESULTS = 1000


async def op_result_store_batch(api: Api, p: Principal, args: dict[str, Any], c: Ctx) -> Reply:
    items = args.get("results")
    if not isinstance(items, list) or not items or len(items) > MAX_BATCH_RESULTS:
        raise InvalidRequest("results", f"'results' must be a list of 1 to {MAX_BATCH_RESULTS} result bodies")
    bodies = []
    project = None
    for i, item in enumerate(items):
        try:
            body = validate_result_body(item, p.project_id)
        except InvalidRequest as exc:
            raise InvalidRequest(f"results[{i}].{exc.field}", f"results[{i}]: {exc.message}") from None
        this = p.project_for(body.get("project_id"))
        if project is not None and this != project:
            raise InvalidRequest(f"results[{i}].project_id", "all results of a batch belong to one project")
        project = this
        bodies.append(body)
    assert project is not None
    reply = await api.ask(project, StoreResults(tuple(bodies)))
    api.results_stored += len(bodies)
    api.events_published += len(bodies)
    return reply  # type: ignore[no-any-return]


async def op_result_get(api: Api, p: Principal, args: dict[str, Any], c: Ctx) -> Reply:
    result_id = _str_arg(args, "result_id")
    project = p.project_for(_str_arg(args, "project_id", required=False))
    ref = await api.project(project)
    table = ref.view  # the project's table of recent records: no mailbox round trip
    if table is not None:
        record = table.get(result_id)
        if record is not None:
            return record  # type: ignore[no-any-return]
    return await ref.call(GetResult(result_id), timeout=api.config.call_timeout)  # type: ignore[no-any-return]


async def op_result_query(api: Api, p: Principal, args: dict[str, Any], c: Ctx) -> Reply:
    requested = _str_arg(args, "project_id", required=False)
    if p.project_id == "*" and p.is_admin and requested in (None, "*"):
        project = None
    else:
        project = p.project_for(requested)
    limit = _int_arg(args, "limit", 50, 1, 1000)
    cursor = _str_arg(args, "cursor", required=False)
    q = QueryResults(
        project_id=project,
        issue_id=_str_arg(args, "issue_id", required=False),
        agent_type=_str_arg(args, "agent_type", required=False),
        agent_id=_str_arg(args, "agent_id", required=False),
        status=_str_arg(args, "status", required=False),
        since=parse_iso("since", args["since"]) if args.get("since") else None,
        until=parse_iso("until", args["until"]) if args.get("until") else None,
        q=_str_arg(args, "q", required=False),
        limit=limit + 1,
        before_seq=_decode_page_cursor(cursor) if cursor else None,
    )
    if project is None:
        rows = await api.system.store.call(q, timeout=api.config.call_timeout)
    else:
        rows = await api.ask(project, Query(q))
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = orjson.dumps(_encode_page_cursor(rows[-1][0]) if more else None)
    return b'{"results":[%s],"next_cursor":%s}' % (b",".join(r[1] for r in rows), next_cursor)


async def op_event_publish(api: Api, p: Principal, args: dict[str, Any], c: Ctx) -> Reply:
    event_type = validate_event_type(args.get("event_type"))
    body = validate_event_body({k: v for k, v in args.items() if k != "event_type"})
    project = p.project_for(_str_arg(args, "project_id", required=False))
    reply = await api.ask(project, Publish(event_type, body, p.sub, p.agent_type))
    api.events_published += 1
    return reply  # type: ignore[no-any-return]


async def op_event_wait(api: Api, p: Principal, args: dict[str, Any], c: Ctx) -> Reply:
    event_type = validate_event_type(args.get("event_type"))
    timeout_ms = _int_arg(args, "timeout", api.config.wait_default_ms, 0, api.config.wait_max_ms)
    flt = EventFilter.parse(_str_arg(args, "filter", required=False))
    since = _cursor_arg(args, "since")
    limit = _int_arg(args, "limit", 100, 1, 1000)
    project = p.project_for(_str_arg(args, "project_id", required=False))
    ref = await api.project(project)
    return await ref.call(  # type: ignore[no-any-return]
        Wait(p.sub, event_type, flt, since, limit, timeout_ms / 1000),
        timeout=timeout_ms / 1000 + api.config.call_timeout,
    )


async def op_event_subscribe(api: Api, p: Principal, args: dict[str, Any], c: Ctx) -> Reply:
    s = c.session
    assert s is not None
    default = list(api.auth.profiles.get(p.agent_type).event_subscriptions) or "*"
    types = args.get("event_types", default)
    if types == "*" or types is None:
        event_types = None
    elif isinstance(types, list) and all(isinstance(t, str) for t in types) and types:
        event_types = frozenset(validate_event_type(t) for t in types)
    else:
        raise InvalidRequest("event_types", "'event_types' must be a non-empty list of strings or \"*\"")
    topics = args.get("topics")
    if topics is not None and not (isinstance(topics, list) and all(isinstance(t, str) for t in topics)):
        raise InvalidRequest("topics", "'topics' must be a list of strings")
    flt = EventFilter.parse(_str_arg(args, "filter", required=False))
    since = _cursor_arg(args, "since")
    requested = _str_arg(args, "project_id", required=False)
    if requested == "*" or (requested is None and p.project_id == "*"):
        if not (p.is_admin and p.project_id == "*"):
            raise ApiError(403, "AUTH_003", "only an admin token for every project may subscribe to '*'")
        projects = api.system.running_projects()
    else:
        projects = [p.project_for(requested)]
    single = len(projects) == 1
    subs = []
    for project in projects:
        ref = await api.project(project)
        reply = await ref.call(
            Subscribe(
                s, event_types, frozenset(topics) if topics is not None else None, flt, since,
                reply_id=c.reply_id, announce=single,
            ),
            timeout=api.config.call_timeout,
        )
        s.subscriptions[reply["subscription"]] = ref
        s.watch(project, ref)
        subs.append(reply)
    if single:
        return None  # type: ignore[return-value]  # answered by the project, before its replay
    return {"subscription": [r["subscription"] for r in subs], "subscriptions": subs, "cursor": None}


async def op_event_unsubscribe(api: Api, p: Principal, args: dict[str, Any], c: Ctx) -> Reply:
    s = c.session
    assert s is not None
    sid = _str_arg(args, "subscription")
    ref = s.subscriptions.pop(sid, None)
    if ref is None:
        raise NotFound(f"no subscription {sid!r} on this connection")
    await ref.call(Unsubscribe(s.key, sid), timeout=api.config.call_timeout)
    s.delivered.pop(sid, None)
    return {}


async def op_context_get(api: Api, p: Principal, args: dict[str, Any], c: Ctx) -> Reply:
    issue_id = _str_arg(args, "issue_id")
    agent_type = _str_arg(args, "agent_type", required=False) or p.agent_type
    task = _str_arg(args, "task", required=False) or ""
    raw = args.get("max_bytes")
    if raw not in (None, ""):
        try:
            max_bytes = int(raw)
        except (TypeError, ValueError):
            raise InvalidRequest("max_bytes", f"'max_bytes' must be an integer from {MIN_BYTES} to {MAX_BYTES}") from None
        if isinstance(raw, bool) or max_bytes < MIN_BYTES:
            raise InvalidRequest("max_bytes", f"'max_bytes' must be an integer from {MIN_BYTES} to {MAX_BYTES}")
        if max_bytes > MAX_BYTES:
            raise ApiError(413, "CTX_002", f"max_bytes {max_bytes} is over the maximum of {MAX_BYTES}", limit=MAX_BYTES)
    else:
        max_bytes = DEFAULT_BYTES
    project = p.project_for(_str_arg(args, "project_id", required=False))
    ref = await api.system.context(project)
    return await ref.call(  # type: ignore[no-any-return]
        ContextGet(issue_id, agent_type, task, max_bytes), timeout=api.config.call_timeout * 2
    )


async def op_cache_clear(api: Api, p: Principal, args: dict[str, Any], c: Ctx) -> Reply:
    issue_id = _str_arg(args, "issue_id")
    project = p.project_for(_str_arg(args, "project_id", required=False))
    ref = await api.system.context(project)
    return await ref.call(ClearContext(issue_id), timeout=api.config.call_timeout)  # type: ignore[no-any-return]


async def op_agent_spawn(api: Api, p: Principal, args: dict[str, Any], c: Ctx) -> Reply:
    agent_type = _str_arg(args, "agent_type")
    _str_arg(args, "issue_id")
    p.project_for(_str_arg(args, "project_id", required=False))
    profile = api.auth.profiles.get(agent_type)
    if not profile.command:
        raise ApiError(
            409, "AGENT_001",
            f"agent type '{agent_type}' has no command configured; add one with --profiles",
            agent_type=agent_type,
        )
    raise ApiError(
        503, "UNAVAILABLE", "spawning agent processes is not available in this release yet",
        retry_after_seconds=3600,
    )


async def op_agent_status(api: Api, p: Principal, args: dict[str, Any], c: Ctx) -> Reply:
    agent_id = _str_arg(args, "agent_id")
    raise NotFound(f"no spawned agent {agent_id!r} in this project")


async def op_auth_refresh(api: Api, p: Principal, args: dict[str, Any], c: Ctx) -> Reply:
    s = c.session
    assert s is not None
    token = _str_arg(args, "token", required=False)
    if token is not None:
        fresh = api.auth.verify(token)
        if (fresh.sub, fresh.project_id) != (p.sub, p.project_id):
            # switching identity on a live connection is forbidden: answer, then close 4003
            error = ApiError(403, "AUTH_003", "a refreshed token must keep the same sub and project_id")
            error.close_code = CLOSE_FORBIDDEN
            raise error
    else:
        ttl = max(60.0, p.exp - p.claims.get("iat", p.exp - 3600))
        token = api.auth.mint(
            sub=p.sub, agent_type=p.agent_type, project_id=p.project_id, ttl=ttl,
            permissions=sorted(p.permissions - {"admin"}) if "permissions" in p.claims else None,
            admin=p.is_admin,
        )
        fresh = api.auth.verify(token)
    s.principal = fresh  # type: ignore[attr-defined]
    s.claims = fresh.claims
    await s.ref.cast(SetExpiry(trio.current_time() + (fresh.exp - time.time())))
    return {"token": token, "expires_at": fresh.exp}


async def op_admin_faults(api: Api, p: Principal, args: dict[str, Any], c: Ctx) -> Reply:
    if not api.config.fault_injection or not p.is_admin:
        raise ApiError(404, "NOT_FOUND", "no such route")
    target = _str_arg(args, "target")
    kind = _str_arg(args, "kind")
    if kind not in ("crash", "delay"):
        raise InvalidRequest("kind", "'kind' must be \"crash\" or \"delay\"")
    ms = args.get("ms", 1000)
    if isinstance(ms, bool) or not isinstance(ms, int | float) or not 0 <= ms <= 600_000:
        raise InvalidRequest("ms", "'ms' must be a number of milliseconds from 0 to 600000")
    ref = api.system.actor_ref(target)
    if ref is None:
        raise InvalidRequest(
            "target", f"unknown target {target!r} (store, broker, project:<id> or session:<sub>)"
        )
    if not ref.inject_fault(kind, ms):
        raise ApiError(503, "UNAVAILABLE", f"{target}'s mailbox is full", retry_after_seconds=1)
    log.warning("fault injected: %s %s (%s ms)", target, kind, ms)
    return {"target": target, "kind": kind, "injected": True}


OPS: dict[str, Op] = {
    op.name: op
    for op in [
        Op("ping", op_ping, mode="inline", rate_limited=False),
        Op("status", op_status, mode="pooled"),
        Op("result.store", op_result_store, "write_results"),
        Op("result.store_batch", op_result_store_batch, "write_results"),
        Op("result.get", op_result_get, mode="inline"),
        Op("result.query", op_result_query),
        Op("event.publish", op_event_publish, "publish_events"),
        Op("event.wait", op_event_wait, mode="blocking"),
        Op("event.subscribe", op_event_subscribe),
        Op("event.unsubscribe", op_event_unsubscribe),
        Op("context.get", op_context_get, "read_context", mode="blocking"),
        Op("cache.clear", op_cache_clear, "read_context"),
        Op("agent.spawn", op_agent_spawn, "spawn_agents"),
        Op("agent.status", op_agent_status),
        Op("auth.refresh", op_auth_refresh, mode="inline", rate_limited=False),
        Op("admin.faults", op_admin_faults, ws=False),
    ]
}
