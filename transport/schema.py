"""The arguments of every operation, declared once (``actors/schema.py`` says how).

Each op's handler reads its Struct (``read(ResultQueryArgs, args)``) and ``openapi.py`` makes
the documents from the same Structs (:data:`OP_ARGS`): the types, required fields and bounds
of ``/openapi.json`` and ``/asyncapi.json`` are these annotations. A field's ``description``
is the end of its error message. Pure.
"""

from __future__ import annotations

from typing import Annotated, ClassVar, Literal

from msgspec import UNSET, Meta, Struct, UnsetType

from ..actors.agents import MAX_TAIL_LINES, STATES
from ..actors.context.engine import MAX_BYTES, MIN_BYTES
from ..actors.errors import InvalidEvent, InvalidRequest, TooLarge
from ..actors.events import CURSOR_WIDTH, MAX_CURSOR, MAX_FILTER_CHARS
from ..actors.records import EventBody, ResultBody
from ..actors.schema import END, Args, EventType, Id, integer, text
from .errors import ApiError

__all__ = [
    "FAULT_KINDS",
    "MAX_BATCH_RESULTS",
    "MAX_ENV_VALUE_CHARS",
    "MAX_ENV_VARS",
    "MAX_Q_CHARS",
    "MAX_SINCE_PROJECTS",
    "MAX_STOP_GRACE",
    "MAX_SUBSCRIBE_LIST",
    "MAX_TASK_CHARS",
    "MAX_TOKEN_CHARS",
    "OP_ARGS",
]

#: Results of one ``result.store_batch``.
MAX_BATCH_RESULTS = 1000
#: Bounds of the free-text arguments (characters); ids are bounded by ``Id``.
MAX_TASK_CHARS = 8192
MAX_Q_CHARS = 1024
MAX_TOKEN_CHARS = 16_384
#: ``event_types`` and ``topics`` of one subscription.
MAX_SUBSCRIBE_LIST = 64
#: ``environment`` of a spawn: variables, and characters of one value.
MAX_ENV_VARS = 64
MAX_ENV_VALUE_CHARS = 4096
#: Projects named in the ``since`` object of one "*" subscription.
MAX_SINCE_PROJECTS = 10_000
#: ``grace_seconds`` of a stop: SIGTERM -> SIGKILL (docs/protocol.md "Bounds")
MAX_STOP_GRACE = 600.0
#: the kinds of fault: an actor's crash or stall, or the store's disk trouble
FAULT_KINDS = ("crash", "delay", "disk_full", "disk_read_only", "disk_ok")

# -- the value types of arguments --

#: An event cursor: digits, as the server returned them (its largest value, 2^63-1, is
#: checked after: ``args.cursor_value``).
Cursor = Annotated[str, Meta(
    pattern=rf"^[0-9]{{1,{CURSOR_WIDTH}}}" + END,
    description=f"an event cursor this server returned (a string of up to {CURSOR_WIDTH} digits, "
                f"at most {MAX_CURSOR})",
)]
#: A ``next_cursor`` of ``result.query`` (decoded after: ``args.decode_page_cursor``).
PageCursor = Annotated[str, Meta(max_length=64, description="a next_cursor this server returned")]
#: A time, normalised after (``records.parse_iso``: the calendar decides).
Time = Annotated[str, Meta(
    max_length=64, extra_json_schema={"format": "date-time"},
    description="an ISO 8601 time from year 0001 to 9999 (UTC), like 2026-01-31T12:00:00Z",
)]
Limit = Annotated[int, integer(1, 1000)]
EnvName = Annotated[str, Meta(
    pattern=r"^(?![Oo][Rr][Cc][Hh][Ee][Ss][Tt][Rr][Aa]_)[A-Za-z_][A-Za-z0-9_]{0,255}" + END,
    description="letters, digits and '_', not starting with a digit or ORCHESTRA_",
)]
EnvValue = Annotated[str, Meta(
    max_length=MAX_ENV_VALUE_CHARS, pattern=r"^[^\x00]*$",
    description=f"a string of at most {MAX_ENV_VALUE_CHARS} characters without NUL",
)]


def _context_too_large(value: int) -> Exception:
    return ApiError(413, "CTX_002", f"max_bytes {value} is over the maximum of {MAX_BYTES}", limit=MAX_BYTES)


def _spawn_context_too_large(value: int) -> Exception:
    field = "context_requirements.max_bytes"
    return TooLarge("context.max_bytes", MAX_BYTES, f"{field} {value} is over the maximum of {MAX_BYTES}",
                    field=field)


# -- the ops' arguments --


class NoArgs(Args, kw_only=True):
    """An op without arguments (``ping``, ``status``)."""


class ProjectArgs(Args, kw_only=True):
    #: the project to act on: the token's if absent (another is a 403)
    project_id: Id | None = None


class ResultBatchArgs(Args, kw_only=True):
    empty_absent: ClassVar[frozenset[str] | None] = frozenset()

    results: Annotated[list[ResultBody], Meta(
        min_length=1, max_length=MAX_BATCH_RESULTS,
        description=f"a list of 1 to {MAX_BATCH_RESULTS} result bodies",
    )]


class ResultGetArgs(ProjectArgs, kw_only=True):
    result_id: Id


class ResultQueryArgs(ProjectArgs, kw_only=True):
    issue_id: Id | None = None
    agent_type: Id | None = None
    agent_id: Id | None = None
    status: Id | None = None
    since: Time | None = None
    until: Time | None = None
    q: Annotated[str, text(MAX_Q_CHARS)] | None = None
    limit: Limit = 50
    cursor: PageCursor | None = None


class EventPublishArgs(EventBody, kw_only=True):
    """An event's type and its body (``EventBody``, refused as an event: EVT_002)."""

    empty_absent: ClassVar[frozenset[str] | None] = frozenset({"project_id"})
    refused_as: ClassVar[type[InvalidRequest] | type[InvalidEvent]] = InvalidEvent

    event_type: EventType
    project_id: Id | None = None


class EventWaitArgs(ProjectArgs, kw_only=True):
    event_type: EventType
    #: the longest is the server's (``wait_max_ms``): checked by the op, stated by the document
    timeout: Annotated[int, integer(0)] | None = None
    filter: Annotated[str, text(MAX_FILTER_CHARS)] | None = None
    since: Cursor | None = None
    limit: Limit = 100


class EventSubscribeArgs(ProjectArgs, kw_only=True):
    #: absent: the agent type's subscriptions; "*" or null: every type
    event_types: Annotated[
        Annotated[list[EventType], Meta(min_length=1, max_length=MAX_SUBSCRIBE_LIST)] | Literal["*"] | None,
        Meta(description=f'a list of 1 to {MAX_SUBSCRIBE_LIST} event types or "*"'),
    ] | UnsetType = UNSET
    topics: Annotated[list[Id], Meta(
        max_length=MAX_SUBSCRIBE_LIST, description=f"a list of at most {MAX_SUBSCRIBE_LIST} ids",
    )] | None = None
    filter: Annotated[str, text(MAX_FILTER_CHARS)] | None = None
    #: one cursor; for a "*" subscription also an object of cursors by project id
    since: Cursor | Annotated[dict[Id, Cursor], Meta(
        max_length=MAX_SINCE_PROJECTS,
        description=f"an object of at most {MAX_SINCE_PROJECTS} event cursors by project id",
    )] | None = None


class EventUnsubscribeArgs(Args, kw_only=True):
    subscription: Id


class ContextGetArgs(ProjectArgs, kw_only=True):
    issue_id: Id
    agent_type: Id | None = None
    task: Annotated[str, text(MAX_TASK_CHARS)] | None = None
    max_bytes: Annotated[int, integer(MIN_BYTES, MAX_BYTES, above=_context_too_large)] | None = None


class CacheClearArgs(ProjectArgs, kw_only=True):
    issue_id: Id


class ContextRequirements(Struct, kw_only=True):
    """What a spawned agent's context file may hold."""

    max_bytes: Annotated[int, integer(MIN_BYTES, MAX_BYTES, above=_spawn_context_too_large)] | None = None


class AgentSpawnArgs(ProjectArgs, kw_only=True):
    agent_type: Id
    issue_id: Id
    task: Annotated[str, text(MAX_TASK_CHARS)] | None = None
    context_requirements: Annotated[ContextRequirements, Meta(description="an object")] | None = None
    #: never ``ORCHESTRA_*``: the server sets those
    environment: Annotated[dict[EnvName, EnvValue], Meta(
        max_length=MAX_ENV_VARS, description=f"an object of at most {MAX_ENV_VARS} variables",
    )] | None = None


class AgentIdArgs(ProjectArgs, kw_only=True):
    agent_id: Id


class AgentListArgs(ProjectArgs, kw_only=True):
    state: Annotated[Literal[STATES], Meta(description="one of " + ", ".join(STATES))] | None = None  # type: ignore[valid-type]
    agent_type: Id | None = None
    issue_id: Id | None = None


class AgentLogsArgs(AgentIdArgs, kw_only=True):
    tail: Annotated[int, integer(0, MAX_TAIL_LINES)] = 100


_GRACE = Meta(ge=0, le=MAX_STOP_GRACE, description=f"a number of seconds from 0 to {MAX_STOP_GRACE:g}")


class AgentStopArgs(AgentIdArgs, kw_only=True):
    grace_seconds: Annotated[float, _GRACE] | None = None


class AuthRefreshArgs(Args, kw_only=True):
    #: a token to switch to (same sub and project); absent: the server mints a fresh one
    token: Annotated[str, text(MAX_TOKEN_CHARS)] | None = None


_MS = Meta(ge=0, le=600_000, description="a number of milliseconds from 0 to 600000")


class AdminFaultsArgs(Args, kw_only=True):
    target: Id
    kind: Annotated[Literal[FAULT_KINDS], Meta(  # type: ignore[valid-type]
        description="one of " + ", ".join(f'"{k}"' for k in FAULT_KINDS))]
    ms: Annotated[int, _MS] | Annotated[float, _MS] = 1000
    #: where a crash is armed (``ops.FAULT_POINTS``); absent: now
    at: Id | None = None


#: Each op's arguments: what its handler reads and what the documents describe.
OP_ARGS: dict[str, type[Struct]] = {
    "ping": NoArgs,
    "status": NoArgs,
    "result.store": ResultBody,
    "result.store_batch": ResultBatchArgs,
    "result.get": ResultGetArgs,
    "result.query": ResultQueryArgs,
    "event.publish": EventPublishArgs,
    "event.wait": EventWaitArgs,
    "event.subscribe": EventSubscribeArgs,
    "event.unsubscribe": EventUnsubscribeArgs,
    "context.get": ContextGetArgs,
    "cache.clear": CacheClearArgs,
    "agent.spawn": AgentSpawnArgs,
    "agent.status": AgentIdArgs,
    "agent.list": AgentListArgs,
    "agent.logs": AgentLogsArgs,
    "agent.stop": AgentStopArgs,
    "auth.refresh": AuthRefreshArgs,
    "admin.faults": AdminFaultsArgs,
}
