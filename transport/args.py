"""The arguments of operations: each read from a request's dict, checked against its bound,
and refused with an :class:`InvalidRequest` naming the field. Pure: no I/O, no clock.

Arguments come from the path, query and body on HTTP (query values are strings) and from the
frame on WebSocket; each reader accepts both forms of the same value.
"""

from __future__ import annotations

import base64
import math
import re
from collections.abc import Callable
from typing import Any

from ..actors.errors import InvalidRequest
from ..actors.events import MAX_CURSOR, decode_cursor
from ..actors.records import validate_id

__all__ = [
    "MAX_BATCH_RESULTS",
    "MAX_ENV_VALUE_CHARS",
    "MAX_ENV_VARS",
    "MAX_Q_CHARS",
    "MAX_SINCE_PROJECTS",
    "MAX_SUBSCRIBE_LIST",
    "MAX_TASK_CHARS",
    "MAX_TOKEN_CHARS",
    "cursor_arg",
    "decode_page_cursor",
    "encode_page_cursor",
    "environment_arg",
    "id_arg",
    "int_arg",
    "opt_id_arg",
    "opt_seconds_arg",
    "opt_text_arg",
    "since_map",
]

#: Results of one ``result.store_batch``.
MAX_BATCH_RESULTS = 1000
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
_SECONDS = re.compile(r"[0-9]{1,18}(\.[0-9]{1,9})?")
_PAGE_CURSOR = re.compile(r"r1:([1-9][0-9]{0,18})")


def id_arg(args: dict[str, Any], key: str) -> str:
    """A required id argument (see ``validate_id``)."""
    value = args.get(key)
    if value is None or value == "":
        raise InvalidRequest(key, f"missing '{key}' (a string)")
    return validate_id(key, value)


def opt_id_arg(args: dict[str, Any], key: str) -> str | None:
    """An optional id argument; absent or empty is None."""
    value = args.get(key)
    if value is None or value == "":
        return None
    return validate_id(key, value)


def opt_text_arg(args: dict[str, Any], key: str, max_chars: int) -> str | None:
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


def int_arg(
    args: dict[str, Any], key: str, default: int, lo: int, hi: int,
    above: Callable[[int], Exception] | None = None,
) -> int:
    """An integer argument from ``lo`` to ``hi`` (a JSON integer, also written with a zero
    fraction like ``1024.0`` as JSON Schema's "integer" allows; or decimal digits in a query);
    ``above`` makes the error for a value over ``hi``."""
    value = args.get(key)
    if value is None or value == "":
        return default
    if isinstance(value, float) and value.is_integer():
        value = int(value)
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


def opt_seconds_arg(args: dict[str, Any], key: str, lo: float, hi: float) -> float | None:
    """An optional number of seconds from ``lo`` to ``hi`` (a JSON number, or decimal digits
    with an optional fraction in a query); absent or empty is None."""
    value = args.get(key)
    if value is None or value == "":
        return None
    if isinstance(value, str) and _SECONDS.fullmatch(value) is not None:
        value = float(value)
    if (isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value)
            or not lo <= value <= hi):
        raise InvalidRequest(key, f"'{key}' must be a number of seconds from {lo:g} to {hi:g}")
    return float(value)


def cursor_arg(args: dict[str, Any], key: str) -> int | None:
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


def encode_page_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(f"r1:{seq}".encode()).decode().rstrip("=")


def decode_page_cursor(value: Any) -> int | None:
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


MAX_SINCE_PROJECTS = 10_000


def since_map(args: dict[str, Any]) -> int | dict[str, int] | None:
    """``since`` of a "*" subscription: one cursor, or an object of cursors by project id."""
    since = args.get("since")
    if not isinstance(since, dict):
        return cursor_arg(args, "since")
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


def environment_arg(args: dict[str, Any]) -> dict[str, str]:
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


