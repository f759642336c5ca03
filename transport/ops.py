"""The operations: one handler per operation, and the table that both transports serve.

Each handler takes the Api, the verified :class:`Principal`, a dict of arguments (from the
path, query and body on HTTP; from the frame on WebSocket) and a :class:`Ctx`, and returns a
dict, or bytes already encoded as JSON.
"""

from __future__ import annotations

import base64
import logging
import re
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import orjson
import trio

from ..actors.broker import SubscribeAll, UnsubscribeAll
from ..actors.context.engine import DEFAULT_BYTES, MAX_BYTES, MIN_BYTES
from ..actors.context_actor import ClearContext, ContextGet
from ..actors.errors import Forbidden, InvalidRequest, NotFound, OutcomeUnknown
from ..actors.events import MAX_CURSOR, MAX_FILTER_CHARS, EventFilter, decode_cursor
from ..actors.idempotency import IdemKey, fingerprint, validate_key
from ..actors.principal import Principal
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
from ..actors.session import CLOSE_FORBIDDEN, Session, SetExpiry
from ..actors.store import QueryResults
from .errors import ApiError

if TYPE_CHECKING:
    from .api import Api

__all__ = ["OPS", "Ctx", "Op", "Reply"]

log = logging.getLogger("orchestra")

Reply = dict[str, Any] | bytes | None

Handler = Callable[["Api", Principal, dict[str, Any], "Ctx"], Awaitable[Reply]]


@dataclass(frozen=True, slots=True)
class Ctx:
    """What an operation knows of its request beyond its arguments."""

    request_id: str
    session: Session | None = None  # WebSocket only
    reply_id: Any = None  # the WebSocket request's "id"
    #: the ``Idempotency-Key`` header (HTTP) or the request's ``idempotency_key`` (WebSocket)
    idempotency_key: Any = None
    #: Called once the answer was written to the client (HTTP: after the response's bytes
    #: were handed to the socket; WebSocket: after the session's writer wrote the frame).
    #: Never called for an answer that was not written. Must not block.
    on_sent: list[Callable[[], None]] = field(default_factory=list)


@dataclass(frozen=True)
class Op:
    name: str
    handler: Handler
    permission: str | None = None  # None: any valid token of the project
    #: how a WebSocket session runs it: "inline", "pooled" or "blocking"
    mode: str = "pooled"
    rate_limited: bool = True
    ws: bool = True


#: Bounds of the free-text arguments (characters); ids are bounded by ``validate_id``.
MAX_TASK_CHARS = 8192
MAX_Q_CHARS = 1024
MAX_TOKEN_CHARS = 16_384
#: ``event_types`` and ``topics`` of one subscription.
MAX_SUBSCRIBE_LIST = 64
#: ``environment`` of a spawn: variables, and characters of one value.
MAX_ENV_VARS = 64
MAX_ENV_VALUE_CHARS = 4096
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,255}")
# free text may hold tabs and line breaks, never other control characters
_TEXT_CONTROL = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]")
_DECIMAL = re.compile(r"-?[0-9]{1,18}")
_PAGE_CURSOR = re.compile(r"r1:([1-9][0-9]{0,18})")


def _id_arg(args: dict[str, Any], key: str) -> str:
    """A required id argument (see ``validate_id``)."""
    value = args.get(key)
    if value is None or value == "":
        raise InvalidRequest(key, f"missing '{key}' (a string)")
    return validate_id(key, value)


def _opt_id_arg(args: dict[str, Any], key: str) -> str | None:
    """An optional id argument; absent or empty is None."""
    value = args.get(key)
    if value is None or value == "":
        return None
    return validate_id(key, value)


def _opt_text_arg(args: dict[str, Any], key: str, max_chars: int) -> str | None:
    """Optional free text of at most ``max_chars`` characters (tabs and line breaks allowed);
    absent or empty is None."""
    value = args.get(key)
    if value is None or value == "":
        return None
    if not isinstance(value, str) or len(value) > max_chars or _TEXT_CONTROL.search(value) is not None:
        raise InvalidRequest(
            key, f"'{key}' must be a string of at most {max_chars} characters without control characters"
        )
    return value


def _int_arg(
    args: dict[str, Any], key: str, default: int, lo: int, hi: int,
    above: Callable[[int], Exception] | None = None,
) -> int:
    """An integer argument from ``lo`` to ``hi`` (a JSON integer, or decimal digits in a query);
    ``above`` makes the error for a value over ``hi``."""
    value = args.get(key)
    if value is None or value == "":
        return default
    if isinstance(value, str):
        if _DECIMAL.fullmatch(value) is None:
            raise InvalidRequest(key, f"'{key}' must be an integer from {lo} to {hi}")
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or value < lo:
        raise InvalidRequest(key, f"'{key}' must be an integer from {lo} to {hi}")
    if value > hi:
        raise above(value) if above is not None else InvalidRequest(
            key, f"'{key}' must be an integer from {lo} to {hi}"
        )
    return value


def _project(p: Principal, args: dict[str, Any]) -> str:
    """The project a request acts on: the token's, or the one it names (403 if another)."""
    return p.project_for(_opt_id_arg(args, "project_id"))


def _cursor_arg(args: dict[str, Any], key: str) -> int | None:
    value = args.get(key)
    if value is None or value == "":
        return None
    try:
        seq = decode_cursor(value)
    except ValueError as exc:
        raise InvalidRequest(key, f"'{key}': {exc}") from None
    if seq > MAX_CURSOR:
        raise InvalidRequest(key, f"'{key}': a cursor is at most {MAX_CURSOR}")
    return seq


def _encode_page_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(f"r1:{seq}".encode()).decode().rstrip("=")


def _decode_page_cursor(value: Any) -> int | None:
    """The position a ``cursor`` argument names (1 to 2^63-1: the store's integers); None if absent."""
    if value is None or value == "":
        return None
    try:
        if not isinstance(value, str) or len(value) > 64:
            raise ValueError
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode("ascii")
        match = _PAGE_CURSOR.fullmatch(raw)
        if match is None or int(match.group(1)) > MAX_CURSOR:
            raise ValueError
        return int(match.group(1))
    except (ValueError, UnicodeDecodeError):  # binascii.Error is a ValueError
        raise InvalidRequest("cursor", "'cursor' is not a cursor this server returned") from None


def _idem(c: Ctx, p: Principal, op: str, body: Any) -> IdemKey | None:
    """The request's idempotency key, scoped to the token's ``sub``; None without one."""
    if c.idempotency_key is None:
        return None
    return IdemKey(p.sub, validate_key(c.idempotency_key), fingerprint(op, body))


async def _write(api: Api, project: str, msg: Any) -> Any:
    """Send a write to its project. Once it was handed over, a failure of the project actor
    (crash, stop, timeout) leaves its outcome unknown, and the answer says so."""
    ref = await api.project(project)
    try:
        return await ref.call(msg, timeout=api.config.call_timeout)
    except ActorError as exc:
        raise OutcomeUnknown(
            f"the project stopped answering while it held this write ({exc}): it may or may not "
            "be stored; retry with the same idempotency key to get its original answer"
        ) from exc


# -- operations --


async def op_ping(api: Api, p: Principal, args: dict[str, Any], c: Ctx) -> Reply:
    return b'{"pong":true}'


async def op_status(api: Api, p: Principal, args: dict[str, Any], c: Ctx) -> Reply:
    return await api.status(p)


async def op_result_store(api: Api, p: Principal, args: dict[str, Any], c: Ctx) -> Reply:
    body = validate_result_body(args, p.project_id)
    project = p.project_for(body.get("project_id"))
    reply = await _write(api, project, StoreResult(body, _idem(c, p, "result.store", body)))
    if not isinstance(reply, bytes):  # bytes: a repeat answered with the original answer
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
    reply = await _write(api, project, StoreResults(tuple(bodies), _idem(c, p, "result.store_batch", bodies)))
    if not isinstance(reply, bytes):
        api.results_stored += len(bodies)
        api.events_published += len(bodies)
    return reply  # type: ignore[no-any-return]


async def op_result_get(api: Api, p: Principal, args: dict[str, Any], c: Ctx) -> Reply:
    result_id = _id_arg(args, "result_id")
    project = _project(p, args)
    ref = await api.project(project)
    table = ref.view  # the project's table of recent records: no mailbox round trip
    if table is not None:
        record = table.peek(result_id)  # a reader: never reorders the owner's table
        if record is not None:
            return record  # type: ignore[no-any-return]
    return await ref.call(GetResult(result_id), timeout=api.config.call_timeout)  # type: ignore[no-any-return]


async def op_result_query(api: Api, p: Principal, args: dict[str, Any], c: Ctx) -> Reply:
    requested = _opt_id_arg(args, "project_id")
    if p.project_id == "*" and p.is_admin and requested in (None, "*"):
        project = None
    else:
        project = p.project_for(requested)
    limit = _int_arg(args, "limit", 50, 1, 1000)
    q = QueryResults(
        project_id=project,
        issue_id=_opt_id_arg(args, "issue_id"),
        agent_type=_opt_id_arg(args, "agent_type"),
        agent_id=_opt_id_arg(args, "agent_id"),
        status=_opt_id_arg(args, "status"),
        since=parse_iso("since", args["since"]) if args.get("since") else None,
        until=parse_iso("until", args["until"]) if args.get("until") else None,
        q=_opt_text_arg(args, "q", MAX_Q_CHARS),
        limit=limit + 1,
        before_seq=_decode_page_cursor(args.get("cursor")),
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
    project = _project(p, args)
    idem = _idem(c, p, "event.publish", {"event_type": event_type, **body})
    reply = await _write(api, project, Publish(event_type, body, p.sub, p.agent_type, idem))
    if not isinstance(reply, bytes):
        api.events_published += 1
    return reply  # type: ignore[no-any-return]


async def op_event_wait(api: Api, p: Principal, args: dict[str, Any], c: Ctx) -> Reply:
    event_type = validate_event_type(args.get("event_type"))
    timeout_ms = _int_arg(args, "timeout", api.config.wait_default_ms, 0, api.config.wait_max_ms)
    flt = EventFilter.parse(_opt_text_arg(args, "filter", MAX_FILTER_CHARS))
    since = _cursor_arg(args, "since")
    limit = _int_arg(args, "limit", 100, 1, 1000)
    project = _project(p, args)
    ref = await api.project(project)
    answer: WaitAnswer = await ref.call(
        Wait(p.sub, event_type, flt, since, limit, timeout_ms / 1000),
        timeout=timeout_ms / 1000 + api.config.call_timeout,
    )
    confirm = answer.confirm
    if confirm is not None:
        # the position moves only once the answer reached the client
        c.on_sent.append(lambda: ref.try_cast(confirm))
    return answer.reply


async def op_event_subscribe(api: Api, p: Principal, args: dict[str, Any], c: Ctx) -> Reply:
    s = c.session
    assert s is not None
    default = list(api.auth.profiles.get(p.agent_type).event_subscriptions) or "*"
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
    flt = EventFilter.parse(_opt_text_arg(args, "filter", MAX_FILTER_CHARS))
    requested = _opt_id_arg(args, "project_id")
    topic_set = frozenset(topics) if topics is not None else None
    if requested == "*" or (requested is None and p.project_id == "*"):
        if not (p.is_admin and p.project_id == "*"):
            raise Forbidden("only an admin token for every project may subscribe to '*'")
        # every project, present and future: the broker keeps it and attaches it to each
        reply: dict[str, Any] = await api.system.broker.call(
            SubscribeAll(s, event_types, topic_set, flt, _since_map(args)),
            timeout=api.config.call_timeout,
        )
        s.global_subscriptions.add(reply["global_subscription"])
        s.watch_broker(api.system.broker)
        return reply
    since = _cursor_arg(args, "since")
    project = p.project_for(requested)
    ref = await api.project(project)
    reply = await ref.call(
        Subscribe(s, event_types, topic_set, flt, since, reply_id=c.reply_id),
        timeout=api.config.call_timeout,
    )
    s.subscriptions[reply["subscription"]] = ref
    s.watch(project, ref)
    return None  # answered by the project, before its replay


MAX_SINCE_PROJECTS = 10_000


def _since_map(args: dict[str, Any]) -> int | dict[str, int] | None:
    """``since`` of a "*" subscription: one cursor, or an object of cursors by project id."""
    since = args.get("since")
    if not isinstance(since, dict):
        return _cursor_arg(args, "since")
    if len(since) > MAX_SINCE_PROJECTS:
        raise InvalidRequest("since", f"'since' names more than {MAX_SINCE_PROJECTS} projects")
    out = {}
    for project, cursor in since.items():
        validate_id("since", project)
        try:
            out[project] = decode_cursor(cursor)
        except (ValueError, TypeError):
            raise InvalidRequest("since", f"'since.{project[:64]}' is not a cursor") from None
        if out[project] > MAX_CURSOR:
            raise InvalidRequest("since", f"'since.{project[:64]}': a cursor is at most {MAX_CURSOR}")
    return out


async def op_event_unsubscribe(api: Api, p: Principal, args: dict[str, Any], c: Ctx) -> Reply:
    s = c.session
    assert s is not None
    sid = _id_arg(args, "subscription")
    if sid in s.global_subscriptions:
        await api.system.broker.call(UnsubscribeAll(s.key, sid), timeout=api.config.call_timeout)
        s.global_subscriptions.discard(sid)
        return {}
    ref = s.subscriptions.pop(sid, None)
    if ref is None:
        raise NotFound(f"no subscription {sid!r} on this connection")
    await ref.call(Unsubscribe(s.key, sid), timeout=api.config.call_timeout)
    s.delivered.pop(sid, None)
    return {}


async def op_context_get(api: Api, p: Principal, args: dict[str, Any], c: Ctx) -> Reply:
    issue_id = _id_arg(args, "issue_id")
    agent_type = _opt_id_arg(args, "agent_type") or p.agent_type
    task = _opt_text_arg(args, "task", MAX_TASK_CHARS) or ""
    max_bytes = _int_arg(
        args, "max_bytes", DEFAULT_BYTES, MIN_BYTES, MAX_BYTES,
        above=lambda v: ApiError(413, "CTX_002", f"max_bytes {v} is over the maximum of {MAX_BYTES}", limit=MAX_BYTES),
    )
    project = _project(p, args)
    ref = await api.system.context(project)
    return await ref.call(  # type: ignore[no-any-return]
        ContextGet(issue_id, agent_type, task, max_bytes), timeout=api.config.call_timeout * 2
    )


async def op_cache_clear(api: Api, p: Principal, args: dict[str, Any], c: Ctx) -> Reply:
    issue_id = _id_arg(args, "issue_id")
    project = _project(p, args)
    ref = await api.system.context(project)
    return await ref.call(ClearContext(issue_id), timeout=api.config.call_timeout)  # type: ignore[no-any-return]


def _environment_arg(args: dict[str, Any]) -> dict[str, str]:
    """A spawn's ``environment``: names of letters, digits and ``_``, never ``ORCHESTRA_*``
    (the server sets those); values strings without NUL."""
    env = args.get("environment")
    if env is None:
        return {}
    if not isinstance(env, dict) or len(env) > MAX_ENV_VARS:
        raise InvalidRequest("environment", f"'environment' must be an object of at most {MAX_ENV_VARS} variables")
    for name, value in env.items():
        if _ENV_NAME.fullmatch(name) is None or name.upper().startswith("ORCHESTRA_"):
            raise InvalidRequest(
                "environment", f"environment variable names are letters, digits and '_', "
                f"not starting with a digit or ORCHESTRA_; got {name[:64]!r}",
            )
        if not isinstance(value, str) or len(value) > MAX_ENV_VALUE_CHARS or "\x00" in value:
            raise InvalidRequest(
                f"environment.{name}", f"'environment.{name}' must be a string of at most "
                f"{MAX_ENV_VALUE_CHARS} characters without NUL",
            )
    return env


async def op_agent_spawn(api: Api, p: Principal, args: dict[str, Any], c: Ctx) -> Reply:
    agent_type = _id_arg(args, "agent_type")
    _id_arg(args, "issue_id")
    _opt_text_arg(args, "task", MAX_TASK_CHARS)
    requirements = args.get("context_requirements")
    if requirements is not None and not isinstance(requirements, dict):
        raise InvalidRequest("context_requirements", "'context_requirements' must be an object")
    _environment_arg(args)
    _project(p, args)
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
    agent_id = _id_arg(args, "agent_id")
    raise NotFound(f"no spawned agent {agent_id!r} in this project")


async def op_auth_refresh(api: Api, p: Principal, args: dict[str, Any], c: Ctx) -> Reply:
    s = c.session
    assert s is not None
    token = _opt_text_arg(args, "token", MAX_TOKEN_CHARS)
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
    s.principal = fresh
    s.claims = fresh.claims
    await s.ref.cast(SetExpiry(trio.current_time() + (fresh.exp - time.time())))
    return {"token": token, "expires_at": fresh.exp}


async def op_admin_faults(api: Api, p: Principal, args: dict[str, Any], c: Ctx) -> Reply:
    if not api.config.fault_injection:
        raise ApiError(404, "NOT_FOUND", "no such route")
    p.require("admin")
    target = _id_arg(args, "target")
    kind = _id_arg(args, "kind")
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
