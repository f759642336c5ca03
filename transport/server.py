"""One port for HTTP/1.1 (llhttp through httptools, driven directly on trio streams) and WebSocket.

This module holds the server's lifecycle (accept, drain, stop) and the HTTP/1.1 connection:
reading requests within their limits, routing them (``routes.py``) to the operation table
(``api.py``) and writing the answers. A request for ``GET /ws`` with an Upgrade header is
handed to the WebSocket bridge (``websocket.py``). Each connection has header, body and idle
limits and dies alone: an error in one never reaches another.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson
import trio

from ..actors.records import MAX_JSON_DEPTH
from ..actors.session import CloseReason, CloseSession, SessionLimits
from .api import VERSION, Api
from .auth import bearer
from .errors import ApiError, encode_error, from_exception, shutting_down
from .http1 import HttpRefusal, Request, RequestReader, response_head
from .metrics import CONTENT_TYPE
from .observability import (
    AccessLog,
    RequestScope,
    TraceParent,
    current_scope,
    enter_scope,
    incoming_request_id,
    leave_scope,
    printable,
    request_scope,
)
from .openapi import DocLimits, asyncapi, openapi
from .ops import OPS, Ctx
from .routes import _ROUTES, Route, find_route, route_args
from .tracing import NoTracing
from .websocket import CONNECTION_GONE, WebSocketBridge

__all__ = ["Server", "ServerConfig", "_ROUTES"]

log = logging.getLogger("orchestra")

_T = TypeVar("_T")


def _too_large(request_id: str, limit: int, size: int | None = None) -> bytes:
    """The 413 answer to a body over ``limit`` bytes (``size`` when its length was declared)."""
    message = (
        f"request body of {size} bytes is over the limit of {limit}" if size is not None
        else f"request body is over the limit of {limit} bytes"
    )
    return encode_error(ApiError(413, "REQ_002", message, limit=limit), request_id)


async def _close(stream: trio.SocketStream, linger_seconds: float, linger_bytes: int) -> None:
    """Close ``stream`` without losing what was sent on it: end our side first, then read and
    drop what the client still sends (a body we refused, a slow head we cut) until it closes
    its side, for at most ``linger_seconds`` and ``linger_bytes`` (``ServerConfig``). Closing a
    socket that holds unread bytes sends a reset, which can make the client drop our last
    answer (a 413, say) unread, or see a reset where it should see the end of the stream."""
    try:
        await stream.send_eof()
        with trio.move_on_after(linger_seconds):
            drained = 0
            while drained < linger_bytes and (data := await stream.receive_some(65536)):
                drained += len(data)
    except CONNECTION_GONE:
        pass  # closed already (the WebSocket bridge closes its own), or reset by the client
    finally:
        await stream.aclose()


class _ClientGone(Exception):
    """The client of a blocking request went away before its answer."""


class _Waiting:
    """One HTTP connection's wait for a request: since when (``math.inf``: not waiting) and
    the connection's cancel scope, which :meth:`Server._close_idle` cancels once the wait is
    past the idle bound. (A scope per wait cost each request about 6 us of CPU.)"""

    __slots__ = ("since", "scope")

    def __init__(self, scope: trio.CancelScope) -> None:
        self.since = math.inf
        self.scope = scope


@dataclass(frozen=True)
class ServerConfig:
    max_body_bytes: int = 10 * 1024 * 1024
    max_header_bytes: int = 16 * 1024
    max_target_bytes: int = 8 * 1024
    #: seconds an HTTP connection may take to send a request's head (the wait for the next
    #: request on a keep-alive connection included); checked every ``idle_timeout / 10``
    #: seconds (1 s at most), so a connection is closed up to that much later
    idle_timeout: float = 60.0
    request_timeout: float = 30.0
    auth_timeout: float = 5.0
    #: JSON nesting of an HTTP body, the body object counting as 1 (see records.MAX_JSON_DEPTH)
    max_json_depth: int = MAX_JSON_DEPTH
    #: a closed connection's last bytes from the client are read and dropped for at most this
    #: long and this many bytes (see ``_close``); past either the socket is closed as it is
    linger_seconds: float = 0.5
    linger_bytes: int = 1 << 20
    session: SessionLimits = SessionLimits()


class Server:
    def __init__(self, api: Api, config: ServerConfig) -> None:
        self.api = api
        self.config = config
        self.connections = 0
        self.websockets = WebSocketBridge(
            api, max_message_bytes=config.max_body_bytes, auth_timeout=config.auth_timeout,
            limits=config.session,
        )
        self._http_scope = trio.CancelScope()
        self._accept_scope = trio.CancelScope()
        self.busy = 0
        self._idle = trio.Event()
        self.access = AccessLog()
        self._docs: dict[str, bytes] | None = None
        #: the HTTP connections being served, for the idle bound (:meth:`_close_idle`)
        self._waiting: set[_Waiting] = set()

    # -- lifecycle --

    async def serve(
        self,
        listeners: list[trio.SocketListener],
        *,
        task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        """Accept and serve until :meth:`stop_accepting`, then until in-flight work drains
        (or :meth:`abort` cancels it)."""
        with self._http_scope:
            async with trio.open_nursery() as watch:
                watch.start_soon(self._close_idle)
                async with trio.open_nursery() as handlers:
                    async with trio.open_nursery() as acceptors:
                        self._accept_scope = acceptors.cancel_scope
                        for listener in listeners:
                            acceptors.start_soon(self._accept_loop, listener, handlers)
                        task_status.started()
                    for listener in listeners:
                        await listener.aclose()
                watch.cancel_scope.cancel()  # every connection has ended: so has their watch

    async def _accept_loop(self, listener: trio.SocketListener, handlers: trio.Nursery) -> None:
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:  # out of file descriptors and the like: wait, don't die
                log.warning("accept failed: %s", exc)
                await trio.sleep(0.1)
                continue
            handlers.start_soon(self._handle, stream)

    async def _close_idle(self) -> None:
        """Cancel each connection whose wait for a request is past ``idle_timeout``: one task
        for all connections, which then set a time stamp per request instead of a deadline."""
        timeout = self.config.idle_timeout
        tick = min(1.0, max(0.01, timeout / 10))
        while True:
            await trio.sleep(tick)
            late = trio.current_time() - timeout
            for waiting in self._waiting:  # (no checkpoint in this loop: the set holds still)
                if waiting.since < late:
                    waiting.scope.cancel()

    def stop_accepting(self) -> None:
        self._accept_scope.cancel()

    async def drain(self, grace: float) -> None:
        """Wait up to ``grace`` seconds for requests in progress, then cancel what is left."""
        with trio.move_on_after(grace):
            while self.busy:
                self._idle = trio.Event()
                await self._idle.wait()
        self._http_scope.cancel()

    async def close_sessions(
        self, reason: CloseReason = CloseReason.GOING_AWAY, message: str = "server shutting down"
    ) -> None:
        live = self.api.system.live_sessions
        for session in live:
            session.ref.try_cast(CloseSession(reason, message))
        with trio.move_on_after(3):
            for session in live:
                await session.finished.wait()

    # -- HTTP --

    async def _handle(self, stream: trio.SocketStream) -> None:
        self.connections += 1
        try:
            await self._http(stream)
        except (*CONNECTION_GONE, trio.TooSlowError):
            pass
        except Exception:
            # A connection dies alone: whatever went wrong here must not reach the nursery
            # that holds every other connection.
            log.exception("connection failed; closing it")
        finally:
            self.connections -= 1
            config = self.config
            with trio.move_on_after(config.linger_seconds + 0.5) as scope:
                scope.shield = True
                await _close(stream, config.linger_seconds, config.linger_bytes)

    async def _http(self, stream: trio.SocketStream) -> None:
        with trio.CancelScope() as scope:
            waiting = _Waiting(scope)
            self._waiting.add(waiting)
            try:
                await self._requests(stream, waiting)
            finally:
                self._waiting.discard(waiting)
        if scope.cancelled_caught:  # the idle bound (only a wait is ever cancelled by it)
            raise trio.TooSlowError

    async def _requests(self, stream: trio.SocketStream, waiting: _Waiting) -> None:
        reader = RequestReader(self.config.max_header_bytes, self.config.max_body_bytes)
        while True:
            try:
                req = await self._next_request(stream, reader, waiting)
            except HttpRefusal as exc:
                await self._refuse(stream, exc.status, exc.message)
                return
            if req is None:
                return
            fields = req.fields
            scope = self._scope_of(fields)
            if req.websocket:
                # the connection's line: written when it ends (status 101 once switched)
                try:
                    with request_scope(scope):
                        await self._websocket(stream, req)
                finally:
                    self.access.write(scope, "GET", req.target.decode("latin-1").partition("?")[0])
                return
            method = req.method.decode("latin-1")
            path = req.target.decode("latin-1").partition("?")[0]
            self.busy += 1
            try:
                if type(self.api.tracing) is NoTracing:  # every request's path: no context managers
                    token = enter_scope(scope)
                    try:
                        answered = await self._answer(stream, reader, req, scope)
                    finally:
                        leave_scope(token)
                else:
                    with request_scope(scope), self.api.tracing.span(scope, method, path):
                        answered = await self._answer(stream, reader, req, scope)
            finally:
                self.busy -= 1
                if not self.busy:
                    self._idle.set()
                self.access.write(scope, method, path)
            if not answered or not req.keep_alive or req.upgrade or self.api.shutting_down:
                return

    async def _answer(self, stream: trio.SocketStream, reader: RequestReader, req: Request, scope: RequestScope) -> bool:
        """Answer request ``req`` (its scope current); False when the connection must end
        without an answer (the refusal, if any, already sent)."""
        on_sent: list[Callable[[], None]] = []
        status, body, headers = await self._respond_to(stream, reader, req, on_sent)
        if status is None:
            return False
        elapsed_ms = (time.perf_counter() - scope.started) * 1000
        headers = [*headers, (b"server-timing", b"app;dur=%.3f" % elapsed_ms)]
        await self._send(stream, status, body, headers, head=req.method == b"HEAD", close=not req.keep_alive)
        for hook in on_sent:  # the answer was handed to the socket
            hook()
        return True

    def _scope_of(self, headers: dict[bytes, bytes]) -> RequestScope:
        """The scope of a request with ``headers``: its ``X-Request-ID`` (if usable, else a new
        id) and its ``traceparent`` (if valid)."""
        given = headers.get(b"x-request-id")
        request_id = incoming_request_id(given) if given is not None else None
        parent = headers.get(b"traceparent")
        trace = TraceParent.parse(parent) if parent is not None else None
        return RequestScope(request_id or self.api.new_request_id(), trace)

    async def _next_request(self, stream: trio.SocketStream, reader: RequestReader, waiting: _Waiting) -> Request | None:
        """The connection's next request (its head complete); None when the connection ends
        between requests. Raises :class:`HttpRefusal`."""
        req = reader.next()
        if req is not None:  # already parsed: no wait
            return req
        waiting.since = trio.current_time()  # from now on under the idle bound
        while req is None:
            if self.api.shutting_down and not reader.in_message:
                return None  # an idle keep-alive connection: close it
            if reader.done:
                return None  # switched protocols or refused: nothing more to read
            data = await stream.receive_some(65536)
            if not data:
                if reader.in_message:
                    raise HttpRefusal(400, "peer unexpectedly closed the connection mid-request")
                return None
            reader.feed(data)
            req = reader.next()
        waiting.since = math.inf
        return req

    async def _respond_to(
        self, stream: trio.SocketStream, reader: RequestReader, req: Request, on_sent: list[Callable[[], None]],
    ) -> tuple[int | None, bytes, list[tuple[bytes, bytes]]]:
        current = current_scope()
        request_id = current.request_id if current is not None else self.api.new_request_id()
        limit = self.config.max_body_bytes
        try:
            if not req.complete and not req.too_large:
                # one deadline for the rest of the body: a slow drip cannot hold the connection forever
                # (what came with the head, all of a GET's and of most small bodies, needs no deadline)
                with trio.CancelScope(deadline=trio.current_time() + self.config.request_timeout) as scope:
                    await self._read_body(stream, reader, req)
                if scope.cancelled_caught:
                    raise trio.TooSlowError
        except HttpRefusal as exc:
            await self._refuse(stream, exc.status, exc.message)
            return None, b"", []
        if req.too_large:
            declared = req.content_length if req.content_length is not None and req.content_length > limit else None
            await self._send(stream, 413, _too_large(request_id, limit, declared), [(b"connection", b"close")])
            return None, b"", []
        try:
            return await self._route(req, req.body(), request_id, stream, reader, on_sent)
        except _ClientGone:
            return None, b"", []
        except trio.Cancelled:
            if self.api.shutting_down:  # the shutdown's grace ended: say so, not just close
                await self._refuse_on_shutdown(stream, request_id)
            raise
        except Exception as exc:
            error = from_exception(exc, request_id)
            log.info("request %s: %s %s %s: %s", request_id, req.method.decode(),
                     printable(req.target.decode("latin-1")), error.code, error.message)
            return error.status, encode_error(error, request_id), error.headers

    async def _refuse_on_shutdown(self, stream: trio.SocketStream, request_id: str) -> None:
        error = shutting_down()
        with trio.CancelScope(shield=True, deadline=trio.current_time() + 0.5):
            try:
                await self._send(stream, 503, encode_error(error, request_id),
                                 [*error.headers, (b"connection", b"close")])
            except CONNECTION_GONE:
                pass  # the client is gone

    async def _read_body(self, stream: trio.SocketStream, reader: RequestReader, req: Request) -> None:
        """Read the rest of ``req``'s body (until it is complete or over the bound); raises
        :class:`HttpRefusal` for a malformed body or one the client ended early."""
        while not req.complete and not req.too_large:
            if reader.done:  # the body was refused (llhttp's reason) before it was complete
                raise reader.refusal or HttpRefusal(400, "malformed request body")
            data = await stream.receive_some(65536)
            if not data:
                raise HttpRefusal(400, "peer unexpectedly closed the connection mid-request")
            reader.feed(data)

    async def _route(
        self, req: Request, body: bytes, request_id: str,
        stream: trio.SocketStream, reader: RequestReader, on_sent: list[Callable[[], None]],
    ) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        headers = req.fields
        target = req.target.decode("latin-1")
        if len(req.target) > self.config.max_target_bytes:
            raise ApiError(414, "REQ_001", "request target too long")
        path, _, query = target.partition("?")
        method = req.method.decode()
        if method == "HEAD":
            method = "GET"  # answered like GET, sent without the body
        if path == "/health" and method == "GET":
            healthy, health = self.api.health()
            return (200 if healthy else 503), orjson.dumps(health), [] if healthy else [(b"retry-after", b"1")]
        if path == "/metrics" and method == "GET":
            return 200, await self.api.metrics(self.connections), [(b"content-type", CONTENT_TYPE)]
        if path in ("/openapi.json", "/asyncapi.json") and method == "GET":
            return 200, self._documents()[path], []
        if path == "/status" and method == "GET":
            token = bearer(headers.get(b"authorization"))
            principal = self.api.auth.verify(token) if token else None
            return 200, orjson.dumps(await self.api.status(principal)), []
        route = find_route(method, path)
        if isinstance(route, Route):
            return await self._call(route, method, headers, body, query, request_id, stream, reader, on_sent)
        if route:
            allowed = ", ".join(sorted(set(route)))
            raise ApiError(
                405, "METHOD", f"{method} is not allowed on {path}; use {allowed}",
                headers=[(b"allow", allowed.encode())],
            )
        raise ApiError(404, "NOT_FOUND", f"no route {method} {path}")

    async def _call(
        self, route: Route, method: str, headers: dict[bytes, bytes], body: bytes, query: str,
        request_id: str, stream: trio.SocketStream, reader: RequestReader,
        on_sent: list[Callable[[], None]],
    ) -> tuple[int, bytes, list[tuple[bytes, bytes]]]:
        args = route_args(route, method, body, query, self.config.max_json_depth)
        token = bearer(headers.get(b"authorization"))
        principal = self.api.auth.verify(token) if token else None
        idem = headers.get(b"idempotency-key")
        # surrogateescape: bytes that are not UTF-8 become unprintable, so the key is refused
        ctx = Ctx(request_id, idempotency_key=idem.decode("utf-8", "surrogateescape") if idem is not None else None,
                  on_sent=on_sent)
        if OPS[route.op].mode == "blocking":
            reply, extra = await self._while_present(stream, reader, self.api.call, route.op, principal, args, ctx)
        else:
            reply, extra = await self.api.call(route.op, principal, args, ctx)
        payload = reply if isinstance(reply, bytes) else orjson.dumps(reply)
        return route.status, payload, extra

    async def _while_present(
        self, stream: trio.SocketStream, reader: RequestReader,
        answer: Callable[..., Awaitable[_T]], *args: Any,
    ) -> _T:
        """Run ``answer(*args)`` (a blocking request) while watching the socket.

        If the client goes away (end of stream or a reset) the request is cancelled and
        :class:`_ClientGone` raised: a wait whose client left takes no event. Bytes that
        arrive meanwhile (a pipelined request) are handed to the reader, which keeps what it
        parsed of them for the next request; past ``max_header_bytes`` of them the watch stops reading (TCP
        backpressure), so it never buffers more than one request head.
        """
        answered: list[_T] = []
        failed: list[Exception] = []

        async def watch(scope: trio.CancelScope) -> None:
            buffered = 0
            try:
                while buffered <= self.config.max_header_bytes:
                    data = await stream.receive_some(self.config.max_header_bytes + 1 - buffered)
                    if not data:
                        break
                    reader.feed(data)
                    buffered += len(data)
                else:
                    return  # the client is clearly there: stop reading
            except CONNECTION_GONE:
                pass
            scope.cancel()

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(watch, nursery.cancel_scope)
                try:
                    answered.append(await answer(*args))
                except Exception as exc:
                    failed.append(exc)
                nursery.cancel_scope.cancel()
        except BaseExceptionGroup as group:
            # cancelled from outside (shutdown): one Cancelled, as the caller expects
            if all(isinstance(e, trio.Cancelled) for e in group.exceptions):
                raise group.exceptions[0] from None
            raise
        if failed:
            raise failed[0]
        if not answered:
            raise _ClientGone
        return answered[0]

    def _documents(self) -> dict[str, bytes]:
        """``/openapi.json`` and ``/asyncapi.json`` of this server (its limits), made once."""
        if self._docs is None:
            limits = DocLimits(VERSION, self.api.config.wait_max_ms, self.config.max_body_bytes)
            self._docs = {"/openapi.json": orjson.dumps(openapi(limits)),
                          "/asyncapi.json": orjson.dumps(asyncapi(limits))}
        return self._docs

    async def _send(
        self, stream: trio.SocketStream, status: int, body: bytes, headers: list[tuple[bytes, bytes]],
        head: bool = False, close: bool = False,
    ) -> None:
        """Write an answer: ``body`` as JSON unless ``headers`` name its type; ``connection:
        close`` when ``close``, when ``headers`` hold it or when the server is shutting down
        (the caller then ends the connection); no body when ``head`` (a HEAD request's answer)."""
        json = True
        for name, _ in headers:
            if name == b"content-type":
                json = False
            elif name == b"connection":
                close = True  # (said once, last)
        if close:
            headers = [h for h in headers if h[0] != b"connection"]
        scope = current_scope()
        if scope is not None:  # the answer of a request: it says which
            scope.status = status
            headers = [*headers, (b"x-request-id", scope.request_id.encode())]
        data = response_head(status, headers, len(body), json, close or self.api.shutting_down)
        await stream.send_all(data if head else data + body)

    async def _refuse(self, stream: trio.SocketStream, status: int, why: str) -> None:
        request_id = self.api.new_request_id()
        code = "REQ_002" if status in (413, 431) else "REQ_001"
        body = encode_error(ApiError(status, code, f"bad HTTP request: {why}"), request_id)
        await self._send(stream, status, body, [(b"connection", b"close")])

    # -- WebSocket --

    async def _websocket(self, stream: trio.SocketStream, req: Request) -> None:
        path = req.target.split(b"?", 1)[0]
        if path != b"/ws" or self.api.shutting_down:
            status = 404 if path != b"/ws" else 503
            error = ApiError(status, "NOT_FOUND" if status == 404 else "UNAVAILABLE", "no WebSocket endpoint here" if status == 404 else "shutting down")
            # answering anything but 101 declines the switch; the connection then ends
            await self._send(stream, status, encode_error(error, self.api.new_request_id()),
                             [(b"connection", b"close")])
            return
        head = b"%s %s HTTP/1.1\r\n" % (req.method, req.target)
        head += b"".join(b"%s: %s\r\n" % (n, v) for n, v in req.headers) + b"\r\n"
        await self.websockets.serve(stream, head + req.trailing, req.fields)
