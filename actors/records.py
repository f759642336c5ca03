"""Validation of result and event bodies, and the shape of stored records. Pure."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from typing import Any

from .errors import InvalidEvent, InvalidRequest

__all__ = [
    "DEFAULT_TTL_SECONDS",
    "MAX_ID_CHARS",
    "MAX_JSON_DEPTH",
    "MAX_REFERENCES",
    "MAX_ROUND",
    "MAX_TTL_SECONDS",
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
_EVENT_TYPE = re.compile(r"[A-Za-z0-9_.:\-]{1,128}")
#: An id (issue, agent, agent type, result, project, subscription, correlation) or a topic.
MAX_ID_CHARS = 256
#: Default bound on JSON nesting, the body or frame object counting as level 1: far below the
#: 254 levels orjson encodes, so whatever is accepted can be wrapped (record, event, frame) and
#: encoded again.
MAX_JSON_DEPTH = 64
#: ``round`` is an integer every JSON reader represents exactly (±2^53).
MAX_ROUND = 2**53
MAX_REFERENCES = 100
_CONTROL = re.compile("[\x00-\x1f\x7f-\x9f]")


def validate_id(field: str, value: Any, error: type[InvalidRequest] | type[InvalidEvent] = InvalidRequest) -> str:
    """``value`` if it is an id: a string of 1 to 256 characters, no control character (C0
    with NUL, DEL, C1), not only whitespace. Else ``error`` naming ``field``."""
    if (
        not isinstance(value, str) or not value or len(value) > MAX_ID_CHARS
        or _CONTROL.search(value) is not None or value.isspace()
    ):
        raise error(
            field,
            f"'{field}' must be a string of 1 to {MAX_ID_CHARS} characters, without control "
            "characters and not only whitespace",
        )
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


def _string(body: dict[str, Any], key: str, *, required: bool = True) -> str | None:
    value = body.get(key)
    if value is None:
        if required:
            raise InvalidRequest(key, f"missing field '{key}' (a non-empty string)")
        return None
    return validate_id(key, value)


def validate_result_body(body: Any, token_project: str) -> dict[str, Any]:
    """A result body as the protocol defines it; raises InvalidRequest naming the bad field.

    A ``project_id`` that differs from the token's is not checked here (it is a 403, decided
    by the caller).
    """
    if not isinstance(body, dict):
        raise InvalidRequest("body", "the request body must be a JSON object")
    for key in ("agent_id", "agent_type", "issue_id"):
        _string(body, key)
    _string(body, "project_id", required=False)
    result = body.get("result")
    if not isinstance(result, dict):
        raise InvalidRequest("result", "field 'result' must be an object with a string 'status'")
    status = result.get("status")
    if not isinstance(status, str) or not status:
        raise InvalidRequest("result.status", "field 'result.status' must be a non-empty string")
    validate_id("result.status", status)
    timestamp = body.get("timestamp")
    if "timestamp" in body and (not isinstance(timestamp, str) or len(timestamp) > 64):
        raise InvalidRequest("timestamp", "field 'timestamp' must be a string (ISO 8601) of at most 64 characters")
    return body


def validate_event_type(event_type: Any) -> str:
    if not isinstance(event_type, str) or not _EVENT_TYPE.fullmatch(event_type):
        raise InvalidEvent(
            "event_type",
            "event_type must be 1-128 characters of letters, digits, '_', '.', ':' or '-'",
        )
    return event_type


def validate_event_body(body: Any) -> dict[str, Any]:
    """The publishable part of an event body; raises InvalidEvent naming the bad field."""
    if body is None:
        body = {}
    if not isinstance(body, dict):
        raise InvalidEvent("body", "the event body must be a JSON object")
    out: dict[str, Any] = {}
    for key in ("topic", "correlation_id"):
        value = body.get(key)
        if value is not None:
            validate_id(key, value, InvalidEvent)
        out[key] = value
    data = body.get("data", {})
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise InvalidEvent("data", "field 'data' must be an object")
    out["data"] = data
    ttl = body.get("ttl_seconds", DEFAULT_TTL_SECONDS)
    if isinstance(ttl, bool) or not isinstance(ttl, int | float) or not 0 < ttl <= MAX_TTL_SECONDS:
        raise InvalidEvent(
            "ttl_seconds", f"field 'ttl_seconds' must be a number > 0 and <= {MAX_TTL_SECONDS}"
        )
    out["ttl_seconds"] = ttl
    rnd = body.get("round")
    if isinstance(rnd, float) and rnd.is_integer():  # JSON does not tell 2.0 from 2
        rnd = int(rnd)
    if rnd is not None and (isinstance(rnd, bool) or not isinstance(rnd, int) or not -MAX_ROUND <= rnd <= MAX_ROUND):
        raise InvalidEvent("round", f"field 'round' must be an integer from -{MAX_ROUND} to {MAX_ROUND}")
    out["round"] = rnd
    refs = body.get("references")
    if refs is not None:
        if not isinstance(refs, list) or len(refs) > MAX_REFERENCES:
            raise InvalidEvent("references", f"field 'references' must be a list of at most {MAX_REFERENCES} ids")
        for i, ref in enumerate(refs):
            validate_id(f"references[{i}]", ref, InvalidEvent)
    out["references"] = refs or []
    return out
