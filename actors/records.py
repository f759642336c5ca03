"""Validation of result and event bodies, and the shape of stored records. Pure."""

from __future__ import annotations

import re
import time
from datetime import UTC, datetime
from typing import Any

from .errors import InvalidEvent, InvalidRequest

__all__ = [
    "DEFAULT_TTL_SECONDS",
    "MAX_TTL_SECONDS",
    "iso_now",
    "iso_time",
    "parse_iso",
    "validate_event_body",
    "validate_event_type",
    "validate_result_body",
]

DEFAULT_TTL_SECONDS = 86_400  # one day
MAX_TTL_SECONDS = 7 * 86_400  # one week
_EVENT_TYPE = re.compile(r"[A-Za-z0-9_.:\-]{1,128}")
_ID_MAX = 256


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


def parse_iso(field: str, text: str) -> str:
    """Normalise an ISO 8601 time to the stored form; InvalidRequest naming ``field`` if not one."""
    try:
        value = datetime.fromisoformat(text.replace("Z", "+00:00") if text.endswith("Z") else text)
    except (ValueError, AttributeError):
        raise InvalidRequest(field, f"{field} must be an ISO 8601 time, like 2026-01-31T12:00:00Z") from None
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _string(body: dict[str, Any], key: str, *, required: bool = True) -> str | None:
    value = body.get(key)
    if value is None:
        if required:
            raise InvalidRequest(key, f"missing field '{key}' (a non-empty string)")
        return None
    if not isinstance(value, str) or not value or len(value) > _ID_MAX:
        raise InvalidRequest(key, f"field '{key}' must be a non-empty string of at most {_ID_MAX} characters")
    return value


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
    if "timestamp" in body and not isinstance(body["timestamp"], str):
        raise InvalidRequest("timestamp", "field 'timestamp' must be a string (ISO 8601)")
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
        if value is not None and not isinstance(value, str):
            raise InvalidEvent(key, f"field '{key}' must be a string")
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
    if rnd is not None and (isinstance(rnd, bool) or not isinstance(rnd, int)):
        raise InvalidEvent("round", "field 'round' must be an integer")
    out["round"] = rnd
    refs = body.get("references")
    if refs is not None and (not isinstance(refs, list) or not all(isinstance(r, str) for r in refs)):
        raise InvalidEvent("references", "field 'references' must be a list of strings")
    out["references"] = refs or []
    return out
