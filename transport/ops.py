"""The operations: one handler per operation, and the table that both transports serve.

A handler sees little: its arguments (a dict from the path, query and body on HTTP; from the
frame on WebSocket; read with ``transport/args.py``) and an :class:`OpContext` holding the
verified :class:`Principal`, the request's facts (:class:`Ctx`) and the narrow
:class:`Services` it may use. It returns a dict, bytes already encoded as JSON, or None when
the answer was queued already. Authentication, permissions, rate limits and metrics happen
before it (``api.py``); its exceptions become answers in one place (``errors.py``). The types
a handler sees are in ``services.py`` (re-exported here).
"""

from __future__ import annotations

import logging
from typing import Any

import orjson

from ..actors.agents import MAX_TAIL_LINES, STATES, Spawn
from ..actors.broker import SubscribeAll, UnsubscribeAll
from ..actors.context.engine import DEFAULT_BYTES, MAX_BYTES, MIN_BYTES
from ..actors.context_actor import ClearContext, ContextGet
from ..actors.errors import Forbidden, InvalidRequest, NotFound, OutcomeUnknown, TooLarge
from ..actors.events import MAX_FILTER_CHARS, EventFilter
from ..actors.idempotency import IdemKey, fingerprint, validate_key
from ..actors.principal import ALL_PROJECTS, Principal
from ..actors.project import (
    GetResult,
    Publish,
    Query,
    StoreResult,
    StoreResults,
    Subscribe,
    Unsubscribe,
    Wait,
    WaitAnswer,
)
from ..actors.records import (
    parse_iso,
    validate_event_body,
    validate_event_type,
    validate_id,
    validate_result_body,
)
from ..actors.runtime import ActorError
from ..actors.session import CloseReason
from ..actors.store import QueryResults
from .args import (
    MAX_BATCH_RESULTS,
    MAX_Q_CHARS,
    MAX_SUBSCRIBE_LIST,
    MAX_TASK_CHARS,
    MAX_TOKEN_CHARS,
    cursor_arg,
    decode_page_cursor,
    encode_page_cursor,
    environment_arg,
    id_arg,
    int_arg,
    opt_id_arg,
    opt_seconds_arg,
    opt_text_arg,
    since_map,
)
from .errors import ApiError
from .observability import current_scope
from .services import Ctx, Handler, Op, OpContext, OpLimits, Reply, Services, Tokens

__all__ = ["OPS", "Ctx", "Handler", "Op", "OpContext", "OpLimits", "Reply", "Services", "Tokens"]

log = logging.getLogger("orchestra")

#: ``grace_seconds`` of a stop: SIGTERM -> SIGKILL (docs/protocol.md "Bounds")
MAX_STOP_GRACE = 600.0


def _project(p: Principal, args: dict[str, Any]) -> str:
    """The project a request acts on: the token's, or the one it names (403 if another)."""
    return p.project_for(opt_id_arg(args, "project_id"))


def _idem(c: OpContext, op: str, body: Any) -> IdemKey | None:
    """The request's idempotency key, scoped to the token's ``sub``; None without one."""
    key = c.request.idempotency_key
    if key is None:
        return None
    return IdemKey(c.principal.sub, validate_key(key), fingerprint(op, body))


async def _write(c: OpContext, project: str, msg: Any) -> Reply:
    """Send a write to its project. Once it was handed over, a failure of the project actor
    (crash, stop, timeout) leaves its outcome unknown, and the answer says so."""
    ref = await c.services.project(project)
    try:
        reply: Reply = await ref.call(msg, timeout=c.services.limits.call_timeout)
        return reply
    except ActorError as exc:
        raise OutcomeUnknown(
            f"the project stopped answering while it held this write ({exc}): it may or may not "
            "be stored; retry with the same idempotency key to get its original answer"
        ) from exc


def _trace() -> str | None:
    """The request's W3C ``traceparent`` (if it sent a valid one): what the events it causes carry."""
    scope = current_scope()
    return scope.trace.header() if scope is not None and scope.trace is not None else None


# -- operations --


async def op_ping(c: OpContext, args: dict[str, Any]) -> Reply:
    return b'{"pong":true}'


async def op_status(c: OpContext, args: dict[str, Any]) -> Reply:
    return await c.services.status(c.principal)


async def op_result_store(c: OpContext, args: dict[str, Any]) -> Reply:
    p = c.principal
    body = validate_result_body(args, p.project_id)
    project = p.project_for(body.get("project_id"))
    return await _write(c, project, StoreResult(body, _idem(c, "result.store", body), _trace()))


async def op_result_store_batch(c: OpContext, args: dict[str, Any]) -> Reply:
    p = c.principal
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
    return await _write(c, project, StoreResults(tuple(bodies), _idem(c, "result.store_batch", bodies), _trace()))


async def op_result_get(c: OpContext, args: dict[str, Any]) -> Reply:
    p, sv = c.principal, c.services
    result_id = id_arg(args, "result_id")
    project = _project(p, args)
    ref = await sv.project(project)
    table = ref.view  # the project's table of recent records: no mailbox round trip
    if table is not None:
        record: bytes | None = table.peek(result_id)  # a reader: never reorders the owner's table
        if record is not None:
            return record
    found: bytes = await ref.call(GetResult(result_id), timeout=sv.limits.call_timeout)
    return found


async def op_result_query(c: OpContext, args: dict[str, Any]) -> Reply:
    p, sv = c.principal, c.services
    requested = opt_id_arg(args, "project_id")
    if p.project_id == ALL_PROJECTS and p.is_admin and requested in (None, ALL_PROJECTS):
        project = None
    else:
        project = p.project_for(requested)
    limit = int_arg(args, "limit", 50, 1, 1000)
    q = QueryResults(
        project_id=project,
        issue_id=opt_id_arg(args, "issue_id"),
        agent_type=opt_id_arg(args, "agent_type"),
        agent_id=opt_id_arg(args, "agent_id"),
        status=opt_id_arg(args, "status"),
        since=parse_iso("since", args["since"]) if args.get("since") else None,
        until=parse_iso("until", args["until"]) if args.get("until") else None,
        q=opt_text_arg(args, "q", MAX_Q_CHARS),
        limit=limit + 1,
        before_seq=decode_page_cursor(args.get("cursor")),
    )
    rows: list[tuple[int, bytes]]
    if project is None:
        rows = await sv.query_store(q)
    else:
        ref = await sv.project(project)
        rows = await ref.call(Query(q), timeout=sv.limits.call_timeout)
    more = len(rows) > limit
    rows = rows[:limit]
    next_cursor = orjson.dumps(encode_page_cursor(rows[-1][0]) if more else None)
    return b'{"results":[%s],"next_cursor":%s}' % (b",".join(r[1] for r in rows), next_cursor)


async def op_event_publish(c: OpContext, args: dict[str, Any]) -> Reply:
    p = c.principal
    event_type = validate_event_type(args.get("event_type"))
    body = validate_event_body({k: v for k, v in args.items() if k != "event_type"})
    project = _project(p, args)
    idem = _idem(c, "event.publish", {"event_type": event_type, **body})
    return await _write(c, project, Publish(event_type, body, p.sub, p.agent_type, idem, _trace()))


async def op_event_wait(c: OpContext, args: dict[str, Any]) -> Reply:
    p, sv = c.principal, c.services
    event_type = validate_event_type(args.get("event_type"))
    timeout_ms = int_arg(args, "timeout", sv.limits.wait_default_ms, 0, sv.limits.wait_max_ms)
    flt = EventFilter.parse(opt_text_arg(args, "filter", MAX_FILTER_CHARS))
    since = cursor_arg(args, "since")
    limit = int_arg(args, "limit", 100, 1, 1000)
    project = _project(p, args)
    ref = await sv.project(project)
    answer: WaitAnswer = await ref.call(
        Wait(p.sub, event_type, flt, since, limit, timeout_ms / 1000),
        timeout=timeout_ms / 1000 + sv.limits.call_timeout,
    )
    confirm = answer.confirm
    if confirm is not None:
        # the position moves only once the answer reached the client
        def confirmed() -> None:
            ref.try_cast(confirm)

        c.request.on_sent.append(confirmed)
    return answer.reply


async def op_event_subscribe(c: OpContext, args: dict[str, Any]) -> Reply:
    p, sv = c.principal, c.services
    s = c.session
    default = list(sv.profiles.get(p.agent_type).event_subscriptions) or "*"
    types = args.get("event_types", default)
    if types == "*" or types is None:
        event_types = None
    elif isinstance(types, list) and all(isinstance(t, str) for t in types) and 0 < len(types) <= MAX_SUBSCRIBE_LIST:
        event_types = frozenset(validate_event_type(t) for t in types)
    else:
        raise InvalidRequest(
            "event_types", f"'event_types' must be a list of 1 to {MAX_SUBSCRIBE_LIST} strings or \"*\""
        )
    topics = args.get("topics")
    if topics is not None:
        if not isinstance(topics, list) or len(topics) > MAX_SUBSCRIBE_LIST:
            raise InvalidRequest("topics", f"'topics' must be a list of at most {MAX_SUBSCRIBE_LIST} strings")
        for i, topic in enumerate(topics):
            validate_id(f"topics[{i}]", topic)
    flt = EventFilter.parse(opt_text_arg(args, "filter", MAX_FILTER_CHARS))
    requested = opt_id_arg(args, "project_id")
    topic_set = frozenset(topics) if topics is not None else None
    if requested == ALL_PROJECTS or (requested is None and p.project_id == ALL_PROJECTS):
        if not (p.is_admin and p.project_id == ALL_PROJECTS):
            raise Forbidden("only an admin token for every project may subscribe to '*'")
        # every project, present and future: the broker keeps it and attaches it to each
        reply: dict[str, Any] = await sv.broker.call(
            SubscribeAll(s, event_types, topic_set, flt, since_map(args)),
            timeout=sv.limits.call_timeout,
        )
        s.add_global(reply["global_subscription"], sv.broker)
        return reply
    since = cursor_arg(args, "since")
    project = p.project_for(requested)
    ref = await sv.project(project)
    reply = await ref.call(
        Subscribe(s, event_types, topic_set, flt, since, reply_id=c.request.reply_id),
        timeout=sv.limits.call_timeout,
    )
    s.add_subscription(project, reply["subscription"], ref)
    return None  # answered by the project, before its replay


async def op_event_unsubscribe(c: OpContext, args: dict[str, Any]) -> Reply:
    sv = c.services
    s = c.session
    sid = id_arg(args, "subscription")
    if s.has_global(sid):
        await sv.broker.call(UnsubscribeAll(s.key, sid), timeout=sv.limits.call_timeout)
        s.remove_global(sid)
        return {}
    ref = s.remove_subscription(sid)
    if ref is None:
        raise NotFound(f"no subscription {sid!r} on this connection")
    await ref.call(Unsubscribe(s.key, sid), timeout=sv.limits.call_timeout)
    return {}


async def op_context_get(c: OpContext, args: dict[str, Any]) -> Reply:
    p, sv = c.principal, c.services
    issue_id = id_arg(args, "issue_id")
    agent_type = opt_id_arg(args, "agent_type") or p.agent_type
    task = opt_text_arg(args, "task", MAX_TASK_CHARS) or ""
    max_bytes = int_arg(
        args, "max_bytes", DEFAULT_BYTES, MIN_BYTES, MAX_BYTES,
        above=lambda v: ApiError(413, "CTX_002", f"max_bytes {v} is over the maximum of {MAX_BYTES}", limit=MAX_BYTES),
    )
    project = _project(p, args)
    ref = await sv.context(project)
    answer: Reply = await ref.call(
        ContextGet(issue_id, agent_type, task, max_bytes), timeout=sv.limits.call_timeout * 2
    )
    return answer


async def op_cache_clear(c: OpContext, args: dict[str, Any]) -> Reply:
    p, sv = c.principal, c.services
    issue_id = id_arg(args, "issue_id")
    project = _project(p, args)
    ref = await sv.context(project)
    cleared: Reply = await ref.call(ClearContext(issue_id), timeout=sv.limits.call_timeout)
    return cleared


def _context_bytes(args: dict[str, Any]) -> int | None:
    """``context_requirements.max_bytes`` of a spawn: the size of the agent's context file."""
    requirements = args.get("context_requirements")
    if requirements is None:
        return None
    if not isinstance(requirements, dict):
        raise InvalidRequest("context_requirements", "'context_requirements' must be an object")
    if requirements.get("max_bytes") is None:
        return None
    field = "context_requirements.max_bytes"
    try:
        return int_arg(
            requirements, "max_bytes", DEFAULT_BYTES, MIN_BYTES, MAX_BYTES,
            above=lambda v: TooLarge("context.max_bytes", MAX_BYTES,
                                     f"{field} {v} is over the maximum of {MAX_BYTES}", field=field),
        )
    except InvalidRequest as exc:
        raise InvalidRequest(field, f"'{field}' must be an integer from {MIN_BYTES} to {MAX_BYTES}") from exc


async def op_agent_spawn(c: OpContext, args: dict[str, Any]) -> Reply:
    p, sv = c.principal, c.services
    agent_type = id_arg(args, "agent_type")
    issue_id = id_arg(args, "issue_id")
    task = opt_text_arg(args, "task", MAX_TASK_CHARS)
    context_bytes = _context_bytes(args)
    environment = environment_arg(args)
    project = _project(p, args)  # never "*": an all-projects token names its project
    # the request as it was understood: a repeat of its key must mean the same spawn
    body = {"agent_type": agent_type, "issue_id": issue_id, "task": task, "environment": environment,
            "context_bytes": context_bytes, "project_id": project}
    return await sv.agents.spawn(Spawn(
        project, agent_type, issue_id, task, tuple(environment.items()), spawned_by=p.sub,
        idem=_idem(c, "agent.spawn", body), context_bytes=context_bytes, traceparent=_trace(),
    ))


async def op_agent_status(c: OpContext, args: dict[str, Any]) -> Reply:
    agent_id = id_arg(args, "agent_id")
    return await c.services.agents.status(_project(c.principal, args), agent_id)


async def op_agent_list(c: OpContext, args: dict[str, Any]) -> Reply:
    state = args.get("state")
    if state == "":
        state = None
    if state is not None and state not in STATES:
        raise InvalidRequest("state", f"'state' must be one of {', '.join(STATES)}")
    agents = await c.services.agents.list(
        _project(c.principal, args), state=state, agent_type=opt_id_arg(args, "agent_type"),
        issue_id=opt_id_arg(args, "issue_id"),
    )
    return {"agents": agents}


async def op_agent_logs(c: OpContext, args: dict[str, Any]) -> Reply:
    agent_id = id_arg(args, "agent_id")
    tail = int_arg(args, "tail", 100, 0, MAX_TAIL_LINES)
    return await c.services.agents.logs(_project(c.principal, args), agent_id, tail)


async def op_agent_stop(c: OpContext, args: dict[str, Any]) -> Reply:
    agent_id = id_arg(args, "agent_id")
    grace = opt_seconds_arg(args, "grace_seconds", 0, MAX_STOP_GRACE)
    return await c.services.agents.stop(_project(c.principal, args), agent_id, grace)


async def op_auth_refresh(c: OpContext, args: dict[str, Any]) -> Reply:
    p, sv = c.principal, c.services
    s = c.session
    token = opt_text_arg(args, "token", MAX_TOKEN_CHARS)
    if token is not None:
        fresh = sv.tokens.verify(token)
        if (fresh.sub, fresh.project_id) != (p.sub, p.project_id):
            # switching identity on a live connection is forbidden: answer, then close
            error = ApiError(403, "AUTH_003", "a refreshed token must keep the same sub and project_id")
            error.close_reason = CloseReason.FORBIDDEN
            raise error
    else:
        ttl = max(60.0, p.exp - p.claims.get("iat", p.exp - 3600))
        token = sv.tokens.mint(
            sub=p.sub, agent_type=p.agent_type, project_id=p.project_id, ttl=ttl,
            permissions=sorted(p.permissions - {"admin"}) if "permissions" in p.claims else None,
            admin=p.is_admin, spawned=p.claims.get("spawned") is True,
        )
        fresh = sv.tokens.verify(token)
    await s.refresh(fresh)
    return {"token": token, "expires_at": fresh.exp}


#: where a crash may be armed, by target family (``at``; "now" is every target's)
FAULT_POINTS = {
    "store": ("next_write",),
    "project": ("next_write", "mid_fanout", "during_wait"),
}
#: the kinds of fault: an actor's crash or stall, or the store's disk trouble
FAULT_KINDS = ("crash", "delay", "disk_full", "disk_read_only", "disk_ok")
_DISK_MODES = {"disk_full": "full", "disk_read_only": "read_only", "disk_ok": None}
FAULT_TARGETS = "store, broker, agents, project:<id>, context:<id>, session:<sub> or agent:<agent_id>"


async def op_admin_faults(c: OpContext, args: dict[str, Any]) -> Reply:
    p, sv = c.principal, c.services
    if not sv.limits.fault_injection:
        raise ApiError(404, "NOT_FOUND", "no such route")
    p.require("admin")
    target = id_arg(args, "target")
    kind = id_arg(args, "kind")
    if kind not in FAULT_KINDS:
        raise InvalidRequest("kind", "'kind' must be one of " + ", ".join(f'"{k}"' for k in FAULT_KINDS))
    ms = args.get("ms", 1000)
    if isinstance(ms, bool) or not isinstance(ms, int | float) or not 0 <= ms <= 600_000:
        raise InvalidRequest("ms", "'ms' must be a number of milliseconds from 0 to 600000")
    at = opt_id_arg(args, "at") or "now"
    family = target.split(":", 1)[0]
    if at != "now" and (kind != "crash" or at not in FAULT_POINTS.get(family, ())):
        points = ", ".join(f"{t}: {', '.join(ps)}" for t, ps in FAULT_POINTS.items())
        raise InvalidRequest("at", f"'at' {at!r} cannot be armed for a {kind} of {target!r}: "
                                   f"only crashes, at now or ({points})")
    answer: dict[str, Any] = {"target": target, "kind": kind, "injected": True}
    if "at" in args:
        answer["at"] = at
    if kind in _DISK_MODES:
        if target != "store":
            raise InvalidRequest("target", f"'{kind}' is a fault of the store's disk: target \"store\"")
        sv.disk.set(_DISK_MODES[kind])
        log.warning("fault injected: the store's disk %s", _DISK_MODES[kind] or "healthy again")
        return answer
    ref = sv.fault_target(target)
    if ref is None:
        raise InvalidRequest("target", f"unknown target {target!r} ({FAULT_TARGETS}, running)")
    if at != "now":
        ref.arm_crash(at)
    elif not ref.inject_fault(kind, ms):
        raise ApiError(503, "UNAVAILABLE", f"{target}'s mailbox is full", retry_after_seconds=1)
    log.warning("fault injected: %s %s at %s (%s ms)", target, kind, at, ms)
    return answer


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
        Op("agent.spawn", op_agent_spawn, "spawn_agents", mode="blocking"),
        Op("agent.status", op_agent_status),
        Op("agent.list", op_agent_list),
        Op("agent.logs", op_agent_logs),
        Op("agent.stop", op_agent_stop, "spawn_agents", mode="blocking"),
        Op("auth.refresh", op_auth_refresh, mode="inline", rate_limited=False),
        Op("admin.faults", op_admin_faults, ws=False),
    ]
}
