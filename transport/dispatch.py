"""The WebSocket side of the operation table: a session's :class:`Dispatcher`.

It turns a frame into a request (or an error frame), runs the request through
:meth:`Api.call <orchestra.transport.api.Api.call>`, and turns the answer into a frame. Which
errors end the connection is decided here, as a :class:`CloseReason`; the transport maps the
reason to its close code.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson

from ..actors.errors import InvalidRequest
from ..actors.records import MAX_ID_CHARS, validate_depth
from ..actors.session import CloseReason, Session
from .api import Api
from .errors import ApiError, from_exception
from .frames import error_frame, event_frame, notice_frame, reply_frame
from .observability import (
    AccessLog,
    RequestScope,
    TraceParent,
    current_scope,
    enter_scope,
    leave_scope,
    request_scope,
)
from .ops import OPS, Ctx
from .tracing import NoTracing

__all__ = ["WsDispatcher", "valid_request_id"]

log = logging.getLogger("orchestra")


def valid_request_id(value: Any) -> bool:
    """A WebSocket request ``id`` the server echoes: a string of at most 256 characters, a
    number, a boolean or null."""
    if isinstance(value, str):
        return len(value) <= MAX_ID_CHARS
    return value is None or isinstance(value, int | float)


def _bad_id() -> ApiError:
    # made per answer: an error object carries its own request id and time
    return ApiError(
        400, "REQ_001", f"'id' must be a string of at most {MAX_ID_CHARS} characters, a number, a boolean or null",
        field="id",
    )


#: fields of a request frame that are not arguments of its op
_NOT_ARGS = frozenset({"id", "op", "idempotency_key", "traceparent"})

#: the errors after which a connection cannot go on (except to refresh the token)
_UNAUTHENTICATED = ("AUTH_001", "AUTH_002")


class WsDispatcher:
    """Parses, answers and frames a session's requests."""

    def __init__(self, api: Api) -> None:
        self.api = api
        self.access = AccessLog()
        #: the ``traceparent`` of each session's upgrade request, by session key (written by
        #: the WebSocket bridge as sessions start and end)
        self.connection_traces: dict[str, TraceParent] = {}

    def parse(self, session: Session, raw: str | bytes) -> tuple[dict[str, Any], str] | bytes:
        try:
            request = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            return self.ws_error(None, ApiError(400, "REQ_001", f"malformed JSON: {exc}"))
        if not isinstance(request, dict):
            return self.ws_error(None, ApiError(400, "REQ_001", "a request is a JSON object with 'op'", field="op"))
        try:
            validate_depth(raw, request, self.api.config.max_json_depth)
        except InvalidRequest as exc:
            return self.ws_error(None, ApiError(400, "REQ_001", exc.message, field=exc.field))
        rid = request.get("id")
        if not valid_request_id(rid):
            return self.ws_error(None, _bad_id())
        name = request.get("op")
        op = OPS.get(name) if isinstance(name, str) else None
        if op is None or not op.ws:
            shown = repr(name[:64]) + ("..." if len(name) > 64 else "") if isinstance(name, str) else type(name).__name__
            return self.ws_error(rid, ApiError(404, "NOT_FOUND", f"unknown op {shown}", field="op"))
        return request, op.mode

    async def handle(self, session: Session, request: dict[str, Any]) -> bytes | None:
        """Answer one request: the reply frame, or None when it was queued already. Writes
        the op's access line (its trace: the frame's ``traceparent``, else the upgrade's)."""
        trace = TraceParent.parse(request["traceparent"]) if "traceparent" in request else None
        scope = RequestScope(self.api.new_request_id(), trace or self.connection_traces.get(session.key), "ws")
        if type(self.api.tracing) is NoTracing:  # every op's path: no context managers
            token = enter_scope(scope)
            try:
                return await self._handle(session, request, scope.request_id)
            finally:
                self.access.write(scope, "WS", "/ws")
                leave_scope(token)
        with request_scope(scope), self.api.tracing.span(scope, "WS", "/ws"):
            try:
                return await self._handle(session, request, scope.request_id)
            finally:
                self.access.write(scope, "WS", "/ws")

    async def _handle(self, session: Session, request: dict[str, Any], request_id: str) -> bytes | None:
        rid = request.get("id")
        try:
            args = {k: v for k, v in request.items() if k not in _NOT_ARGS}
            ctx = Ctx(request_id, session, rid, request.get("idempotency_key"))
            reply, _ = await self.api.call(request["op"], session.principal, args, ctx)
        except Exception as exc:
            error = from_exception(exc, request_id)
            reason = error.close_reason
            if error.code in _UNAUTHENTICATED and request["op"] != "auth.refresh":
                reason = CloseReason.UNAUTHENTICATED
            scope = current_scope()
            if scope is not None:
                scope.status = error.status
            if reason is not None:  # answer first, then close
                session.send_frame(self.ws_error(rid, error, request_id))
                session.close(reason, error.message[:120])
                return None
            return self.ws_error(rid, error, request_id)
        scope = current_scope()
        if scope is not None:
            scope.status = 200
        if reply is None:
            return None
        frame = reply_frame(rid, reply if isinstance(reply, bytes) else orjson.dumps(reply))
        if ctx.on_sent:
            hooks = ctx.on_sent

            def sent() -> None:
                for hook in hooks:
                    hook()

            session.send_frame(frame, sent)
            return None
        return frame

    def ws_error(self, rid: Any, error: ApiError, request_id: str | None = None) -> bytes:
        request_id = request_id or self.api.new_request_id()
        log.log(logging.WARNING if error.status >= 500 else logging.INFO,
                "ws request %s: %s %s", request_id, error.code, error.message)
        return error_frame(rid, error, request_id)

    def reply_frame(self, reply_id: Any, result: dict[str, Any]) -> bytes:
        return reply_frame(reply_id, orjson.dumps(result))

    # bound directly: a pushed event costs one call to frame
    notice_frame = staticmethod(notice_frame)
    event_frame = staticmethod(event_frame)
