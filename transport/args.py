"""The small checks an operation makes after its arguments were read (``transport/schema.py``
declares them; ``actors/schema.py`` reads them), for rules a Struct cannot state whole: a
cursor's largest value, a cursor only this server issues, a subscription's ``since`` by
project. Each is also said in the documents (the field's description). Pure: no I/O, no clock.
"""

from __future__ import annotations

import base64
import re

from ..actors.errors import InvalidRequest
from ..actors.events import MAX_CURSOR, decode_cursor
from .schema import (
    MAX_BATCH_RESULTS,
    MAX_ENV_VALUE_CHARS,
    MAX_ENV_VARS,
    MAX_Q_CHARS,
    MAX_SINCE_PROJECTS,
    MAX_SUBSCRIBE_LIST,
    MAX_TASK_CHARS,
    MAX_TOKEN_CHARS,
)

__all__ = [
    "MAX_BATCH_RESULTS",
    "MAX_ENV_VALUE_CHARS",
    "MAX_ENV_VARS",
    "MAX_Q_CHARS",
    "MAX_SINCE_PROJECTS",
    "MAX_SUBSCRIBE_LIST",
    "MAX_TASK_CHARS",
    "MAX_TOKEN_CHARS",
    "cursor_value",
    "decode_page_cursor",
    "encode_page_cursor",
    "since_values",
]

_PAGE_CURSOR = re.compile(r"r1:([1-9][0-9]{0,18})")


def cursor_value(key: str, value: str | None) -> int | None:
    """The position an event cursor (read as ``schema.Cursor``: digits) names; at most
    2^63-1 (the store's integers)."""
    if value is None:
        return None
    try:
        seq = decode_cursor(value)
    except ValueError as exc:
        raise InvalidRequest(key, f"'{key}': {exc}") from None
    if seq > MAX_CURSOR:
        raise InvalidRequest(key, f"'{key}': a cursor is at most {MAX_CURSOR}")
    return seq


def since_values(since: str | dict[str, str] | None) -> int | dict[str, int] | None:
    """``since`` of a "*" subscription: one cursor, or cursors by project id."""
    if not isinstance(since, dict):
        return cursor_value("since", since)
    out: dict[str, int] = {}
    for project, cursor in since.items():
        seq = cursor_value("since", cursor)
        assert seq is not None
        out[project] = seq
    return out


def encode_page_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(f"r1:{seq}".encode()).decode().rstrip("=")


def decode_page_cursor(value: str | None) -> int | None:
    """The position a ``cursor`` argument names (1 to 2^63-1: the store's integers); None if absent."""
    if value is None:
        return None
    try:
        raw = base64.urlsafe_b64decode(value + "=" * (-len(value) % 4)).decode("ascii")
        match = _PAGE_CURSOR.fullmatch(raw)
        if match is None or int(match.group(1)) > MAX_CURSOR:
            raise ValueError
        return int(match.group(1))
    except (ValueError, UnicodeDecodeError):  # binascii.Error is a ValueError
        raise InvalidRequest("cursor", "'cursor' is not a cursor this server returned") from None
