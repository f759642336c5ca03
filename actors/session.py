"""The session actor: one per connected agent (one WebSocket connection).

It owns the connection's bounded outbound queue, its subscriptions, its principal and the
token's expiry: only the session's own tasks write them (its reader, workers and wait tasks,
which run the operation handlers, and its mailbox actor). Others reach it by messages
(:class:`CloseSession`) or through the :class:`~orchestra.actors.project.SubscriptionSink`
methods, which offer frames to its outbox (a live event while nothing is queued and the writer
waits is written at once, without waiting, and recorded as the writer would). Requests are read
by a small fixed pool of workers taking turns (one reads at a time, in order): cheap ones are answered by the reader
inline; another request is answered by the worker that read it, once it passed the reading turn
on; long waits by tasks bounded per connection. An answer made while nothing is queued is
written by the task that made it, anything else by the session's writer through the outbox.

Nothing here knows the wire format: the transport hands in a :class:`Connection` (which maps a
:class:`CloseReason` to its close code) and a :class:`Dispatcher` (which builds every frame).

A session is a *temporary* child: when it crashes its connection is closed
(:attr:`CloseReason.CRASHED`) and the agent reconnects and resumes its subscriptions from their
cursors; nothing acknowledged is lost.
"""

from __future__ import annotations

import enum
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import trio

from .broker import DropGlobals
from .events import encode_cursor
from .principal import Principal
from .project import DropSession
from .runtime import Actor, ActorError, ActorRef, Outbox, run_actor

__all__ = [
    "CloseReason",
    "CloseSession",
    "Connection",
    "ConnectionGone",
    "Dispatcher",
    "Session",
    "SessionLimits",
    "SessionRegistry",
]


class CloseReason(enum.Enum):
    """Why a session ends; the transport gives each its close code (PROTOCOL.md)."""

    #: the client closed, or went away
    NORMAL = "normal"
    #: the server is shutting down
    GOING_AWAY = "going_away"
    #: the session itself failed (a bug): reconnect and resume
    CRASHED = "crashed"
    #: an actor feeding its subscriptions restarted: resubscribe from the cursor named
    RESTARTED = "restarted"
    #: the token expired, or is not valid
    UNAUTHENTICATED = "unauthenticated"
    #: the connection asked for what its token may not do (switching identity)
    FORBIDDEN = "forbidden"
    #: the client read too slowly: its outbound queue passed its bound
    TOO_SLOW = "too_slow"


class ConnectionGone(Exception):
    """The peer went away."""


class Connection(Protocol):
    async def receive(self) -> str | bytes: ...
    async def send(self, frame: bytes) -> None: ...

    async def send_many(self, frames: list[bytes]) -> None:
        """Send frames in order, in as few writes to the socket as the transport can."""
        ...

    def send_now(self, frame: bytes) -> bool:
        """Write ``frame`` without waiting if nothing else is being written: True if it was
        taken (whole, or in part with the rest kept for the next write: :attr:`backlogged`),
        False if nothing of it was written."""
        ...

    @property
    def backlogged(self) -> bool:
        """Part of a frame taken by :meth:`send_now` waits for the next write."""
        ...

    async def close(self, reason: CloseReason, message: str) -> None: ...


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

    def event_frame(self, sid: str, event: bytes) -> bytes:
        """The frame pushing ``event`` (encoded) to subscription ``sid``."""
        ...


@dataclass(frozen=True)
class SessionLimits:
    #: the outbox's bounds (past either: 4008)
    max_messages: int = 1000
    max_bytes: int = 8 * 1024 * 1024
    #: requests of the worker pool answered at once; with all of them busy nothing more is
    #: read from the connection (the transport's own small queue, then TCP, hold the rest)
    workers: int = 8
    #: long waits (``event.wait``, ``context.get``, ...) at once; past it reading waits too
    max_blocking: int = 64


@dataclass(frozen=True, slots=True)
class CloseSession:
    reason: CloseReason
    message: str


@dataclass(frozen=True, slots=True)
class SetExpiry:
    expires_at: float  # trio time


@dataclass(frozen=True, slots=True)
class _Begin:
    """Note to the writer: subscription ``sid`` starts at ``cursor`` (a resume point even
    before anything of it was written)."""

    sid: str
    cursor: str


@dataclass(frozen=True, slots=True)
class _Pull:
    """Note to the writer: once the outbox drains, cast ``msg`` (more replay) to ``ref``."""

    msg: Any
    ref: ActorRef


@dataclass(frozen=True, slots=True)
class _Flush:
    """Note to the writer: write what the connection kept of a frame written in part, then
    take ``tag`` (an event frame's (sid, cursor)) as written."""

    tag: tuple[str, str]


@dataclass(frozen=True, slots=True)
class _Forget:
    """Note to the writer: subscription ``sid`` ended."""

    sid: str


@dataclass(frozen=True, slots=True)
class _Attached:
    """A "*" subscription reached another project (sent by the broker)."""

    project_id: str
    sid: str
    ref: ActorRef


class SessionRegistry:
    """The live sessions, by key. Each session adds itself once it runs and removes itself when
    it ends: no one else writes it. Readers (status, shutdown) iterate a snapshot."""

    def __init__(self) -> None:
        self._live: dict[str, Session] = {}

    def __len__(self) -> int:
        return len(self._live)

    def __iter__(self) -> Iterator[Session]:
        return iter(list(self._live.values()))

    def get(self, key: str) -> Session | None:
        return self._live.get(key)

    def _enter(self, session: Session) -> None:
        self._live[session.key] = session

    def _leave(self, session: Session) -> None:
        if self._live.get(session.key) is session:
            del self._live[session.key]


class _SessionActor(Actor):
    """The mailbox side of a session: closes, token expiry, "*" attachments, fault injection.

    Before the token expires the client is told (a notice frame, ``warn_before`` seconds
    ahead); at expiry, unless a refresh moved it, the connection is closed
    (:attr:`CloseReason.UNAUTHENTICATED`).
    """

    warn_before = 30.0

    def __init__(self, session: Session, expires_at: float) -> None:
        self.session = session
        self.expires_at = expires_at
        self.warned_for = math.inf

    def next_deadline(self) -> float:
        if self.expires_at != self.warned_for:
            return self.expires_at - self.warn_before
        return self.expires_at

    async def on_timeout(self) -> None:
        session = self.session
        now = trio.current_time()
        if self.expires_at != self.warned_for and now < self.expires_at:
            self.warned_for = self.expires_at
            session.send_frame(session.dispatcher.notice_frame(
                "auth.expiring", {"expires_in_seconds": round(self.expires_at - now, 3)}
            ))
            return
        self.expires_at = math.inf
        session.close(CloseReason.UNAUTHENTICATED, "token expired; reconnect with a fresh token")

    async def handle(self, msg: Any) -> Any:
        if isinstance(msg, CloseSession):
            self.session.close(msg.reason, msg.message)
        elif isinstance(msg, SetExpiry):
            self.expires_at = msg.expires_at
        elif isinstance(msg, _Attached):
            self.session.add_subscription(msg.project_id, msg.sid, msg.ref)
        return None


class Session:
    """One connection's state and tasks, for the verified ``principal``.

    Guarantees: its state is written only by its own tasks; once :meth:`run` returns, its
    connection was closed with the first reason given, every project and the broker were told
    to forget its subscriptions, and it left ``registry``.
    """

    def __init__(
        self,
        key: str,
        conn: Connection,
        dispatcher: Dispatcher,
        limits: SessionLimits,
        principal: Principal,
        registry: SessionRegistry,
        *,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.key = key
        self.conn = conn
        self.dispatcher = dispatcher
        self.limits = limits
        #: the verified token; a refresh replaces it (:meth:`refresh`)
        self.principal = principal
        self.registry = registry
        self.wall_clock = wall_clock
        self.ref = ActorRef(f"session:{key}", mailbox_size=256)
        self.outbox = Outbox(limits.max_messages, limits.max_bytes)
        self.finished = trio.Event()
        self._agent_id = key.split("#", 1)[0]
        #: sid -> project ref, for unsubscribe and cleanup
        self._subscriptions: dict[str, ActorRef] = {}
        #: the last cursor written to the socket, per subscription
        self._delivered: dict[str, str] = {}
        self._last_delivered: str | None = None
        self._watched: set[str] = set()
        #: this connection's global ("*") subscriptions, kept by the broker
        self._globals: set[str] = set()
        self._broker: ActorRef | None = None
        #: replays waiting for the outbox to drain: the message to cast -> the project's ref
        self._pulls: dict[Any, ActorRef] = {}
        self.close_reason: CloseReason | None = None
        self.close_message = ""
        self.requests = 0
        self._nursery: trio.Nursery | None = None
        self._closing = trio.Event()
        self._blocking = trio.CapacityLimiter(limits.max_blocking)
        #: the reading turn: held by the one worker reading frames (:meth:`_worker`)
        self._reading = trio.StrictFIFOLock()
        self._writer_done = trio.Event()
        #: True while the writer waits for the outbox (it holds no frame): an answer may then
        #: be written by the task that made it (:meth:`_reply`)
        self._writer_idle = False

    @property
    def session_key(self) -> str:
        return self.key

    @property
    def agent_id(self) -> str:
        return self._agent_id

    # -- SubscriptionSink (called from project actors' tasks; never blocks) --

    def subscribed(self, reply_id: Any, reply: dict[str, Any]) -> None:
        self.outbox.offer(self.dispatcher.reply_frame(reply_id, reply))

    def deliver(self, sid: str, cursor: str, event: bytes) -> bool:
        frame = self.dispatcher.event_frame(sid, event)
        outbox = self.outbox
        if self._writer_idle and not len(outbox) and len(frame) <= outbox.max_bytes \
                and self.close_reason is None and self.conn.send_now(frame):
            # written by the delivering task (nothing queued to overtake, the writer waiting
            # with no frame; a frame the outbox would refuse is refused as before): a delivery
            # costs the socket write, not a wake-up of the writer
            if self.conn.backlogged:  # the rest of it goes out with the writer's next write
                return outbox.offer(None, _Flush((sid, cursor)))
            self._delivered[sid] = cursor
            self._last_delivered = cursor
            return True
        return outbox.offer(frame, (sid, cursor))

    def begin(self, sid: str, cursor: str) -> None:
        # a note to the writer, which alone keeps the delivery bookkeeping
        self.outbox.offer(None, _Begin(sid, cursor))

    def replay(self, sid: str, cursor: str, event: bytes) -> bool:
        # Replay fills the outbox to half its bounds only: the other half stays for live
        # events (of other subscriptions) and answers. One frame always fits an empty outbox.
        frame = self.dispatcher.event_frame(sid, event)
        outbox = self.outbox
        if len(outbox) and (
            len(outbox) >= outbox.max_messages // 2
            or outbox.queued_bytes + len(frame) > outbox.max_bytes // 2
        ):
            return False
        return outbox.offer(frame, (sid, cursor))

    def want_more(self, ref: ActorRef, msg: Any) -> None:
        # refused only once the outbox overflowed: the connection is cut (4008) then anyway
        self.outbox.offer(None, _Pull(msg, ref))

    def behind(self, sid: str) -> None:
        self._cut_behind()

    def attached(self, project_id: str, sid: str, ref: ActorRef) -> None:
        """A global ("*") subscription reached ``project_id`` (called by the broker): the
        session's own actor records it."""
        if not self.ref.try_cast(_Attached(project_id, sid, ref)):
            # cannot record it, so a restart of that project could go unnoticed: resubscribe
            self._cut(CloseReason.RESTARTED, "too many projects attached at once; resubscribe '*'")

    # -- the session's state, written by its own tasks (the handlers of its requests) --

    def add_subscription(self, project_id: str, sid: str, ref: ActorRef) -> None:
        """Record subscription ``sid`` at ``project_id``'s actor, and watch that actor."""
        self._subscriptions[sid] = ref
        self._watch(project_id, ref)

    def remove_subscription(self, sid: str) -> ActorRef | None:
        """Forget subscription ``sid``; the ref of its project, None if it is not one."""
        ref = self._subscriptions.pop(sid, None)
        if ref is not None:
            self.outbox.offer(None, _Forget(sid))
        return ref

    def add_global(self, gsid: str, broker: ActorRef) -> None:
        """Record a "*" subscription the broker keeps, and watch the broker."""
        self._globals.add(gsid)
        self._broker = broker
        if "*" not in self._watched and self._nursery is not None:
            self._watched.add("*")
            self._nursery.start_soon(self._watch_broker, broker.monitor())

    def has_global(self, gsid: str) -> bool:
        return gsid in self._globals

    def remove_global(self, gsid: str) -> None:
        self._globals.discard(gsid)

    async def refresh(self, principal: Principal) -> None:
        """Act as ``principal`` from now on (a refreshed token) and expire with it."""
        self.principal = principal
        await self.ref.cast(SetExpiry(self._expiry_of(principal)))

    def _expiry_of(self, principal: Principal) -> float:
        return trio.current_time() + max(0.0, principal.exp - self.wall_clock())

    def _cut_behind(self) -> None:
        cursor = self.resume_cursor()
        self._cut(
            CloseReason.TOO_SLOW,
            f"too far behind; last cursor delivered {cursor}; resubscribe with since={cursor}",
        )

    def resume_cursor(self) -> str:
        """A cursor to resume from with nothing lost: the oldest of every subscription's last
        cursor written (or, if none was yet, the cursor it started from)."""
        positions = self._positions()
        if positions:
            return min(positions.values())
        return self._last_delivered or encode_cursor(0)

    def _positions(self) -> dict[str, str]:
        """Each subscription's last cursor written, or where it started; notes still queued
        for the writer count (a cut can come before the writer took them)."""
        positions = dict(self._delivered)
        for tag in self.outbox.pending_tags():
            if isinstance(tag, _Begin):
                positions.setdefault(tag.sid, tag.cursor)
            elif isinstance(tag, _Forget):
                positions.pop(tag.sid, None)
        return positions

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
                pass  # the project stopped: its restart closes this connection

    # -- lifecycle --

    def send_frame(self, frame: bytes, on_sent: Callable[[], None] | None = None) -> bool:
        """Queue a frame; ``on_sent`` is called once the writer wrote it (never if it was not)."""
        return self.outbox.offer(frame, on_sent)

    def close(self, reason: CloseReason, message: str) -> None:
        """End the session (called by its own tasks; others send :class:`CloseSession`).
        The first reason given is the one the connection closes with."""
        self._cut(reason, message)

    def _cut(self, reason: CloseReason, message: str) -> None:
        if self.close_reason is None:
            self.close_reason = reason
            self.close_message = message
        self._closing.set()

    def _watch(self, project: str, ref: ActorRef) -> None:
        """Close this connection if the project's actor restarts under its subscriptions."""
        if project in self._watched or self._nursery is None:
            return
        self._watched.add(project)
        self._nursery.start_soon(self._watch_project, project, ref.monitor())

    async def _watch_broker(self, down: trio.Event) -> None:
        """The broker keeps the "*" subscriptions: restarted, it no longer reaches projects
        started later."""
        await down.wait()
        self._watched.discard("*")
        if self._globals:
            self.close(CloseReason.RESTARTED, "broker restarted; resubscribe '*' with since per project")

    async def _watch_project(self, project: str, down: trio.Event) -> None:
        await down.wait()
        self._watched.discard(project)
        if any(r.name.endswith(f":{project}") for r in self._subscriptions.values()):
            mine = [c for sid, c in self._positions().items() if sid.startswith(f"{project}/")]
            cursor = min(mine) if mine else (self._last_delivered or "")
            self.close(CloseReason.RESTARTED, f"project restarted; resubscribe with since={cursor}")

    def _forget(self) -> None:
        """Tell the broker and every project to drop this session's subscriptions."""
        self.registry._leave(self)
        if self._globals and self._broker is not None:
            self._broker.try_cast(DropGlobals(self.key))
        for ref in set(self._subscriptions.values()):
            ref.try_cast(DropSession(self.key))

    async def run(self, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        self.registry._enter(self)
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                actor = _SessionActor(self, self._expiry_of(self.principal))
                await nursery.start(run_actor, self.ref, actor)
                nursery.start_soon(self._writer)
                for _ in range(self.limits.workers):
                    nursery.start_soon(self._worker)
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
                if self.close_reason is None:
                    self.close_reason, self.close_message = CloseReason.CRASHED, "session crashed"
                with trio.move_on_after(2):
                    await self.conn.close(self.close_reason, self.close_message)
                self._forget()
                self.finished.set()

    async def _worker(self) -> None:
        """One of the pool: takes the reading turn, reads frames (answering inline ones, starting
        blocking ones) up to the next pooled request, passes the turn on and answers that request
        itself: a request is answered by the task that read it, with no hand-off between them.
        One task reads at a time, so frames are taken in order; with every worker answering,
        nothing is read until one is free."""
        try:
            while True:
                async with self._reading:
                    request = await self._read_pooled()
                await self._answer(request)
        except ConnectionGone:
            self.close(CloseReason.NORMAL, "")

    async def _read_pooled(self) -> dict[str, Any]:
        while True:
            raw = await self.conn.receive()
            self.requests += 1
            parsed = self.dispatcher.parse(self, raw)
            if isinstance(parsed, bytes):
                await self._reply(parsed)
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
                return request

    async def _blocking_task(self, request: dict[str, Any], borrower: object) -> None:
        try:
            await self._answer(request)
        finally:
            self._blocking.release_on_behalf_of(borrower)

    async def _answer(self, request: dict[str, Any]) -> None:
        frame = await self.dispatcher.handle(self, request)
        if frame is not None:
            await self._reply(frame)

    async def _reply(self, frame: bytes) -> None:
        """Write an answer. When nothing is queued and the writer is idle, the task that made
        the answer writes it itself: one task hand-off less per request (a ``ping`` then costs
        what a bare echo does). Order holds: nothing queued was overtaken, and a frame queued
        meanwhile is written after it (the connection serializes its writers in call order).
        Otherwise the answer goes through the outbox and its bounds."""
        if self._writer_idle and not len(self.outbox) and self.close_reason is None:
            try:
                await self.conn.send(frame)
            except ConnectionGone:
                self.close(CloseReason.NORMAL, "")
        else:
            self.send_frame(frame)

    async def _writer(self) -> None:
        try:
            while True:
                self._writer_idle = True
                batch = await self.outbox.get_batch()
                self._writer_idle = False
                frames = [frame for frame, _ in batch if frame is not None]
                if frames or self.conn.backlogged:
                    await self.conn.send_many(frames)
                for _, tag in batch:
                    if tag is None:
                        continue
                    if type(tag) is _Flush:
                        tag = tag.tag
                    if callable(tag):  # an answer's delivery hook (a wait's position)
                        tag()
                    elif isinstance(tag, tuple):  # an event frame written: (sid, cursor)
                        self._delivered[tag[0]] = tag[1]
                        self._last_delivered = tag[1]
                    elif isinstance(tag, _Begin):
                        self._delivered.setdefault(tag.sid, tag.cursor)
                    elif isinstance(tag, _Pull):
                        self._pulls[tag.msg] = tag.ref
                    elif isinstance(tag, _Forget):
                        self._delivered.pop(tag.sid, None)
                if self._pulls:
                    await self._pull_more()
        except trio.EndOfChannel:
            if self.outbox.overflowed:
                self._cut_behind()
        except ConnectionGone:
            self.close(CloseReason.NORMAL, "")
        finally:
            self._writer_idle = False
            self._writer_done.set()
