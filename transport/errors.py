"""The protocol's error object, and the one place where internal errors become it."""

from __future__ import annotations

import logging
import math
from typing import Any

import orjson

from ..actors.errors import (
    Conflict,
    DomainError,
    Forbidden,
    IdempotencyConflict,
    InvalidEvent,
    InvalidFilter,
    InvalidInput,
    LimitExceeded,
    NotFound,
    StoreError,
    TooLarge,
    Unavailable,
)
from ..actors.records import iso_now
from ..actors.runtime import ActorCrashed, ActorUnavailable, CallTimeout, SupervisorStopped
from ..actors.session import CloseReason

__all__ = ["ApiError", "error_body", "from_exception"]

log = logging.getLogger("orchestra")

_NAMES = {
    "REQ_001": "invalid_request",
    "REQ_002": "payload_too_large",
    "EVT_002": "invalid_event",
    "EVT_003": "invalid_filter",
    "AUTH_001": "unauthorized",
    "AUTH_002": "token_expired",
    "AUTH_003": "forbidden",
    "NOT_FOUND": "not_found",
    "METHOD": "method_not_allowed",
    "AGENT_001": "agent_not_spawnable",
    "IDEM_001": "idempotency_key_reused",
    "CTX_002": "context_too_large",
    "CONFLICT": "conflict",
    "LIMIT_001": "limit_exceeded",
    "RATE_001": "rate_limited",
    "INTERNAL": "internal_error",
    "UNAVAILABLE": "unavailable",
}


class ApiError(Exception):
    """An answer with an HTTP status and a protocol code; ``details`` join the error object."""

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        *,
        headers: list[tuple[bytes, bytes]] | None = None,
        **details: Any,
    ) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.details = details
        self.headers = headers or []
        #: WebSocket only: end the session for this reason after answering
        self.close_reason: CloseReason | None = None


def shutting_down() -> ApiError:
    """The answer to a request that arrives, or is still running, while the server stops."""
    return ApiError(503, "UNAVAILABLE", "the server is shutting down", retry_after_seconds=5,
                    headers=[(b"retry-after", b"5")])


def error_body(error: ApiError, request_id: str) -> dict[str, Any]:
    return {
        "error": _NAMES.get(error.code, error.code.lower()),
        "code": error.code,
        "message": error.message,
        "timestamp": iso_now(),
        "request_id": request_id,
        **error.details,
    }


def encode_error(error: ApiError, request_id: str) -> bytes:
    return orjson.dumps(error_body(error, request_id))


# The answer of each family of domain errors; the most specific class listed wins (the first
# found along the exception's MRO). docs/protocol.md "Errors" has this table in words.
_ANSWERS: dict[type[BaseException], tuple[int, str]] = {
    InvalidFilter: (400, "EVT_003"),
    InvalidEvent: (400, "EVT_002"),
    InvalidInput: (400, "REQ_001"),
    Forbidden: (403, "AUTH_003"),
    NotFound: (404, "NOT_FOUND"),
    IdempotencyConflict: (409, "IDEM_001"),
    Conflict: (409, "CONFLICT"),
    TooLarge: (413, "REQ_002"),
    LimitExceeded: (429, "LIMIT_001"),
    Unavailable: (503, "UNAVAILABLE"),
}

#: Bounds that PROTOCOL.md gives a code of their own (a LimitExceeded names its bound).
BOUND_CODES: dict[str, str] = {
    "request.max_bytes": "REQ_002",
    "context.max_bytes": "CTX_002",
}

_RUNTIME_UNAVAILABLE = (ActorCrashed, ActorUnavailable, CallTimeout, SupervisorStopped)


def _retry_after(seconds: float) -> list[tuple[bytes, bytes]]:
    return [(b"retry-after", str(max(1, math.ceil(seconds))).encode())]


def from_exception(exc: BaseException, request_id: str) -> ApiError:
    """Map any exception raised while serving a request to the error it answers with.

    The one place where exceptions become answers. Domain errors answer by family (table
    above); the runtime's "restarting, busy or stopping" and a transient store failure answer
    503 with ``retry_after_seconds``; anything else is a bug: 500, logged once (with the
    request id and the traceback) however many times it is mapped for that request.
    """
    if isinstance(exc, ApiError):
        return exc
    # One exception may answer several requests (a batch's error, a crash): once per request.
    memo = getattr(exc, "_orchestra_answer", None)
    if isinstance(memo, tuple) and memo[0] == request_id and isinstance(memo[1], ApiError):
        return memo[1]
    mapped = _map(exc, request_id)
    try:
        vars(exc)["_orchestra_answer"] = (request_id, mapped)
    except (AttributeError, TypeError):
        pass  # an exception without a __dict__: mapped (and logged) again if seen again
    return mapped


def _map(exc: BaseException, request_id: str) -> ApiError:
    if isinstance(exc, StoreError):
        if exc.transient:
            log.warning("request %s: %s", request_id, exc)
            return ApiError(503, "UNAVAILABLE", f"the store could not do it now ({exc}); retry shortly",
                            retry_after_seconds=1, headers=_retry_after(1))
        # a value or state the database refused: a gap in validation, or a bug; contained
        log.error("request %s: the store refused it: %s", request_id, exc)
        return ApiError(500, "INTERNAL", f"internal error (request {request_id}): {exc.message}; "
                        "the server keeps running")
    if isinstance(exc, DomainError):
        for cls in type(exc).__mro__:
            answer = _ANSWERS.get(cls)
            if answer is not None:
                break
        else:
            answer = (400, "REQ_001")
        status, code = answer
        details = dict(exc.details)
        headers: list[tuple[bytes, bytes]] = []
        if isinstance(exc, LimitExceeded):
            code = BOUND_CODES.get(exc.bound, code)
        retry = details.get("retry_after_seconds")
        if isinstance(retry, int | float):
            headers = _retry_after(retry)
        return ApiError(status, code, exc.message, headers=headers, **details)
    if isinstance(exc, _RUNTIME_UNAVAILABLE):
        log.warning("request %s: %s", request_id, exc)
        return ApiError(
            503, "UNAVAILABLE",
            f"the server part serving this request is restarting or busy ({exc}); retry shortly",
            retry_after_seconds=1, headers=_retry_after(1),
        )
    log.error("request %s failed", request_id, exc_info=exc)
    return ApiError(500, "INTERNAL", f"internal error (request {request_id}); the server keeps running")
