"""The protocol's error object, and the one place where internal errors become it."""

from __future__ import annotations

import logging
from typing import Any

import orjson

from ..actors.errors import (
    DomainError,
    IdempotencyConflict,
    InvalidEvent,
    InvalidFilter,
    InvalidRequest,
    NotFound,
    NotStored,
    OutcomeUnknown,
    Overloaded,
)
from ..actors.records import iso_now
from ..actors.runtime import ActorCrashed, ActorUnavailable, CallTimeout

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
        #: WebSocket only: close the connection with this code after answering
        self.close_code: int | None = None


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


def from_exception(exc: BaseException, request_id: str) -> ApiError:
    """Map any exception raised while serving a request to the error it answers with."""
    if isinstance(exc, ApiError):
        return exc
    if isinstance(exc, InvalidFilter):
        return ApiError(400, "EVT_003", exc.message, **exc.details)
    if isinstance(exc, InvalidEvent):
        return ApiError(400, "EVT_002", exc.message, **exc.details)
    if isinstance(exc, InvalidRequest):
        return ApiError(400, "REQ_001", exc.message, **exc.details)
    if isinstance(exc, NotFound):
        return ApiError(404, "NOT_FOUND", exc.message)
    if isinstance(exc, IdempotencyConflict):
        return ApiError(409, "IDEM_001", exc.message, **exc.details)
    if isinstance(exc, NotStored | OutcomeUnknown):  # the write's outcome is part of the answer
        return ApiError(
            503, "UNAVAILABLE", exc.message, **exc.details,
            headers=[(b"retry-after", str(max(1, round(exc.retry_after))).encode())],
        )
    if isinstance(exc, Overloaded):
        return ApiError(
            503, "UNAVAILABLE", exc.message, retry_after_seconds=exc.retry_after,
            headers=[(b"retry-after", str(max(1, round(exc.retry_after))).encode())],
        )
    if isinstance(exc, DomainError):
        return ApiError(400, "REQ_001", exc.message, **exc.details)
    if isinstance(exc, ActorCrashed | ActorUnavailable | CallTimeout):
        log.warning("request %s: %s", request_id, exc)
        return ApiError(
            503, "UNAVAILABLE",
            f"the server part serving this request is restarting or busy ({exc}); retry shortly",
            retry_after_seconds=1, headers=[(b"retry-after", b"1")],
        )
    log.error("request %s failed", request_id, exc_info=exc)
    return ApiError(500, "INTERNAL", f"internal error (request {request_id}); the server keeps running")
