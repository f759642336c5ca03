"""Validation of result and event bodies, and the shape of stored records. Pure.

The bodies are :class:`~orchestra.actors.schema.Args` Structs: one definition for the
validation and the API documents (``actors/schema.py``).
"""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from typing import Annotated, Any, ClassVar

from msgspec import UNSET, Meta, Struct, UnsetType

from .errors import InvalidEvent, InvalidRequest
from .schema import (
    EVENT_TYPE_PATTERN,
    ID_PATTERN,
    ID_RULE,
    MAX_ID_CHARS,
    Args,
    EventSide,
    Id,
    read,
)

__all__ = [
    "DEFAULT_TTL_SECONDS",
    "MAX_ID_CHARS",
    "MAX_JSON_DEPTH",
    "MAX_REFERENCES",
    "MAX_ROUND",
    "MAX_TTL_SECONDS",
    "EventBody",
    "ResultBody",
    "ResultStatus",
    "iso_now",
    "iso_time",
    "json_too_deep",
    "parse_iso",
    "validate_event_body",
    "validate_event_type",
    "validate_id",
    "validate_depth",
    "validate_result_body",
]

DEFAULT_TTL_SECONDS = 86_400  # one day
MAX_TTL_SECONDS = 7 * 86_400  # one week
_EVENT_TYPE = re.compile(EVENT_TYPE_PATTERN)
_EVENT_TYPE_RULE = "1-128 characters of letters, digits, '_', '.', ':' or '-'"
#: Default bound on JSON nesting, the body or frame object counting as level 1: far below the
#: 254 levels orjson encodes, so whatever is accepted can be wrapped (record, event, frame) and
#: encoded again.
MAX_JSON_DEPTH = 64
#: ``round`` is an integer every JSON reader represents exactly (±2^53).
MAX_ROUND = 2**53
MAX_REFERENCES = 100
_TTL = Meta(gt=0, le=MAX_TTL_SECONDS, description=f"a number > 0 and <= {MAX_TTL_SECONDS}")
_ID = re.compile(ID_PATTERN)


def validate_id(field: str, value: Any, error: type[InvalidRequest] | type[InvalidEvent] = InvalidRequest) -> str:
    """``value`` if it is an id (:data:`~orchestra.actors.schema.Id`: the same pattern and
    bounds); else ``error`` naming ``field``. For ids read outside a Struct (a path segment,
    a token's claim)."""
    if not isinstance(value, str) or not 0 < len(value) <= MAX_ID_CHARS or _ID.search(value) is None:
        raise error(field, f"'{field}' must be {ID_RULE}")
    return value


def json_too_deep(value: Any, limit: int) -> str | None:
    """Where ``value`` (parsed JSON, itself level 1) nests containers deeper than ``limit``
    levels: the top-level key (or ``"[i]"``) holding the too deep part; None if it does not.

    Iterative and only containers are kept on the stack; no recursion, so any depth is safe.
    """
    if not isinstance(value, dict | list):
        return None
    if limit < 1:
        return "body"
    tops = value.items() if isinstance(value, dict) else ((f"[{i}]", v) for i, v in enumerate(value))
    for top, child in tops:
        if type(child) is not dict and type(child) is not list:
            continue
        stack: list[tuple[Any, int]] = [(child, 2)]
        pop, push = stack.pop, stack.append
        while stack:
            node, depth = pop()
            if depth > limit:
                return str(top)
            below = depth + 1
            for item in (node.values() if type(node) is dict else node):
                if type(item) is dict or type(item) is list:
                    push((item, below))
    return None


_SECONDS: dict[int, str] = {}


def iso_time(epoch: float) -> str:
    """UTC, microseconds, 'Z': fixed width, so string order is time order.

    On the hot path of every result and event: formatted seconds are reused (a small cache of
    a pure function; "now" and "now + ttl" alternate, so it keeps a few).
    """
    second = int(epoch)
    micros = int(round((epoch - second) * 1_000_000))
    if micros >= 1_000_000:
        second, micros = second + 1, micros - 1_000_000
    prefix = _SECONDS.get(second)
    if prefix is None:
        if len(_SECONDS) >= 64:
            _SECONDS.clear()
        prefix = _SECONDS[second] = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
    return f"{prefix}.{micros:06d}Z"


def iso_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def validate_depth(raw: str | bytes, value: Any, limit: int) -> None:
    """InvalidRequest naming the top-level field (or ``"body"``) of ``value``, parsed from
    ``raw``, that nests deeper than ``limit`` levels (``value`` itself is level 1).

    Cheap for ordinary input: nesting needs an opening bracket per level, so a text with at
    most ``limit`` of them is not walked at all.
    """
    opens = raw.count(b"{") + raw.count(b"[") if isinstance(raw, bytes) else raw.count("{") + raw.count("[")
    if opens <= limit:
        return
    where = json_too_deep(value, limit)
    if where is not None:
        raise InvalidRequest(where, f"'{where}' is nested deeper than {limit} levels (the whole body counts as 1)")


def parse_iso(field: str, text: Any) -> str:
    """Normalise an ISO 8601 time to the stored form (UTC, fixed width, so string order is
    time order); InvalidRequest naming ``field`` for anything else, including times outside
    the years 0001-9999 once converted to UTC."""
    try:
        if not isinstance(text, str) or len(text) > 64:
            raise ValueError
        value = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        value = value.astimezone(UTC)
    except (ValueError, OverflowError):
        raise InvalidRequest(
            field, f"{field} must be an ISO 8601 time from year 0001 to 9999 (UTC), like 2026-01-31T12:00:00Z"
        ) from None
    # by hand: strftime's %Y does not pad years before 1000
    return (f"{value.year:04d}-{value.month:02d}-{value.day:02d}T{value.hour:02d}:{value.minute:02d}:"
            f"{value.second:02d}.{value.microsecond:06d}Z")


class ResultStatus(Struct):
    """A result's ``result``: any object with a ``status`` (its other fields are kept as sent)."""

    status: Id


class ResultBody(Args, kw_only=True):
    """A result as ``result.store`` takes it (and each of a ``result.store_batch``); fields
    beyond these are kept as sent. A ``project_id`` that differs from the token's is not
    refused here (it is a 403, decided by the caller)."""

    empty_absent: ClassVar[frozenset[str] | None] = frozenset()

    agent_id: Id
    agent_type: Id
    issue_id: Id
    result: Annotated[ResultStatus, Meta(description="an object with a string 'status'")]
    project_id: Id | None = None
    timestamp: Annotated[str, Meta(
        max_length=64, description="a string (ISO 8601) of at most 64 characters",
    )] | UnsetType = UNSET


def validate_result_body(body: Any, token_project: str) -> dict[str, Any]:
    """``body`` if it is a result (:class:`ResultBody`); raises InvalidRequest naming the bad
    field. The body is stored as sent, so it is returned itself."""
    read(ResultBody, body)
    return body  # type: ignore[no-any-return]


class EventBody(Args, kw_only=True):
    """The publishable part of an event (``event.publish`` without its type and project); a
    refusal of any of these fields is an invalid event (EVT_002)."""

    empty_absent: ClassVar[frozenset[str] | None] = frozenset()
    refused_as: ClassVar[type[InvalidRequest] | type[InvalidEvent]] = InvalidEvent

    topic: Annotated[Id | None, EventSide] = None
    correlation_id: Annotated[Id | None, EventSide] = None
    data: Annotated[dict[str, Any] | None, EventSide, Meta(description="an object")] = None
    ttl_seconds: Annotated[
        Annotated[int, _TTL] | Annotated[float, _TTL], EventSide, Meta(description=_TTL.description),
    ] = DEFAULT_TTL_SECONDS
    round: Annotated[int, EventSide, Meta(
        ge=-MAX_ROUND, le=MAX_ROUND, description=f"an integer from -{MAX_ROUND} to {MAX_ROUND}",
    )] | None = None
    references: Annotated[list[Id], EventSide, Meta(
        max_length=MAX_REFERENCES, description=f"a list of at most {MAX_REFERENCES} ids",
    )] | None = None

    def publishable(self) -> dict[str, Any]:
        """The body a project publishes."""
        return {"topic": self.topic, "correlation_id": self.correlation_id, "data": self.data or {},
                "ttl_seconds": self.ttl_seconds, "round": self.round, "references": self.references or []}


def validate_event_type(event_type: Any) -> str:
    """``event_type`` if it is one (:data:`EventType`); else InvalidEvent."""
    if not isinstance(event_type, str) or _EVENT_TYPE.search(event_type) is None:
        raise InvalidEvent("event_type", f"'event_type' must be {_EVENT_TYPE_RULE}")
    return event_type


def validate_event_body(body: Any) -> dict[str, Any]:
    """The publishable part of an event body (:class:`EventBody`); raises InvalidEvent naming
    the bad field."""
    return read(EventBody, {} if body is None else body).publishable()
