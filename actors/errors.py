"""Errors the server's actors answer with. The transport maps each to a protocol code."""

from __future__ import annotations

from typing import Any

from .runtime import ReplyError


class DomainError(ReplyError):
    """An answer, not a crash. ``details`` are extra fields of the protocol error object."""

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


class InvalidRequest(DomainError):
    """A field is missing, malformed or of the wrong type (REQ_001)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message, field=field)
        self.field = field


class InvalidEvent(DomainError):
    """An event body that cannot be published (EVT_002)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message, field=field)


class InvalidFilter(DomainError):
    """A filter expression that does not parse (EVT_003)."""

    def __init__(self, expression: str, position: int, expected: str) -> None:
        super().__init__(
            f"invalid filter at position {position}: expected {expected}",
            position=position,
            expected=expected,
        )
        self.position = position
        self.expected = expected


class NotFound(DomainError):
    """No such id in this project (also for ids of another project)."""


class Overloaded(DomainError):
    """A bounded queue is full; retry later (UNAVAILABLE)."""

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message, retry_after_seconds=retry_after)
        self.retry_after = retry_after


class NotStored(Overloaded):
    """Nothing of this write was stored (rolled back, or never committed); a retry stores it (503)."""

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message, retry_after)
        self.details["outcome"] = "not_stored"


class OutcomeUnknown(Overloaded):
    """The store or the project stopped while it held the write: it may or may not be stored (503).

    A retry with the same idempotency key answers the original answer if it was stored.
    """

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message, retry_after)
        self.details["outcome"] = "unknown"


class IdempotencyConflict(DomainError):
    """An idempotency key repeated with a different request (IDEM_001, 409)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, field="idempotency_key")
