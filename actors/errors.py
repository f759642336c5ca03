"""Errors the server's actors answer with, by family. The transport maps each to a protocol
code in one place (``transport/errors.py`` ``from_exception``).

Every class here is an *answer* (a :class:`~orchestra.actors.runtime.ReplyError`): raised in
an actor, it fails the request it answers and the actor keeps running. An exception that is
not one of these (nor a runtime error such as ``ActorCrashed``) is a bug.

Families: validation (:class:`InvalidInput`), permissions (:class:`Forbidden`),
:class:`NotFound`, :class:`Conflict`, limits (:class:`LimitExceeded`), unavailable
(:class:`Unavailable`) and the store's own (:class:`StoreError`). Verifying tokens belongs to
the transport; what a verified :class:`~orchestra.actors.principal.Principal` may do is decided
inside.
"""

from __future__ import annotations

from typing import Any

from .runtime import ReplyError

__all__ = [
    "CommitFailed",
    "Conflict",
    "DomainError",
    "Forbidden",
    "InvalidEvent",
    "InvalidFilter",
    "InvalidInput",
    "InvalidRequest",
    "LimitExceeded",
    "NotFound",
    "Overloaded",
    "store_unavailable",
    "ReadFailed",
    "StoreError",
    "TooLarge",
    "Unavailable",
    "WriteRejected",
]


class DomainError(ReplyError):
    """An answer, not a crash. ``details`` are extra fields of the protocol error object."""

    def __init__(self, message: str, **details: Any) -> None:
        super().__init__(message)
        self.message = message
        self.details = details


# -- validation: the request itself is wrong; the same request always fails --


class InvalidInput(DomainError):
    """The family of requests refused for their content (400)."""


class InvalidRequest(InvalidInput):
    """A field is missing, malformed or of the wrong type (REQ_001)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message, field=field)
        self.field = field


class InvalidEvent(InvalidInput):
    """An event body that cannot be published (EVT_002)."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message, field=field)


class InvalidFilter(InvalidInput):
    """A filter expression that does not parse (EVT_003)."""

    def __init__(self, expression: str, position: int, expected: str) -> None:
        super().__init__(
            f"invalid filter at position {position}: expected {expected}",
            position=position,
            expected=expected,
        )
        self.position = position
        self.expected = expected


# -- permissions --


class Forbidden(DomainError):
    """The verified token may not do this (AUTH_003, 403)."""


# -- not found, conflict --


class NotFound(DomainError):
    """No such id in this project (also for ids of another project)."""


class Conflict(DomainError):
    """The request is well-formed but cannot be done in the present state (409)."""


# -- limits: a documented bound (docs/protocol.md "Bounds") passed by this request --


class LimitExceeded(DomainError):
    """This request passes a count or rate bound (429). ``bound`` names it (the transport
    answers with that bound's code); ``limit`` is its value, also in the error object."""

    def __init__(
        self, bound: str, limit: float, message: str, *, retry_after: float | None = None,
        **details: Any,
    ) -> None:
        if retry_after is not None:
            details["retry_after_seconds"] = retry_after
        super().__init__(message, limit=limit, **details)
        self.bound = bound
        self.limit = limit
        self.retry_after = retry_after


class TooLarge(LimitExceeded):
    """This request (or the answer it asks for) passes a size bound (413): sending it again
    unchanged fails again."""


# -- unavailable: nothing wrong with the request; retry after ``retry_after`` seconds --


class Unavailable(DomainError):
    """The part that would serve the request is restarting, stopping or stopped (503)."""

    def __init__(self, message: str, retry_after: float = 1.0) -> None:
        super().__init__(message, retry_after_seconds=retry_after)
        self.retry_after = retry_after


class Overloaded(Unavailable):
    """A bounded queue or table is full; retry later (503)."""


def store_unavailable(exc: BaseException) -> Overloaded:
    """The answer to a read the store could not serve (failing or restarting): this request
    fails, its asker keeps running, and a retry may succeed."""
    return Overloaded(f"the store could not answer: {exc}", retry_after=1.0)


# -- the store --


class StoreError(DomainError):
    """A store operation failed. Guarantee: a StoreError answer to a *write* means it was
    not stored (its transaction, or its savepoint, was rolled back); nothing acknowledged
    is affected.

    ``transient`` is True when the database itself could not do it now (busy, locked, disk
    full, I/O): the same request may succeed later. Otherwise the request could not be done
    at all (a value the database cannot hold, a constraint): a gap in validation, or a bug.
    """

    def __init__(self, message: str, *, transient: bool = False) -> None:
        super().__init__(message)
        self.transient = transient


class WriteRejected(StoreError):
    """One write failed; it was rolled back alone, the other writes of its transaction
    committed."""


class CommitFailed(StoreError):
    """The transaction could not be committed; none of its writes was stored."""


class ReadFailed(StoreError):
    """One read failed; the others of its batch were answered."""


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


class IdempotencyConflict(Conflict):
    """An idempotency key repeated with a different request (IDEM_001, 409)."""

    def __init__(self, message: str) -> None:
        super().__init__(message, field="idempotency_key")
