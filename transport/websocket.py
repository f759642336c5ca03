"""The WebSocket bridge: an upgraded HTTP connection becomes a session.

wsproto speaks the protocol over the connection's stream (fed first the bytes h11 already
read), on the session's own tasks (:class:`WsConnection`); the first frame (or the
Authorization header) authenticates; the actor system then runs the session. Close reasons of
the session get their codes here. (trio-websocket is the clients' library, in the bench, the
tests and ``orchestra agent``; the server reads its frames itself, with no reader task and no
queue between the socket and the session.)
"""

from __future__ import annotations

import contextlib
import itertools
import os
from collections.abc import Iterator

import orjson
import trio
import trio_websocket
import wsproto
import wsproto.events
import wsproto.frame_protocol
import wsproto.utilities
from wsproto.connection import ConnectionState

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

__all__ = ["CLOSE_CODES", "WebSocketBridge", "WsConnection"]

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


#: bytes asked of the socket per read
RECEIVE_BYTES = 65536

#: messages received at most between two checkpoints of the receiving task
CHECKPOINT_EVERY = 16

#: frames out are made by wsproto's frame protocol (a server's, no extension agreed: the server
#: agrees none), the part of wsproto's ``Connection.send`` that makes the bytes of a frame
_FRAMES = wsproto.frame_protocol.FrameProtocol(client=False, extensions=[])


def text_frame(payload: bytes) -> bytes | bytearray:
    """``payload`` (UTF-8 text) as one unfragmented text frame, made by wsproto."""
    return _FRAMES.send_data(payload.decode(), True)


class WsConnection:
    """One server-side WebSocket connection, spoken with wsproto on the session's own tasks.

    The task that reads (the session's worker holding the reading turn) parses the frames
    itself: there is no reader task and no queue between the socket and the session, so a
    request reaches its handler with no task hand-off. Pings are answered, and a close from
    the peer replied to, as they are read. Any task may write; writes go out one at a time,
    in the order they were encoded (a FIFO lock), each frame encoded by wsproto.

    Protocol semantics (RFC 6455, as the clients see them): the upgrade is answered by wsproto
    (101, or its rejection of a request that is not a valid upgrade); a message over
    ``max_message_bytes`` (counted as trio-websocket counts it: ``len`` of the text or bytes,
    across fragments) closes 1009; a frame wsproto refuses (a protocol error, text that is not
    UTF-8) closes with wsproto's code (1002, 1007, ...); the peer's close is replied to and the
    TCP connection closed at once (a server closes first); our close waits, bounded by the
    caller, for the peer's reply, then closes the TCP connection.
    """

    def __init__(self, stream: trio.abc.Stream, max_message_bytes: int) -> None:
        self.stream = stream
        self.ws = wsproto.WSConnection(wsproto.ConnectionType.SERVER)
        self.max_message_bytes = max_message_bytes
        #: the close code: the peer's when it closed first, ours when we did; None while open
        #: and when the connection ended without a close frame
        self.close_code: int | None = None
        self._events: Iterator[wsproto.events.Event] = iter(())
        self._parts: list[str | bytes | bytearray] = []
        self._size = 0
        self._ended = False  # the TCP connection ended (read EOF, or closed by us)
        self._sending = trio.StrictFIFOLock()
        #: the socket, written to directly (non-blocking) while no write waits; None for
        #: another kind of stream, which is only written through ``send_all``
        self._socket = stream.socket if isinstance(stream, trio.SocketStream) else None
        #: bytes of a frame that :meth:`send_now` wrote in part: sent before anything else
        self._backlog = b""
        self._received = 0

    # -- the upgrade --

    async def accept(self, replay: bytes, extra_headers: list[tuple[bytes, bytes]]) -> bool:
        """Answer the upgrade request whose bytes (and any after them) are ``replay``. False
        if it is not a valid WebSocket upgrade: wsproto's rejection was sent, the stream closed."""
        try:
            self.ws.receive_data(replay)
            while True:
                for event in self.ws.events():
                    if isinstance(event, wsproto.events.Request):
                        await self._write(self.ws.send(wsproto.events.AcceptConnection(extra_headers=extra_headers)))
                        return True
                data = await self.stream.receive_some(RECEIVE_BYTES)
                if not data:
                    await self._end()
                    return False
                self.ws.receive_data(bytes(data))  # the same object when it is bytes already
        except wsproto.utilities.RemoteProtocolError as err:
            if err.event_hint is not None:
                with contextlib.suppress(ConnectionGone, wsproto.utilities.LocalProtocolError):
                    await self._write(self.ws.send(err.event_hint))
            await self._end()
            return False
        except ConnectionGone:
            await self._end()
            return False

    # -- the session's Connection --

    async def receive(self) -> str | bytes:
        """The next message. Read from the socket directly when it holds some, and from what
        was read already, so not every call is a checkpoint: every ``CHECKPOINT_EVERY``-th
        message is, so that a peer sending nothing but cheap frames (answered without waiting
        for anything) cannot keep the other tasks from running."""
        self._received += 1
        if self._received % CHECKPOINT_EVERY == 0:
            await trio.lowlevel.checkpoint()
        while True:
            for event in self._events:
                if isinstance(event, wsproto.events.Message):
                    self._size += len(event.data)
                    if self._size > self.max_message_bytes:
                        self._parts, self._size = [], 0
                        await self._close_now(1009, f"Exceeded maximum message size: {self.max_message_bytes} bytes")
                        raise ConnectionGone
                    self._parts.append(event.data)
                    if event.message_finished:
                        parts, self._parts, self._size = self._parts, [], 0
                        if isinstance(event, wsproto.events.TextMessage):
                            return parts[0] if len(parts) == 1 else "".join(parts)  # type: ignore[arg-type, return-value]
                        return b"".join(parts)  # type: ignore[arg-type]
                elif isinstance(event, wsproto.events.Ping):
                    with contextlib.suppress(wsproto.utilities.LocalProtocolError):
                        await self._write(self.ws.send(event.response()))
                elif isinstance(event, wsproto.events.CloseConnection):
                    await self._peer_closed(event)
                    raise ConnectionGone
            if self._ended or self.ws.state is ConnectionState.CLOSED:
                raise ConnectionGone
            data: bytes | bytearray | None = None
            if self._socket is not None:  # what the socket holds already: no trip through the scheduler
                try:
                    data = os.read(self._socket.fileno(), RECEIVE_BYTES)
                except BlockingIOError:
                    pass
                except OSError:
                    data = b""
            if data is None:
                try:
                    data = await self.stream.receive_some(RECEIVE_BYTES)
                except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                    data = b""
            if not data:  # the TCP connection ended without a close frame
                await self._end()
                raise ConnectionGone
            self.ws.receive_data(bytes(data))  # the same object when it is bytes already
            self._events = self.ws.events()

    async def send(self, frame: bytes) -> None:
        if self.ws.state is not ConnectionState.OPEN:
            raise ConnectionGone
        await self._write(text_frame(frame))

    async def send_many(self, frames: list[bytes]) -> None:
        """Every frame encoded, then one write (with none: what :meth:`send_now` left)."""
        if self.ws.state is not ConnectionState.OPEN:
            raise ConnectionGone
        await self._write(b"".join([text_frame(frame) for frame in frames]))

    def send_now(self, frame: bytes) -> bool:
        """Write ``frame`` without waiting, if nothing else is being written: True if it was
        taken (written, or written in part with the rest kept for the next write, see
        :attr:`backlogged`), False if it must be sent the usual way (a write under way, a
        full socket, a connection ending: nothing of it was written)."""
        sock = self._socket
        if (sock is None or self._backlog or self._ended or self._sending.locked()
                or self.ws.state is not ConnectionState.OPEN):
            return False
        data = text_frame(frame)
        try:
            n = os.write(sock.fileno(), data)
        except OSError:  # full (BlockingIOError), or gone: the usual way finds out which
            return False
        if n < len(data):
            self._backlog = bytes(data[n:])
        return True

    @property
    def backlogged(self) -> bool:
        """Part of a frame taken by :meth:`send_now` waits for the next write."""
        return bool(self._backlog)

    async def close(self, reason: CloseReason, message: str) -> None:
        """Close with ``reason``'s code, wait for the peer's reply (bounded by the caller),
        then close the TCP connection."""
        try:
            if self.ws.state is ConnectionState.OPEN:
                self.close_code = CLOSE_CODES[reason]
                await self._write(self.ws.send(wsproto.events.CloseConnection(self.close_code, message[:120])))
            while not self._ended and self.ws.state is ConnectionState.LOCAL_CLOSING:
                await self.receive()  # what the peer still sends is dropped until its close
                await trio.lowlevel.checkpoint()  # the caller's bound applies to a flood too
        except ConnectionGone:
            pass
        finally:
            await self._end()

    # -- internals --

    async def _write(self, data: bytes | bytearray) -> None:
        lock = self._sending
        sock = self._socket
        if sock is not None and not self._backlog and not lock.locked() and data:
            # nothing else is being written: straight to the socket, no trip through the
            # scheduler (what the kernel does not take now is sent the usual way below)
            if self._ended:
                raise ConnectionGone
            try:
                n = os.write(sock.fileno(), data)
            except BlockingIOError:
                n = 0
            except OSError:
                raise ConnectionGone from None
            if n == len(data):
                return
            data = data[n:]
        try:  # free: taken without the extra trip through the scheduler of ``async with``
            lock.acquire_nowait()
        except trio.WouldBlock:
            await lock.acquire()
        try:
            if self._ended:
                raise ConnectionGone
            if self._backlog:
                data, self._backlog = self._backlog + data, b""
            if data:
                await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            raise ConnectionGone from None
        finally:
            lock.release()

    async def _close_now(self, code: int, reason: str) -> None:
        """Close ``code`` for a fault of the peer's, without waiting for its reply."""
        self.close_code = code
        with contextlib.suppress(ConnectionGone, wsproto.utilities.LocalProtocolError):
            await self._write(self.ws.send(wsproto.events.CloseConnection(code, reason)))
        await self._end()

    async def _peer_closed(self, event: wsproto.events.CloseConnection) -> None:
        state = self.ws.state
        if state is ConnectionState.REMOTE_CLOSING:  # the peer closed: reply, then hang up
            self.close_code = event.code
            with contextlib.suppress(ConnectionGone, wsproto.utilities.LocalProtocolError):
                await self._write(self.ws.send(event.response()))
        elif state is ConnectionState.OPEN:  # not a frame from the peer: wsproto refused one
            await self._close_now(event.code, (event.reason or "")[:120])
            return
        await self._end()  # or the reply to our own close

    async def _end(self) -> None:
        if not self._ended:
            self._ended = True
            with contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                await self.stream.aclose()


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
        conn = WsConnection(stream, self.max_message_bytes)
        scope = current_scope()
        if not await conn.accept(replay, [(b"x-request-id", scope.request_id.encode())] if scope is not None else []):
            return
        if scope is not None:
            scope.status = 101
        try:
            await self._session(conn, headers)
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(2):
                await conn.close(CloseReason.NORMAL, "")  # a no-op unless the session never ran
            self.api.metrics_registry.websocket_closed(conn.close_code)

    async def _session(self, conn: WsConnection, headers: dict[bytes, bytes]) -> None:
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

    async def _authenticate(self, conn: WsConnection, headers: dict[bytes, bytes]) -> Principal | None:
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
