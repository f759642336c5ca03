"""The SDK's exceptions: one class per family of the protocol's error object.

Every exception the SDK raises for an answer of the server carries that answer's error object
(``.body``), its ``.code`` and the HTTP status of its family (``.status``). The mapping from
``code`` to class is the one table ``_FAMILIES``; a code this SDK does not know falls back on
the fields it carries, then on :class:`OrchestraError` itself. Pure: no I/O.
"""

from __future__ import annotations

from typing import Any

__all__ = [
    "Conflict",
    "ConnectionFailed",
    "EventsLost",
    "Forbidden",
    "InvalidRequest",
    "NotFound",
    "OrchestraError",
    "RateLimited",
    "ServerError",
    "TooLarge",
    "Unauthorized",
    "Unavailable",
    "error_from_body",
    "error_from_close",
]


class OrchestraError(Exception):
    """An error object of the protocol (or one the SDK makes in its shape, see the subclasses
    ``ConnectionFailed`` and ``EventsLost``). ``body`` is the whole object."""

    #: the HTTP status of this family (``None`` for the SDK's own errors)
    default_status: int | None = None

    def __init__(self, body: dict[str, Any], status: int | None = None) -> None:
        self.body = body
        self.code: str = str(body.get("code", ""))
        self.message: str = str(body.get("message", ""))
        self.status: int | None = status if status is not None else _STATUS.get(self.code, self.default_status)
        super().__init__(f"{self.code}: {self.message}" if self.code else self.message)

    @property
    def request_id(self) -> str | None:
        """The server's id of the failed request (it appears in the server's log)."""
        value = self.body.get("request_id")
        return value if isinstance(value, str) else None

    @property
    def field(self) -> str | None:
        """The argument at fault, when the server names one."""
        value = self.body.get("field")
        return value if isinstance(value, str) else None


class InvalidRequest(OrchestraError):
    """400: malformed or out-of-range input (``REQ_001``), an invalid event (``EVT_002``) or
    filter (``EVT_003``). Retrying the same request cannot succeed."""

    default_status = 400


class Unauthorized(OrchestraError):
    """401: the token is missing, invalid (``AUTH_001``) or expired (``AUTH_002``); also a
    connection closed with 4001. Final: the client does not reconnect with that token."""

    default_status = 401


class Forbidden(OrchestraError):
    """403 ``AUTH_003``: a permission is missing or another project was named; also a
    connection closed with 4003 (final)."""

    default_status = 403


class NotFound(OrchestraError):
    """404: unknown id (or another project's), unknown operation or route."""

    default_status = 404


class Conflict(OrchestraError):
    """409: not possible in the present state (``CONFLICT``), an agent type without a
    command (``AGENT_001``), or an idempotency key reused for another request (``IDEM_001``)."""

    default_status = 409


class TooLarge(OrchestraError):
    """413: a size bound (``REQ_002``, ``CTX_002``); ``limit`` names it."""

    default_status = 413

    @property
    def limit(self) -> int | None:
        value = self.body.get("limit")
        return value if isinstance(value, int) and not isinstance(value, bool) else None


class RateLimited(OrchestraError):
    """429: a rate limit (``RATE_001``) or a count bound (``LIMIT_001`` and the codes of
    other caps). ``retry_after`` is the server's ``retry_after_seconds`` (None if absent)."""

    default_status = 429

    @property
    def retry_after(self) -> float | None:
        return _seconds(self.body.get("retry_after_seconds"))

    @property
    def limit(self) -> float | None:
        value = self.body.get("limit")
        return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


class Unavailable(OrchestraError):
    """503: overloaded, restarting or shutting down. ``retry_after`` is the server's
    ``retry_after_seconds``; for a write, ``outcome`` is ``"not_stored"`` or ``"unknown"``
    (None when it was refused before it was handed over: nothing was stored)."""

    default_status = 503

    @property
    def retry_after(self) -> float | None:
        return _seconds(self.body.get("retry_after_seconds"))

    @property
    def outcome(self) -> str | None:
        value = self.body.get("outcome")
        return value if isinstance(value, str) else None


class ServerError(OrchestraError):
    """500 ``INTERNAL``: a bug of the server, which keeps running; only this request failed."""

    default_status = 500


class ConnectionFailed(OrchestraError):
    """The SDK's own: no connection to the server could be made within the client's
    ``reconnect_timeout``, or a request was lost with its connection too many times
    (``max_resends``). A write's outcome is then unknown: retry it with the same
    idempotency key."""

    def __init__(self, message: str) -> None:
        super().__init__({"error": "connection_failed", "code": "CONNECTION_FAILED", "message": message})


class EventsLost(OrchestraError):
    """The SDK's own: the server answered a (re)subscription with ``recovered: false``, so
    some events after the last cursor delivered may have expired or been trimmed. Raised once
    by the subscription's iterator; iterating again continues with the events that follow."""

    def __init__(self, since: Any) -> None:
        super().__init__({"error": "events_lost", "code": "EVENTS_LOST", "since": since,
                          "message": f"events after {since!r} may have been trimmed or expired"})


_FAMILIES: dict[str, type[OrchestraError]] = {
    "REQ_001": InvalidRequest,
    "EVT_002": InvalidRequest,
    "EVT_003": InvalidRequest,
    "AUTH_001": Unauthorized,
    "AUTH_002": Unauthorized,
    "AUTH_003": Forbidden,
    "NOT_FOUND": NotFound,
    "METHOD": NotFound,
    "AGENT_001": Conflict,
    "IDEM_001": Conflict,
    "CONFLICT": Conflict,
    "REQ_002": TooLarge,
    "CTX_002": TooLarge,
    "RATE_001": RateLimited,
    "LIMIT_001": RateLimited,
    "INTERNAL": ServerError,
    "UNAVAILABLE": Unavailable,
}

_STATUS = {"METHOD": 405}

_BY_STATUS: dict[int, type[OrchestraError]] = {
    400: InvalidRequest, 401: Unauthorized, 403: Forbidden, 404: NotFound, 405: NotFound,
    409: Conflict, 413: TooLarge, 429: RateLimited, 500: ServerError, 503: Unavailable,
}


def error_from_body(body: Any, status: int | None = None) -> OrchestraError:
    """The exception for an error object (``status``: the HTTP status, when known).

    A code not in the table is classed by ``status``; without one (WebSocket answers carry
    none), an object with ``limit`` is a :class:`RateLimited` (a count cap: the caps of later
    releases, such as the spawn governor's, have codes of their own), one with
    ``retry_after_seconds`` alone an :class:`Unavailable`; anything else an
    :class:`OrchestraError`.
    """
    if not isinstance(body, dict):
        body = {"error": "invalid_answer", "code": "", "message": f"not an error object: {body!r:.200}"}
    cls = _FAMILIES.get(str(body.get("code")))
    if cls is None and status is not None:
        cls = _BY_STATUS.get(status)
    if cls is None:
        if "limit" in body:
            cls = RateLimited
        elif "retry_after_seconds" in body:
            cls = Unavailable
        else:
            cls = OrchestraError
    return cls(body, status)


#: WebSocket close codes after which the client does not reconnect.
FINAL_CLOSE_CODES = {4001: ("AUTH_001", Unauthorized), 4003: ("AUTH_003", Forbidden)}


def error_from_close(code: int, reason: str | None) -> OrchestraError | None:
    """The exception for a final close code (4001, 4003); None for one to reconnect after."""
    final = FINAL_CLOSE_CODES.get(code)
    if final is None:
        return None
    name, cls = final
    return cls({"error": cls.__name__.lower(), "code": name, "close_code": code,
                "message": reason or f"connection closed with {code}"})


def _seconds(value: Any) -> float | None:
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return float(value)
    return None
