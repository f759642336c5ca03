"""The operations: one handler per operation, and the table that both transports serve.

A handler sees little: its arguments (a dict from the path, query and body on HTTP; from the
frame on WebSocket; read into the op's Struct of ``transport/schema.py``, the definition the
API documents are made from too) and an :class:`OpContext` holding the
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
from msgspec import UNSET

from ..actors.agents import Spawn
from ..actors.broker import SubscribeAll, UnsubscribeAll
from ..actors.context.engine import DEFAULT_BYTES
from ..actors.context_actor import ClearContext, ContextGet
from ..actors.errors import Forbidden, InvalidRequest, NotFound, OutcomeUnknown
from ..actors.events import EventFilter
from ..actors.idempotency import IdemKey, fingerprint, validate_key
from ..actors.principal import ALL_PROJECTS
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
from ..actors.records import ResultBody, parse_iso
from ..actors.runtime import ActorError
from ..actors.schema import read
from ..actors.session import CloseReason
from ..actors.store import QueryResults
from .args import cursor_value, decode_page_cursor, encode_page_cursor, since_values
from .errors import ApiError
from .observability import current_scope
from .schema import (
    AdminFaultsArgs,
    AgentIdArgs,
    AgentListArgs,
    AgentLogsArgs,
    AgentSpawnArgs,
    AgentStopArgs,
    AuthRefreshArgs,
    CacheClearArgs,
    ContextGetArgs,
    EventPublishArgs,
    EventSubscribeArgs,
    EventUnsubscribeArgs,
    EventWaitArgs,
    ResultBatchArgs,
    ResultGetArgs,
    ResultQueryArgs,
)
from .services import Ctx, Handler, Op, OpContext, OpLimits, Reply, Services, Tokens

__all__ = ["OPS", "Ctx", "Handler", "Op", "OpContext", "OpLimits", "Reply", "Services", "Tokens"]

log = logging.getLogger("orchestra")

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
    project = c.principal.project_for(read(ResultBody, args).project_id)
    return await _write(c, project, StoreResult(args, _idem(c, "result.store", args), _trace()))


async def op_result_store_batch(c: OpContext, args: dict[str, Any]) -> Reply:
    p = c.principal
    batch = read(ResultBatchArgs, args)
    bodies: list[dict[str, Any]] = args["results"]  # stored as sent: fields beyond ResultBody kept
    project = None
    for i, body in enumerate(batch.results):
        this = p.project_for(body.project_id)
        if project is not None and this != project:
            raise InvalidRequest(f"results[{i}].project_id", "all results of a batch belong to one project")
        project = this
    assert project is not None
    return await _write(c, project, StoreResults(tuple(bodies), _idem(c, "result.store_batch", bodies), _trace()))


async def op_result_get(c: OpContext, args: dict[str, Any]) -> Reply:
    sv = c.services
    a = read(ResultGetArgs, args)
    result_id = a.result_id
    ref = await sv.project(c.principal.project_for(a.project_id))
    table = ref.view  # the project's table of recent records: no mailbox round trip
    if table is not None:
        record: bytes | None = table.peek(result_id)  # a reader: never reorders the owner's table
        if record is not None:
            return record
    found: bytes = await ref.call(GetResult(result_id), timeout=sv.limits.call_timeout)
    return found


async def op_result_query(c: OpContext, args: dict[str, Any]) -> Reply:
    p, sv = c.principal, c.services
    a = read(ResultQueryArgs, args)
    if p.project_id == ALL_PROJECTS and p.is_admin and a.project_id in (None, ALL_PROJECTS):
        project = None
    else:
        project = p.project_for(a.project_id)
    limit = a.limit
    q = QueryResults(
        project_id=project,
        issue_id=a.issue_id,
        agent_type=a.agent_type,
        agent_id=a.agent_id,
        status=a.status,
        since=parse_iso("since", a.since) if a.since is not None else None,
        until=parse_iso("until", a.until) if a.until is not None else None,
        q=a.q,
        limit=limit + 1,
        before_seq=decode_page_cursor(a.cursor),
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
    a = read(EventPublishArgs, args)
    event_type = a.event_type
    body = a.publishable()
    project = p.project_for(a.project_id)
    idem = _idem(c, "event.publish", {"event_type": event_type, **body})
    return await _write(c, project, Publish(event_type, body, p.sub, p.agent_type, idem, _trace()))


async def op_event_wait(c: OpContext, args: dict[str, Any]) -> Reply:
    p, sv = c.principal, c.services
    a = read(EventWaitArgs, args)
    timeout_ms = sv.limits.wait_default_ms if a.timeout is None else a.timeout
    if timeout_ms > sv.limits.wait_max_ms:  # the server's bound: the document states the same
        raise InvalidRequest("timeout", f"'timeout' must be an integer from 0 to {sv.limits.wait_max_ms}")
    flt = EventFilter.parse(a.filter)
    since = cursor_value("since", a.since)
    ref = await sv.project(p.project_for(a.project_id))
    answer: WaitAnswer = await ref.call(
        Wait(p.sub, a.event_type, flt, since, a.limit, timeout_ms / 1000),
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
    a = read(EventSubscribeArgs, args)
    types = a.event_types
    if types is UNSET:
        types = list(sv.profiles.get(p.agent_type).event_subscriptions) or "*"
    event_types = None if types == "*" or types is None else frozenset(types)
    flt = EventFilter.parse(a.filter)
    requested = a.project_id
    topic_set = frozenset(a.topics) if a.topics is not None else None
    if requested == ALL_PROJECTS or (requested is None and p.project_id == ALL_PROJECTS):
        if not (p.is_admin and p.project_id == ALL_PROJECTS):
            raise Forbidden("only an admin token for every project may subscribe to '*'")
        # every project, present and future: the broker keeps it and attaches it to each
        reply: dict[str, Any] = await sv.broker.call(
            SubscribeAll(s, event_types, topic_set, flt, since_values(a.since)),
            timeout=sv.limits.call_timeout,
        )
        s.add_global(reply["global_subscription"], sv.broker)
        return reply
    if isinstance(a.since, dict):
        raise InvalidRequest("since", "'since' is one cursor: cursors by project are for a \"*\" subscription")
    since = cursor_value("since", a.since)
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
    sid = read(EventUnsubscribeArgs, args).subscription
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
    a = read(ContextGetArgs, args)
    max_bytes = DEFAULT_BYTES if a.max_bytes is None else a.max_bytes
    ref = await sv.context(p.project_for(a.project_id))
    answer: Reply = await ref.call(
        ContextGet(a.issue_id, a.agent_type or p.agent_type, a.task or "", max_bytes),
        timeout=sv.limits.call_timeout * 2,
    )
    return answer


async def op_cache_clear(c: OpContext, args: dict[str, Any]) -> Reply:
    sv = c.services
    a = read(CacheClearArgs, args)
    ref = await sv.context(c.principal.project_for(a.project_id))
    cleared: Reply = await ref.call(ClearContext(a.issue_id), timeout=sv.limits.call_timeout)
    return cleared


async def op_agent_spawn(c: OpContext, args: dict[str, Any]) -> Reply:
    p, sv = c.principal, c.services
    a = read(AgentSpawnArgs, args)
    agent_type, issue_id, task = a.agent_type, a.issue_id, a.task
    context_bytes = a.context_requirements.max_bytes if a.context_requirements is not None else None
    environment = a.environment or {}
    project = p.project_for(a.project_id)  # never "*": an all-projects token names its project
    # the request as it was understood: a repeat of its key must mean the same spawn
    body = {"agent_type": agent_type, "issue_id": issue_id, "task": task, "environment": environment,
            "context_bytes": context_bytes, "project_id": project}
    return await sv.agents.spawn(Spawn(
        project, agent_type, issue_id, task, tuple(environment.items()), spawned_by=p.sub,
        idem=_idem(c, "agent.spawn", body), context_bytes=context_bytes, traceparent=_trace(),
    ))


async def op_agent_status(c: OpContext, args: dict[str, Any]) -> Reply:
    a = read(AgentIdArgs, args)
    return await c.services.agents.status(c.principal.project_for(a.project_id), a.agent_id)


async def op_agent_list(c: OpContext, args: dict[str, Any]) -> Reply:
    a = read(AgentListArgs, args)
    agents = await c.services.agents.list(
        c.principal.project_for(a.project_id), state=a.state, agent_type=a.agent_type, issue_id=a.issue_id,
    )
    return {"agents": agents}


async def op_agent_logs(c: OpContext, args: dict[str, Any]) -> Reply:
    a = read(AgentLogsArgs, args)
    return await c.services.agents.logs(c.principal.project_for(a.project_id), a.agent_id, a.tail)


async def op_agent_stop(c: OpContext, args: dict[str, Any]) -> Reply:
    a = read(AgentStopArgs, args)
    return await c.services.agents.stop(c.principal.project_for(a.project_id), a.agent_id, a.grace_seconds)


async def op_auth_refresh(c: OpContext, args: dict[str, Any]) -> Reply:
    p, sv = c.principal, c.services
    s = c.session
    token = read(AuthRefreshArgs, args).token
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
_DISK_MODES = {"disk_full": "full", "disk_read_only": "read_only", "disk_ok": None}
FAULT_TARGETS = "store, broker, agents, project:<id>, context:<id>, session:<sub> or agent:<agent_id>"


async def op_admin_faults(c: OpContext, args: dict[str, Any]) -> Reply:
    p, sv = c.principal, c.services
    if not sv.limits.fault_injection:
        raise ApiError(404, "NOT_FOUND", "no such route")
    p.require("admin")
    a = read(AdminFaultsArgs, args)
    target, kind, ms = a.target, a.kind, a.ms
    at = a.at or "now"
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
