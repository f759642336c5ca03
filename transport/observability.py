"""What a request leaves behind for an operator: its request id, its trace context, the log
lines it writes (each carrying both), and its access line.

The facts of the request in progress live in a :class:`RequestScope` that the transport opens
around each request (an HTTP request, a WebSocket op). It is held in a context variable: trio
gives every task its own copy of the context, so concurrent requests never see each other's
scope, and a task started for a request (a watch of the socket) sees the scope of its request.
Log records written while a scope is open carry its ids (:class:`ScopeFilter`).

Pure apart from logging: no I/O, no clock beyond what logging stamps.
"""

from __future__ import annotations

import contextvars
import logging
import re
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

__all__ = [
    "ACCESS_LOGGER",
    "MAX_REQUEST_ID_CHARS",
    "AccessLog",
    "JsonFormatter",
    "LogHandler",
    "RequestScope",
    "ScopeFilter",
    "TextFormatter",
    "TraceParent",
    "configure_logging",
    "current_scope",
    "enter_scope",
    "incoming_request_id",
    "leave_scope",
    "printable",
    "request_scope",
]

#: The longest ``X-Request-ID`` the server takes from a client (longer: it makes its own).
MAX_REQUEST_ID_CHARS = 256
#: The logger of access lines (one per HTTP request, one per WebSocket op).
ACCESS_LOGGER = "orchestra.access"

# visible ASCII only: an id goes into headers, logs and JSON unchanged
_REQUEST_ID = re.compile(rf"[\x21-\x7e]{{1,{MAX_REQUEST_ID_CHARS}}}")
# W3C Trace Context, version 00 exactly; a later version may add fields after a dash
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?")
_MAX_TRACEPARENT_CHARS = 512
_UNPRINTABLE = re.compile(r"[^\x20-\x7e]")


def incoming_request_id(value: bytes | str | None) -> str | None:
    """The request id a client sent (``X-Request-ID``), if it is one the server may reuse:
    1 to 256 visible ASCII characters. None otherwise (the server then makes its own)."""
    if value is None:
        return None
    if isinstance(value, bytes):
        value = value.decode("latin-1")
    return value if _REQUEST_ID.fullmatch(value) is not None else None


def printable(text: str, limit: int = 200) -> str:
    """``text`` cut to ``limit`` characters, each non-printable one written as an escape: what
    a client sent can never forge or break a log line."""
    text = text[:limit]
    return _UNPRINTABLE.sub(lambda m: m.group().encode("unicode_escape").decode("ascii"), text)


@dataclass(frozen=True, slots=True)
class TraceParent:
    """A validated W3C ``traceparent`` (https://www.w3.org/TR/trace-context/)."""

    version: str
    trace_id: str
    parent_id: str
    flags: str

    @classmethod
    def parse(cls, value: bytes | str | None) -> TraceParent | None:
        """The trace context ``value`` names, or None when it is absent or invalid (the
        specification says an invalid one is ignored, never an error)."""
        if value is None:
            return None
        if isinstance(value, bytes):
            value = value.decode("latin-1")
        if not isinstance(value, str) or len(value) > _MAX_TRACEPARENT_CHARS:
            return None
        match = _TRACEPARENT.fullmatch(value.strip(" \t"))
        if match is None:
            return None
        version, trace_id, parent_id, flags, rest = match.groups()
        if version == "ff" or (version == "00" and rest is not None):
            return None
        if trace_id == "0" * 32 or parent_id == "0" * 16:
            return None
        return cls(version, trace_id, parent_id, flags)

    def header(self) -> str:
        """The value as sent on (version 00: what this server understands of later ones)."""
        return f"00-{self.trace_id}-{self.parent_id}-{self.flags}"


@dataclass(slots=True)
class RequestScope:
    """The facts of one request that its log lines carry. Written by the request's own task
    only (the transport, then ``Api.call`` once it knows who asks)."""

    request_id: str
    trace: TraceParent | None = None
    transport: Literal["http", "ws"] = "http"
    op: str | None = None
    agent: str | None = None
    project: str | None = None
    #: the status answered (HTTP) or the outcome (WebSocket), once known
    status: int | None = None
    started: float = field(default_factory=time.perf_counter)


_SCOPE: contextvars.ContextVar[RequestScope | None] = contextvars.ContextVar(
    "orchestra_request_scope", default=None
)


def current_scope() -> RequestScope | None:
    """The scope of the request the calling task serves, or None outside a request."""
    return _SCOPE.get()


def enter_scope(scope: RequestScope) -> contextvars.Token[RequestScope | None]:
    """Make ``scope`` the current request's until :func:`leave_scope` with the token: the
    hot paths' form of :func:`request_scope` (no generator)."""
    return _SCOPE.set(scope)


def leave_scope(token: contextvars.Token[RequestScope | None]) -> None:
    """End what :func:`enter_scope` began (the scope before it is current again)."""
    _SCOPE.reset(token)


@contextmanager
def request_scope(scope: RequestScope) -> Iterator[RequestScope]:
    """Make ``scope`` the current request's for the ``with`` block (restored after it)."""
    token = _SCOPE.set(scope)
    try:
        yield scope
    finally:
        _SCOPE.reset(token)


class ScopeFilter(logging.Filter):
    """Stamps each record with the ids of the request in progress (``request_id``,
    ``trace_id``, ``parent_id``), unless the record names them already."""

    def filter(self, record: logging.LogRecord) -> bool:
        scope = _SCOPE.get()
        if scope is not None:
            if not hasattr(record, "request_id"):
                record.request_id = scope.request_id
            if scope.trace is not None and not hasattr(record, "trace_id"):
                record.trace_id = scope.trace.trace_id
                record.parent_id = scope.trace.parent_id
        return True


class _Stamps:
    """The last whole second formatted and the last millisecond, each with its text (a pair
    replaced whole: a thread never sees one's number with the other's text)."""

    __slots__ = ("second", "ms")

    def __init__(self) -> None:
        self.second: tuple[int, str] = (-1, "")
        self.ms: tuple[int, str] = (-1, "")


_STAMPS = _Stamps()  # a cache of pure functions of the time: any thread may refill it


def _utc(created: float) -> str:
    ms = int(created * 1000)
    last = _STAMPS.ms
    if last[0] == ms:  # lines come many a millisecond under load
        return last[1]
    whole, second = _STAMPS.second
    if whole != ms // 1000:  # strftime is most of a line's time cost: once a second
        whole = ms // 1000
        second = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole))
        _STAMPS.second = (whole, second)
    text = f"{second}.{ms % 1000:03d}Z"
    _STAMPS.ms = (ms, text)
    return text


#: Fields of an access line, in the order the text form writes them.
_ACCESS_FIELDS = ("request_id", "agent", "project", "trace_id")


class TextFormatter(logging.Formatter):
    """``2026-11-30T09:00:00.123Z INFO orchestra: message request_id=... trace_id=...``: UTC,
    one line per record (a traceback follows on its own lines)."""

    def format(self, record: logging.LogRecord) -> str:
        access = getattr(record, "access", None)
        if isinstance(access, dict):
            line = self.access_line(record.created, record.levelname, record.name, access)
        else:
            line = f"{_utc(record.created)} {record.levelname} {record.name}: {record.getMessage()}"
            for key in ("request_id", "trace_id"):
                value = getattr(record, key, None)
                if value is not None:
                    line += f" {key}={value}"
        if record.exc_info:
            line += "\n" + self.formatException(record.exc_info)
        return line

    @staticmethod
    def access_line(created: float, level: str, name: str, access: dict[str, Any],
                    ids: dict[str, Any] | None = None) -> str:
        """The text of an access line (``ids``: unused here, the access fields carry them)."""
        return TextFormatter.access_text(
            created, level, name, access["method"], access["path"], access["status"], access["duration_ms"],
            *(access.get(k) for k in ("op", *_ACCESS_FIELDS)),
        )

    @staticmethod
    def access_text(created: float, level: str, name: str, method: str, path: str, status: Any,
                    duration_ms: float, op: str | None, request_id: str | None, agent: str | None,
                    project: str | None, trace_id: str | None) -> str:
        """:meth:`access_line` from its fields (the fast path's form: no dict)."""
        line = f"{_utc(created)} {level} {name}: {method} {path} {status} {duration_ms:.3f}ms"
        if op:
            line += f" op={op}"
        if request_id is not None:
            line += f" request_id={request_id}"
        if agent is not None:
            line += f" agent={agent}"
        if project is not None:
            line += f" project={project}"
        if trace_id is not None:
            line += f" trace_id={trace_id}"
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line (orjson): ``time`` (UTC), ``level``, ``logger``, ``message``,
    the request's ids when there is one, the access fields of an access line, ``exception``."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "time": _utc(record.created),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ("request_id", "trace_id", "parent_id"):
            value = getattr(record, key, None)
            if value is not None:
                out[key] = value
        access = getattr(record, "access", None)
        if isinstance(access, dict):
            out.update(access)
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return orjson.dumps(out, default=str).decode()

    @staticmethod
    def access_line(created: float, level: str, name: str, access: dict[str, Any],
                    ids: dict[str, Any] | None = None) -> str:
        """The object :meth:`format` writes for an access record made of these parts (``ids``:
        the record's ``request_id``, ``trace_id``, ``parent_id``), built without the record."""
        out: dict[str, Any] = {
            "time": _utc(created), "level": level, "logger": name,
            "message": f"{access['method']} {access['path']} {access['status']}",
        }
        if ids:
            out.update(ids)
        out.update(access)
        return orjson.dumps(out, default=str).decode()


class LogHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """The handler :func:`configure_logging` installs: a stream handler that can also take a
    line already formatted (the access lines' fast path, :meth:`AccessLog.write`)."""

    def write_line(self, line: str) -> None:
        """Write ``line`` as :meth:`emit` writes a formatted record (under the handler's lock)."""
        with self.lock:  # type: ignore[union-attr]
            try:
                stream = self.stream
                stream.write(line + self.terminator)
                if not getattr(stream, "line_buffering", False):  # (else the write flushed it)
                    self.flush()
            except Exception:  # as emit does: a broken stream never fails the request
                self.handleError(logging.makeLogRecord({"msg": line}))


class AccessLog:
    """Writes the access line of each request, at INFO on :data:`ACCESS_LOGGER`; costs one
    check when that logger is off (``--no-access-log``).

    When the only place the line can go is the handler :func:`configure_logging` installed
    (what ``orchestra serve`` runs with), the line is formatted straight from the scope and
    written, the same text as through a :class:`logging.LogRecord` but without building one
    (the record, the filter and the handler's dispatch were most of a line's cost). Any other
    set-up (another handler, a filter, a test's capture) takes the ordinary logging path."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        self.log = logger or logging.getLogger(ACCESS_LOGGER)

    def _direct(self) -> LogHandler | None:
        """The handler to write to directly, or None when the line must go through logging."""
        log = self.log
        if log.handlers or log.filters or not log.propagate:
            return None
        parent = log.parent
        while parent is not None and parent is not logging.root:  # e.g. "orchestra"
            if parent.handlers or not parent.propagate:
                return None
            parent = parent.parent
        handlers = logging.root.handlers
        if len(handlers) != 1 or logging.root.filters:
            return None
        handler = handlers[0]
        if (type(handler) is not LogHandler or handler.level > logging.INFO
                or any(type(f) is not ScopeFilter for f in handler.filters)
                or type(handler.formatter) not in (TextFormatter, JsonFormatter)):
            return None
        return handler

    def write(self, scope: RequestScope, method: str, path: str, status: int | str | None = None) -> None:
        """The line of the request ``scope`` served: ``status`` (default: the scope's; "-" when
        no answer was sent, e.g. the client left)."""
        if not self.log.isEnabledFor(logging.INFO):
            return
        if status is None:
            status = scope.status if scope.status is not None else "-"
        if not (len(path) <= 200 and path.isascii() and path.isprintable()):
            path = printable(path)
        duration_ms = round((time.perf_counter() - scope.started) * 1000, 3)
        trace = scope.trace
        handler = self._direct()
        if handler is not None and type(handler.formatter) is TextFormatter:  # the default: no dict
            handler.write_line(TextFormatter.access_text(
                time.time(), "INFO", self.log.name, method, path, status, duration_ms, scope.op,
                scope.request_id, scope.agent, scope.project, trace.trace_id if trace is not None else None,
            ))
            return
        access = {
            "transport": scope.transport,
            "method": method,
            "path": path,
            "op": scope.op,
            "status": status,
            "duration_ms": duration_ms,
            "request_id": scope.request_id,
            "agent": scope.agent,
            "project": scope.project,
            "trace_id": trace.trace_id if trace is not None else None,
        }
        extra: dict[str, Any] = {"request_id": scope.request_id}
        if trace is not None:
            extra["trace_id"], extra["parent_id"] = trace.trace_id, trace.parent_id
        if handler is not None:
            formatter: Any = handler.formatter
            handler.write_line(formatter.access_line(time.time(), "INFO", self.log.name, access, extra))
            return
        extra["access"] = access
        self.log.info(f"{method} {access['path']} {status}", extra=extra)


def configure_logging(
    level: str = "INFO", fmt: Literal["text", "json"] = "text", access_log: bool = True,
    stream: Any = None,
) -> logging.Handler:
    """Send the server's log records to ``stream`` (stderr) in format ``fmt``; returns the
    handler. ``access_log`` False turns the access lines off."""
    handler = LogHandler(stream if stream is not None else sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(ScopeFilter())
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level))
    logging.getLogger(ACCESS_LOGGER).disabled = not access_log
    return handler
