"""The WebSocket bridge: an upgraded HTTP connection becomes a session.

trio-websocket speaks the protocol over the connection's stream (with the bytes h11 already
read replayed first); the first frame (or the Authorization header) authenticates; the actor
system then runs the session. Close reasons of the session get their codes here.
"""

from __future__ import annotations

import itertools

import orjson
import trio
import trio_websocket

from ..actors.errors import InvalidRequest
from ..actors.principal import Principal
from ..actors.records import validate_depth
from ..actors.runtime import SupervisorError
from ..actors.session import CloseReason, ConnectionGone, SessionLimits
from .api import Api
from .auth import bearer
from .dispatch import WsDispatcher, valid_request_id
from .errors import ApiError
from .observability import TraceParent, current_scope

__all__ = ["CLOSE_CODES", "WebSocketBridge"]

#: The close code of each reason a session ends (PROTOCOL.md "Close codes").
CLOSE_CODES: dict[CloseReason, int] = {
    CloseReason.NORMAL: 1000,
    CloseReason.GOING_AWAY: 1001,
    CloseReason.CRASHED: 1011,
    CloseReason.RESTARTED: 1012,
    CloseReason.UNAUTHENTICATED: 4001,
    CloseReason.FORBIDDEN: 4003,
    CloseReason.TOO_SLOW: 4008,
}
#: What reading, writing or closing a connection the peer already left raises.
CONNECTION_GONE = (trio_websocket.ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError, OSError)


class ReplayStream(trio.abc.Stream):
    """A stream whose first reads return bytes that were already read from the socket.

    Its writes are serialized by its own lock: trio-websocket serializes the writes it makes,
    but a corked batch is flushed (:meth:`uncork`) outside trio-websocket's lock, and a frame
    written meanwhile (a pong from trio-websocket's reader, an answer written by the task
    that made it) must wait for the flush instead of colliding with it on the socket.
    """

    def __init__(self, stream: trio.abc.Stream, prefix: bytes) -> None:
        self._stream = stream
        self._prefix = prefix
        self._corked: list[bytes] | None = None
        self._sending = trio.StrictFIFOLock()

    def cork(self) -> None:
        """Collect writes until :meth:`uncork`, which sends them in one write."""
        self._corked = []

    async def uncork(self) -> None:
        data, self._corked = self._corked, None
        if data:
            await self._send(b"".join(data))

    def discard_corked(self) -> None:
        self._corked = None

    async def receive_some(self, max_bytes: int | None = None) -> bytes | bytearray:
        if self._prefix:
            n = len(self._prefix) if max_bytes is None else max_bytes
            chunk, self._prefix = self._prefix[:n], self._prefix[n:]
            await trio.lowlevel.checkpoint()
            return chunk
        return await self._stream.receive_some(max_bytes)

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self._corked is not None:
            self._corked.append(bytes(data))
            await trio.lowlevel.checkpoint()
            return
        await self._send(data)

    async def _send(self, data: bytes | bytearray | memoryview) -> None:
        lock = self._sending
        try:  # free: taken without the extra trip through the scheduler of ``async with``
            lock.acquire_nowait()
        except trio.WouldBlock:
            await lock.acquire()
        try:
            await self._stream.send_all(data)
        finally:
            lock.release()

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def aclose(self) -> None:
        await self._stream.aclose()


class _WsConnection:
    """Adapts a trio-websocket connection to the session's Connection."""

    def __init__(self, ws: trio_websocket.WebSocketConnection, stream: ReplayStream) -> None:
        self.ws = ws
        self.stream = stream

    async def receive(self) -> str | bytes:
        try:
            return await self.ws.get_message()
        except trio_websocket.ConnectionClosed:
            raise ConnectionGone from None

    async def send(self, frame: bytes) -> None:
        try:
            await self.ws.send_message(frame.decode())
        except CONNECTION_GONE:
            raise ConnectionGone from None

    async def send_many(self, frames: list[bytes]) -> None:
        if len(frames) == 1:
            await self.send(frames[0])
            return
        self.stream.cork()
        try:
            for frame in frames:
                await self.ws.send_message(frame.decode())
            await self.stream.uncork()
        except CONNECTION_GONE:
            raise ConnectionGone from None
        finally:
            self.stream.discard_corked()

    async def close(self, reason: CloseReason, message: str) -> None:
        try:
            await self.ws.aclose(CLOSE_CODES[reason], message[:120])
        except CONNECTION_GONE:
            pass


class WebSocketBridge:
    """Runs each upgraded connection as a session of the actor system."""

    def __init__(
        self, api: Api, *, max_message_bytes: int, auth_timeout: float, limits: SessionLimits,
    ) -> None:
        self.api = api
        self.dispatcher = WsDispatcher(api)
        self.max_message_bytes = max_message_bytes
        self.auth_timeout = auth_timeout
        self.limits = limits
        self._session_ids = itertools.count(1)

    async def serve(self, stream: trio.abc.Stream, replay: bytes, headers: dict[bytes, bytes]) -> None:
        """Serve one upgraded connection until its session ends; ``replay`` are the bytes of
        the upgrade request (and any after it) already read from ``stream``."""
        replaying = ReplayStream(stream, replay)
        async with trio.open_nursery() as nursery:
            ws_request = await trio_websocket.wrap_server_stream(
                nursery, replaying, message_queue_size=16, max_message_size=self.max_message_bytes
            )
            scope = current_scope()
            ws = await ws_request.accept(
                extra_headers=[(b"x-request-id", scope.request_id.encode())] if scope is not None else None
            )
            if scope is not None:
                scope.status = 101
            try:
                await self._session(_WsConnection(ws, replaying), headers)
            finally:
                closed = ws.closed
                self.api.metrics_registry.websocket_closed(closed.code if closed is not None else None)
                nursery.cancel_scope.cancel()

    async def _session(self, conn: _WsConnection, headers: dict[bytes, bytes]) -> None:
        try:
            principal = await self._authenticate(conn, headers)
        except ApiError as error:
            await conn.close(CloseReason.UNAUTHENTICATED, error.message)
            return
        except ConnectionGone:
            return
        if principal is None:
            return
        scope = current_scope()
        if scope is not None:  # the upgrade's access line names who connected
            scope.agent, scope.project = principal.sub, principal.project_id
        key = f"{principal.sub}#{next(self._session_ids)}"
        trace = TraceParent.parse(headers.get(b"traceparent"))
        if trace is not None:
            self.dispatcher.connection_traces[key] = trace
        try:
            try:
                session = await self.api.system.start_session(
                    key, conn, self.dispatcher, self.limits, principal
                )
            except SupervisorError:  # the sessions supervisor is stopping, or a duplicate key
                await conn.close(CloseReason.CRASHED, "could not start the session")
                return
            await session.finished.wait()
        finally:
            self.dispatcher.connection_traces.pop(key, None)

    async def _authenticate(self, conn: _WsConnection, headers: dict[bytes, bytes]) -> Principal | None:
        token = bearer(headers.get(b"authorization"))
        if token is not None:
            return self.api.auth.verify(token)
        with trio.move_on_after(self.auth_timeout):
            raw = await conn.receive()
            try:
                frame = orjson.loads(raw)
            except orjson.JSONDecodeError:
                raise ApiError(401, "AUTH_001", "first frame must be {\"op\":\"auth\",\"token\":...}") from None
            if not isinstance(frame, dict) or frame.get("op") != "auth" or not isinstance(frame.get("token"), str):
                raise ApiError(401, "AUTH_001", "first frame must be {\"op\":\"auth\",\"token\":...}")
            try:
                validate_depth(raw, frame, self.api.config.max_json_depth)
            except InvalidRequest as exc:
                raise ApiError(401, "AUTH_001", f"the auth frame: {exc.message}") from None
            if not valid_request_id(frame.get("id")):
                raise ApiError(401, "AUTH_001", "the auth frame's 'id' must be a string of at most 256 "
                                                "characters, a number, a boolean or null")
            principal = self.api.auth.verify(frame["token"])
            reply = {"authenticated": True, "sub": principal.sub, "project_id": principal.project_id,
                     "expires_at": principal.exp}
            await conn.send(self.dispatcher.reply_frame(frame.get("id"), reply))
            return principal
        raise ApiError(401, "AUTH_001", f"no token within {self.auth_timeout:g}s")
