"""The session actor: one per connected agent (one WebSocket connection).

It owns the connection's bounded outbound queue, its subscriptions and its authentication
state. Requests are read by one task; cheap ones are answered inline, the others by a small
fixed pool of workers, and long waits by tasks bounded per connection. Nothing here knows the
wire format: the transport hands in a :class:`Connection` and a :class:`Dispatcher`.

A session is a *temporary* child: when it crashes its connection is closed (1011) and the
agent reconnects and resumes its subscriptions from their cursors; nothing acknowledged is lost.
"""

from __future__ import annotations

import math
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

import trio

from .events import encode_cursor
from .runtime import Actor, ActorError, ActorRef, Outbox, run_actor

__all__ = ["Connection", "ConnectionGone", "Dispatcher", "Session", "SessionLimits", "CloseSession"]

CLOSE_NORMAL = 1000
CLOSE_GOING_AWAY = 1001
CLOSE_INTERNAL = 1011
CLOSE_RESTART = 1012
CLOSE_AUTH = 4001
CLOSE_FORBIDDEN = 4003
CLOSE_SLOW = 4008


class ConnectionGone(Exception):
    """The peer went away."""


class Connection(Protocol):
    async def receive(self) -> str | bytes: ...
    async def send(self, frame: bytes) -> None: ...

    async def send_many(self, frames: list[bytes]) -> None:
        """Send frames in order, in as few writes to the socket as the transport can."""
        ...

    async def close(self, code: int, reason: str) -> None: ...


class Dispatcher(Protocol):
    def parse(self, session: Session, raw: str | bytes) -> tuple[dict[str, Any], str] | bytes:
        """A request and how to run it ("inline", "pooled", "blocking"), or an error frame."""
        ...

    async def handle(self, session: Session, request: dict[str, Any]) -> bytes | None:
        """Answer one request: the reply frame, or None when the reply was queued already."""
        ...

    def reply_frame(self, reply_id: Any, result: dict[str, Any]) -> bytes:
        """The frame of a successful answer."""
        ...

    def notice_frame(self, op: str, fields: dict[str, Any]) -> bytes:
        """A frame the server sends on its own (not an answer)."""
        ...


@dataclass(frozen=True)
class SessionLimits:
    max_messages: int = 1000
    max_bytes: int = 8 * 1024 * 1024
    workers: int = 8
    max_blocking: int = 64
    request_queue: int = 256


@dataclass(frozen=True, slots=True)
class CloseSession:
    code: int
    reason: str


@dataclass(frozen=True, slots=True)
class SetExpiry:
    expires_at: float  # trio time


class _SessionActor(Actor):
    """The mailbox side of a session: closes, token expiry and fault injection.

    Before the token expires the client is told (a notice frame, ``warn_before`` seconds
    ahead); at expiry, unless a refresh moved it, the connection is closed with 4001.
    """

    warn_before = 30.0

    def __init__(self, session: Session) -> None:
        self.session = session
        self.warned_for = math.inf

    def next_deadline(self) -> float:
        expires = self.session.expires_at
        if expires != self.warned_for:
            return expires - self.warn_before
        return expires

    async def on_timeout(self) -> None:
        session = self.session
        now = trio.current_time()
        if session.expires_at != self.warned_for and now < session.expires_at:
            self.warned_for = session.expires_at
            session.send_frame(session.dispatcher.notice_frame(
                "auth.expiring", {"expires_in_seconds": round(session.expires_at - now, 3)}
            ))
            return
        session.expires_at = math.inf
        await session.close(CLOSE_AUTH, "token expired; reconnect with a fresh token")

    async def handle(self, msg: Any) -> Any:
        if isinstance(msg, CloseSession):
            await self.session.close(msg.code, msg.reason)
        elif isinstance(msg, SetExpiry):
            self.session.expires_at = msg.expires_at
        return None


class Session:
    """One connection's state and tasks. ``claims`` is the verified token, set by the transport."""

    def __init__(
        self,
        key: str,
        conn: Connection,
        dispatcher: Dispatcher,
        limits: SessionLimits,
        on_close: Callable[[Session], Awaitable[None]] | None = None,
    ) -> None:
        self.key = key
        self.conn = conn
        self.dispatcher = dispatcher
        self.limits = limits
        self.on_close = on_close
        self.ref = ActorRef(f"session:{key}", mailbox_size=64)
        self.outbox = Outbox(limits.max_messages, limits.max_bytes)
        self.claims: dict[str, Any] = {}
        #: the verified token (a transport Principal); set before the session starts
        self.principal: Any = None
        self.finished = trio.Event()
        self.agent_id = key.split("#", 1)[0]
        self.expires_at = math.inf
        #: sid -> project ref, for unsubscribe and cleanup
        self.subscriptions: dict[str, ActorRef] = {}
        #: the last cursor written to the socket, per subscription
        self.delivered: dict[str, str] = {}
        self.last_delivered: str | None = None
        self.watched: set[str] = set()
        #: this connection's global ("*") subscriptions, kept by the broker
        self.global_subscriptions: set[str] = set()
        #: replays waiting for the outbox to drain: the message to cast -> the project's ref
        self._pulls: dict[Any, ActorRef] = {}
        self.close_code: int | None = None
        self.requests = 0
        self._nursery: trio.Nursery | None = None
        self._closing = trio.Event()
        self._blocking = trio.CapacityLimiter(limits.max_blocking)
        self._writer_done = trio.Event()

    @property
    def session_key(self) -> str:
        return self.key

    # -- SubscriptionSink (called from project actors' tasks; never blocks) --

    def subscribed(self, reply_id: Any, reply: dict[str, Any]) -> None:
        self.outbox.offer(self.dispatcher.reply_frame(reply_id, reply))

    def deliver(self, sid: str, cursor: str, event: bytes) -> bool:
        frame = b'{"op":"event","subscription":"%s","event":%s}' % (sid.encode(), event)
        return self.outbox.offer(frame, (sid, cursor))

    def begin(self, sid: str, cursor: str) -> None:
        self.delivered[sid] = cursor

    def replay(self, sid: str, cursor: str, event: bytes) -> bool:
        # Replay fills the outbox to half its bounds only: the other half stays for live
        # events (of other subscriptions) and answers. One frame always fits an empty outbox.
        frame = b'{"op":"event","subscription":"%s","event":%s}' % (sid.encode(), event)
        outbox = self.outbox
        if len(outbox) and (
            len(outbox) >= outbox.max_messages // 2
            or outbox.queued_bytes + len(frame) > outbox.max_bytes // 2
        ):
            return False
        return outbox.offer(frame, (sid, cursor))

    def want_more(self, ref: ActorRef, msg: Any) -> None:
        self._pulls[msg] = ref

    def behind(self, sid: str) -> None:
        self._cut_behind()

    def attached(self, project_id: str, sid: str, ref: ActorRef) -> None:
        """A global ("*") subscription reached ``project_id`` (called by the broker)."""
        self.subscriptions[sid] = ref
        self.watch(project_id, ref)

    def _cut_behind(self) -> None:
        if self.close_code is None:
            cursor = self.resume_cursor()
            self.close_code = CLOSE_SLOW
            self.close_reason = (
                f"too far behind; last cursor delivered {cursor}; resubscribe with since={cursor}"
            )
        self._closing.set()

    def resume_cursor(self) -> str:
        """A cursor to resume from with nothing lost: the oldest of every subscription's last
        cursor written (or, if none was yet, the cursor it started from)."""
        if self.delivered:
            return min(self.delivered.values())
        return self.last_delivered or encode_cursor(0)

    async def _pull_more(self) -> None:
        """Ask for more replay once the outbox is back under the replay mark."""
        outbox = self.outbox
        if len(outbox) >= outbox.max_messages // 2 or outbox.queued_bytes > outbox.max_bytes // 2:
            return
        pulls, self._pulls = self._pulls, {}
        for msg, ref in pulls.items():
            try:
                await ref.cast(msg)
            except ActorError:
                pass  # the project stopped: its restart closes this connection (1012)

    # -- lifecycle --

    def send_frame(self, frame: bytes, on_sent: Callable[[], None] | None = None) -> bool:
        """Queue a frame; ``on_sent`` is called once the writer wrote it (never if it was not)."""
        return self.outbox.offer(frame, on_sent)

    async def close(self, code: int, reason: str) -> None:
        if self.close_code is None:
            self.close_code = code
            self.close_reason = reason
        self._closing.set()

    def watch(self, project: str, ref: ActorRef) -> None:
        """Close this connection (1012) if the project's actor restarts under its subscriptions."""
        if project in self.watched or self._nursery is None:
            return
        self.watched.add(project)
        down = ref.monitor()
        self._nursery.start_soon(self._watch, project, down)

    def watch_broker(self, ref: ActorRef) -> None:
        """Close this connection (1012) if the broker, which keeps its global ("*")
        subscriptions, restarts: they would no longer reach projects started later."""
        if "*" in self.watched or self._nursery is None:
            return
        self.watched.add("*")
        self._nursery.start_soon(self._watch_broker, ref.monitor())

    async def _watch_broker(self, down: trio.Event) -> None:
        await down.wait()
        self.watched.discard("*")
        if self.global_subscriptions:
            await self.close(CLOSE_RESTART, "broker restarted; resubscribe '*' with since per project")

    async def _watch(self, project: str, down: trio.Event) -> None:
        await down.wait()
        self.watched.discard(project)
        if any(r.name.endswith(f":{project}") for r in self.subscriptions.values()):
            mine = [c for sid, c in self.delivered.items() if sid.startswith(f"{project}/")]
            cursor = min(mine) if mine else (self.last_delivered or "")
            await self.close(CLOSE_RESTART, f"project restarted; resubscribe with since={cursor}")

    async def run(self, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        requests_send, requests_recv = trio.open_memory_channel[dict[str, Any]](
            self.limits.request_queue
        )
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                await nursery.start(run_actor, self.ref, _SessionActor(self))
                nursery.start_soon(self._writer)
                for _ in range(self.limits.workers):
                    nursery.start_soon(self._worker, requests_recv)
                nursery.start_soon(self._reader, requests_send)
                task_status.started()
                await self._closing.wait()
                if not self.outbox.overflowed:
                    # let the writer flush what is already queued (a last error frame)
                    self.outbox.close()
                    with trio.move_on_after(1):
                        await self._writer_done.wait()
                nursery.cancel_scope.cancel()
        finally:
            self.outbox.close()
            with trio.CancelScope(shield=True):
                if self.close_code is None:
                    self.close_code, self.close_reason = CLOSE_INTERNAL, "session crashed"
                with trio.move_on_after(2):
                    await self.conn.close(self.close_code, self.close_reason)
                if self.on_close is not None:
                    await self.on_close(self)
                self.finished.set()

    async def _reader(self, requests: trio.MemorySendChannel[dict[str, Any]]) -> None:
        try:
            while True:
                raw = await self.conn.receive()
                self.requests += 1
                parsed = self.dispatcher.parse(self, raw)
                if isinstance(parsed, bytes):
                    self.send_frame(parsed)
                    continue
                request, mode = parsed
                if mode == "inline":
                    await self._answer(request)
                elif mode == "blocking":
                    assert self._nursery is not None
                    borrower = object()
                    await self._blocking.acquire_on_behalf_of(borrower)
                    self._nursery.start_soon(self._blocking_task, request, borrower)
                else:
                    await requests.send(request)
        except ConnectionGone:
            await self.close(CLOSE_NORMAL, "")

    async def _blocking_task(self, request: dict[str, Any], borrower: object) -> None:
        try:
            await self._answer(request)
        finally:
            self._blocking.release_on_behalf_of(borrower)

    async def _worker(self, requests: trio.MemoryReceiveChannel[dict[str, Any]]) -> None:
        async for request in requests:
            await self._answer(request)

    async def _answer(self, request: dict[str, Any]) -> None:
        frame = await self.dispatcher.handle(self, request)
        if frame is not None:
            self.send_frame(frame)

    async def _writer(self) -> None:
        try:
            while True:
                batch = await self.outbox.get_batch()
                await self.conn.send_many([frame for frame, _ in batch])
                for _, tag in batch:
                    if tag is None:
                        continue
                    if callable(tag):  # an answer's delivery hook (a wait's position)
                        tag()
                    else:
                        self.delivered[tag[0]] = tag[1]
                        self.last_delivered = tag[1]
                if self._pulls:
                    await self._pull_more()
        except trio.EndOfChannel:
            if self.outbox.overflowed:
                self._cut_behind()
        except ConnectionGone:
            await self.close(CLOSE_NORMAL, "")
        finally:
            self._writer_done.set()
