"""The project actor: one per project id.

It owns the project's event sequence (cursors), its retained events, its result cache, its
subscriptions and the waits in progress. It group-commits: every result and event waiting in
its mailbox goes to the store in one append, and is acknowledged, delivered and answered only
after that append committed. A stored result and its ``agent_completed`` event are in the same
append: never one without the other.
"""

from __future__ import annotations

import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Protocol

import orjson
import trio

from .errors import (
    IdempotencyConflict,
    NotFound,
    NotStored,
    OutcomeUnknown,
    Overloaded,
    store_unavailable,
)
from .eventlog import Entry, EventLog
from .events import EventFilter, encode_cursor
from .idempotency import IdemKey, IdempotencyEntry, IdempotencyTable
from .lru import LruCache
from .profiles import Profiles
from .records import iso_time
from .runtime import Actor, ActorError, ActorRef, Call, ReplyError
from .store import (
    AppendBatch,
    CommitLane,
    EventRow,
    HighWater,
    IdempotencyRow,
    LoadProject,
    LookupKeys,
    QueryResults,
    ResultRow,
    SaveWaitCursor,
    StoreError,
)
from .store import GetResult as StoreGetResult
from .store_postgres import AllocatedAppend, CursorConflict, EventsAfter

__all__ = [
    "ProjectConfig",
    "ProjectActor",
    "StoreResult",
    "Publish",
    "GetResult",
    "Query",
    "Wait",
    "WaitAnswer",
    "ConfirmWait",
    "Subscribe",
    "Unsubscribe",
    "Pull",
    "DropSession",
    "ProjectStats",
    "RemoteAppend",
    "SubscriptionSink",
]

SERVER_PUBLISHER = "orchestra"
_MASK48 = (1 << 48) - 1
_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}  # RFC 4122 variant bits


@dataclass(frozen=True)
class ProjectConfig:
    max_events: int = 10_000  # retained events per project (memory and store)
    #: encoded bytes of retained events per project (memory and store); the oldest go first
    max_event_bytes: int = 64 * 1024 * 1024
    result_cache: int = 10_000  # recent result records kept in memory
    max_waiters: int = 10_000
    max_subscriptions: int = 10_000
    #: server-side wait positions kept per project, least recently used dropped first (a
    #: dropped position starts again from the oldest retained event: repeats, never losses)
    max_wait_positions: int = 100_000
    storage_location: str = "orchestra.db"
    store_timeout: float = 30.0
    #: how long a repeat of a keyed write answers the original answer (seconds)
    idempotency_window: float = 86_400.0
    #: recent keys kept in memory (older ones are looked up in the store)
    idempotency_keys: int = 10_000
    idempotency_bytes: int = 16 * 1024 * 1024
    #: other processes append to this project's store too (PostgreSQL): their events are read
    #: from the store when announced (:class:`RemoteAppend`), before a wait or a subscription,
    #: and at least every ``remote_poll`` seconds while this project has subscribers or waits;
    #: an append that finds another writer's cursors is committed again with the cursors the
    #: store takes (:class:`~orchestra.actors.store_postgres.AllocatedAppend`)
    shared_store: bool = False
    remote_poll: float = 2.0
    #: events read from the store per look at what other processes appended
    remote_batch: int = 1000


class SubscriptionSink(Protocol):
    """Where a subscription's frames go: a session's outbox. Called from the project's task;
    must not block."""

    @property
    def session_key(self) -> str:
        """The session the sink belongs to (unsubscribes name it)."""
        ...

    @property
    def agent_id(self) -> str: ...

    def subscribed(self, reply_id: Any, reply: dict[str, Any]) -> None:
        """Queue the answer to the subscribe request, before any of its events."""
        ...

    def deliver(self, sid: str, cursor: str, event: bytes) -> bool:
        """Queue a live event; False if the outbox is past its bound (the sink is cut)."""
        ...

    def begin(self, sid: str, cursor: str) -> None:
        """The subscription ``sid`` starts after ``cursor`` (what a resume names if nothing
        was delivered yet)."""
        ...

    def replay(self, sid: str, cursor: str, event: bytes) -> bool:
        """Queue a replayed event if the outbox has room for replay (it keeps room for live
        events); False if not now: nothing queued, nothing cut."""
        ...

    def want_more(self, ref: ActorRef, msg: Any) -> None:
        """Cast ``msg`` to ``ref`` once the outbox has drained enough to take more replay."""
        ...

    def behind(self, sid: str) -> None:
        """``sid`` cannot continue without a gap (its next events were trimmed while it was
        catching up): close as too far behind; the client resumes with ``recovered: false``."""
        ...


# -- messages --


@dataclass(frozen=True, slots=True)
class StoreResult:
    body: dict[str, Any]
    idem: IdemKey | None = None
    #: the storing request's W3C ``traceparent``, kept in its ``agent_completed`` event
    traceparent: str | None = None


@dataclass(frozen=True, slots=True)
class StoreResults:
    """Several results in one message: all committed in the same transaction."""

    bodies: tuple[dict[str, Any], ...]
    idem: IdemKey | None = None
    traceparent: str | None = None  # as StoreResult's


@dataclass(frozen=True, slots=True)
class Publish:
    event_type: str
    body: dict[str, Any]  # validated: topic, data, correlation_id, ttl_seconds, round, references
    publisher: str
    agent_type: str | None
    idem: IdemKey | None = None
    #: the W3C ``traceparent`` the publisher sent, kept in the event (absent if None)
    traceparent: str | None = None


@dataclass(frozen=True, slots=True)
class GetResult:
    result_id: str


@dataclass(frozen=True, slots=True)
class Query:
    query: QueryResults


@dataclass(frozen=True, slots=True)
class Wait:
    sub: str
    event_type: str
    filter: EventFilter
    since: int | None
    limit: int
    timeout: float  # seconds


@dataclass(frozen=True, slots=True)
class ConfirmWait:
    """Cast by the transport once a wait's answer was written to its client: the server-side
    position of (``sub``, ``key``) moves to ``cursor`` (never backwards)."""

    sub: str
    key: str
    cursor: int


@dataclass(frozen=True, slots=True)
class WaitAnswer:
    """The answer to a :class:`Wait`. A wait without ``since`` does not move its position
    when answered: the caller casts ``confirm`` to the project once ``reply`` was delivered.
    An answer lost on its way therefore moves nothing (the events are given again)."""

    reply: bytes  # the encoded answer
    confirm: ConfirmWait | None = None


@dataclass(frozen=True, slots=True)
class Subscribe:
    sink: SubscriptionSink
    event_types: frozenset[str] | None  # None: all
    topics: frozenset[str] | None
    filter: EventFilter
    since: int | None
    #: The request's id: the sink answers it before replaying. None: the caller answers.
    reply_id: Any = None
    announce: bool = True


@dataclass(frozen=True, slots=True)
class Pull:
    """Cast by a session whose outbox drained: continue the replay of subscription ``sid``."""

    session_key: str
    sid: str


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    session_key: str
    sid: str


@dataclass(frozen=True, slots=True)
class DropSession:
    session_key: str


@dataclass(frozen=True, slots=True)
class ProjectStats:
    pass


@dataclass(frozen=True, slots=True)
class RemoteAppend:
    """Cast by the process's listener: another process appended up to ``cursor`` (None: maybe,
    look). The project reads what it has not seen, in cursor order, and delivers it."""

    cursor: int | None = None


# -- state records --


@dataclass(slots=True)
class _Event:
    """A new event on its way to the store; once committed only its :class:`Entry` is kept."""

    cursor: int
    event_type: str
    expires_at: float
    event: dict[str, Any]
    body: bytes

    def entry(self) -> Entry:
        return Entry.of(self.event, self.body, self.expires_at, self.cursor)


@dataclass(slots=True)
class _Subscription:
    sid: str
    sink: SubscriptionSink
    event_types: frozenset[str] | None
    topics: frozenset[str] | None
    filter: EventFilter
    #: None: live. A cursor: still catching up, every wanted event after it not yet queued.
    position: int | None = None

    def wants(self, event_type: str, topic: str | None, event: dict[str, Any] | Entry) -> bool:
        """Whether this subscription takes the event; a retained :class:`Entry` is decoded
        only if the filter looks into the event."""
        if self.event_types is not None and event_type not in self.event_types:
            return False
        if self.topics is not None and topic not in self.topics:
            return False
        return _passes(self.filter, event)


@dataclass(slots=True)
class _Waiter:
    call: Call
    msg: Wait
    after: int
    deadline: float
    key: tuple[str, str] | None  # server-side cursor key when no ``since``
    #: the log was searched up to here and held nothing for this wait
    scanned: int = 0


@dataclass(slots=True)
class _Pending:
    call: Call
    reply: dict[str, Any]
    events: list[_Event] = field(default_factory=list)
    results: list[ResultRow] = field(default_factory=list)
    idem: IdemKey | None = None
    #: repeats of the same key in the same batch: answered with this write's answer
    followers: list[Call] = field(default_factory=list)


class ProjectActor(Actor):
    max_batch = 512

    def __init__(
        self,
        project_id: str,
        store: ActorRef,
        profiles: Profiles,
        config: ProjectConfig | None = None,
        *,
        wall_clock: Callable[[], float] = time.time,
        counts: dict[str, int] | None = None,
    ) -> None:
        self.project_id = project_id
        self.store = store
        self.profiles = profiles
        self.config = config or ProjectConfig()
        self.wall_clock = wall_clock
        #: what this project stored, published, delivered and committed; a dict handed in
        #: outlives this incarnation (the next one counts on; one writer at a time)
        self.stats = counts if counts is not None else {}

    async def on_start(self) -> None:
        snap = await self.store.call(
            LoadProject(self.project_id, self.wall_clock(), self.config.max_events),
            timeout=self.config.store_timeout,
        )
        self.last_cursor: int = snap.last_cursor
        entries = [_loaded(body) for body in snap.events]
        # Every event at or below the log's floor may be gone (trimmed); the byte bound
        # applies to what was stored too.
        self.log = EventLog(
            self.config.max_events, self.config.max_event_bytes,
            floor=entries[0].cursor - 1 if entries else snap.last_cursor,
        )
        #: the floor the store has applied: a load that trimmed tells the store at the next append
        self._store_floor = self.log.floor
        self.log.append(entries)
        self._next_sweep = self.wall_clock() + _SWEEP_SECONDS
        #: (sub, type and filter) -> the cursor of the last wait answer delivered
        self.wait_cursors: LruCache[tuple[str, str], int] = LruCache(self.config.max_wait_positions)
        for key, cursor in snap.wait_cursors.items():
            self.wait_cursors.put(key, cursor)
        self.results: LruCache[str, bytes] = LruCache(self.config.result_cache)
        # Stored records are immutable: readers may take them from this table directly
        # (see ActorRef.view); only this actor writes it.
        self.ref.view = self.results
        self.idem = IdempotencyTable(self.config.idempotency_keys, self.config.idempotency_bytes)
        self.subscriptions: dict[str, _Subscription] = {}
        self.waiters: list[_Waiter] = []
        self.next_sid = 0
        # ids: a random UUID's first 80 bits, and its last 48 counted up from where they began
        h = uuid.uuid4().hex
        self._id_prefix = f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-"
        self._id_low = int(h[20:], 16)
        self._id_count = 0
        for name in ("results_stored", "events_published", "deliveries", "commits"):
            self.stats.setdefault(name, 0)
        if self.config.shared_store:
            self.stats.setdefault("remote_events", 0)
            self.stats.setdefault("cursor_conflicts", 0)
            self._next_poll = trio.current_time() + self.config.remote_poll

    # -- timers: waits that time out --

    def next_deadline(self) -> float:
        deadline = min((w.deadline for w in self.waiters), default=math.inf)
        if self.config.shared_store and (self.waiters or self.subscriptions):
            deadline = min(deadline, self._next_poll)
        return deadline

    async def on_timeout(self) -> None:
        now = trio.current_time()
        if self.config.shared_store and now >= self._next_poll:
            await self._read_remote()  # a missed announcement delays, never loses, an event
        keep = []
        for w in self.waiters:
            if w.call.abandoned:
                continue
            if w.deadline <= now:
                w.call.reply(WaitAnswer(self._wait_reply([], w.after, False, timed_out=True)))
            else:
                keep.append(w)
        self.waiters = keep

    # -- messages --

    async def handle_batch(self, calls: list[Call]) -> None:
        """Serve a batch. A message that fails with an answer (a :class:`ReplyError`) fails
        only its own call; the others are served and the actor keeps its state."""
        pending: list[_Pending] = []
        if self.config.shared_store and any(_looks(c.msg, self.last_cursor) for c in calls):
            await self._read_remote()  # before this batch's writes take their cursors
        keyed = [c for c in calls if isinstance(c.msg, _WRITES) and c.msg.idem is not None]
        recalled = await self._recall_keys(keyed) if keyed else {}
        inflight: dict[tuple[str, str], _Pending] = {}
        stamp: _Stamp | None = None  # the batch's time, taken at its first write
        for call in calls:
            msg = call.msg
            try:
                if isinstance(msg, _WRITES):  # prepared without a coroutine of its own
                    if stamp is None:
                        stamp = _Stamp(self.wall_clock())
                    self._take_write(call, msg, stamp, pending, recalled, inflight)
                else:
                    await self._handle_one(call)
            except ReplyError as exc:
                call.fail(exc)
        if pending:
            self.fault_point("next_write")  # fault injection: before the store has the writes
            await self._commit(pending)

    def _take_write(
        self,
        call: Call,
        msg: StoreResult | StoreResults | Publish,
        stamp: _Stamp,
        pending: list[_Pending],
        recalled: dict[tuple[str, str], IdempotencyEntry],
        inflight: dict[tuple[str, str], _Pending],
    ) -> None:
        """Prepare one write; it joins ``pending`` to be committed with the batch."""
        if msg.idem is not None and not self._admit(call, msg.idem, recalled, inflight):
            return
        if isinstance(msg, StoreResult):
            p = _Pending(call, {})
            p.reply = self._prepare_result(p, msg.body, stamp, msg.traceparent)
        elif isinstance(msg, StoreResults):
            p = self._prepare_results(call, msg.bodies, stamp, msg.traceparent)
        else:
            p = self._prepare_event(call, msg, stamp.now)
        if msg.idem is not None:
            p.idem = msg.idem
            inflight[msg.idem.scope] = p
        pending.append(p)

    async def _handle_one(self, call: Call) -> None:
        """Serve one message that is not a write."""
        msg = call.msg
        if isinstance(msg, GetResult | Query):
            try:
                if isinstance(msg, GetResult):
                    await self._get(call, msg)
                else:
                    call.reply(await self.store.call(msg.query, timeout=self.config.store_timeout))
            except (StoreError, ActorError) as exc:
                # the store failing or restarting fails this read, not the project actor
                call.fail(store_unavailable(exc))
        elif isinstance(msg, Wait):
            self._wait(call, msg)
        elif isinstance(msg, ConfirmWait):
            self._advance_wait((msg.sub, msg.key), msg.cursor)
        elif isinstance(msg, Subscribe):
            call.reply(self._subscribe(msg))
        elif isinstance(msg, Pull):
            sub = self.subscriptions.get(msg.sid)
            if sub is not None and sub.sink.session_key == msg.session_key:
                self._catch_up(sub)
        elif isinstance(msg, Unsubscribe):
            sub = self.subscriptions.get(msg.sid)
            if sub is None or sub.sink.session_key != msg.session_key:
                call.fail(NotFound(f"no subscription {msg.sid!r} on this connection"))
            else:
                del self.subscriptions[msg.sid]
                call.reply({})
        elif isinstance(msg, DropSession):
            self._drop_session(msg.session_key)
        elif isinstance(msg, ProjectStats):
            call.reply(self._stats())
        elif isinstance(msg, RemoteAppend):
            pass  # read at the start of the batch
        else:
            raise TypeError(f"unexpected message {msg!r}")

    # -- idempotency keys --

    async def _recall_keys(self, keyed: list[Call]) -> dict[tuple[str, str], IdempotencyEntry]:
        """Look up in the store the keys of ``keyed`` that are not in memory.

        A write whose key cannot be checked is answered ``NotStored`` (nothing was tried).
        """
        now = self.wall_clock()
        missing = {c.msg.idem.scope for c in keyed if self.idem.get(c.msg.idem.scope, now) is None}
        if not missing:
            return {}
        try:
            rows = await self.store.call(
                LookupKeys(self.project_id, tuple(missing), now), timeout=self.config.store_timeout
            )
        except (StoreError, ActorError) as exc:
            for c in keyed:
                if c.msg.idem.scope in missing:
                    c.fail(NotStored(f"the idempotency key could not be checked, so nothing was stored: {exc}"))
            return {}
        recalled = {}
        for scope, row in rows.items():
            entry = recalled[scope] = IdempotencyEntry(row.fingerprint, row.answer, row.expires_at)
            self.idem.put(scope, entry)
        return recalled

    def _admit(
        self,
        call: Call,
        idem: IdemKey,
        recalled: dict[tuple[str, str], IdempotencyEntry],
        inflight: dict[tuple[str, str], _Pending],
    ) -> bool:
        """True if this keyed write is to be prepared; else it is answered (or will be, with
        the answer of the same key's write earlier in this batch)."""
        if call.resolved:
            return False
        scope = idem.scope
        entry = self.idem.get(scope, self.wall_clock()) or recalled.get(scope)
        first = inflight.get(scope)
        if entry is not None:
            original = entry.fingerprint
        elif first is not None and first.idem is not None:
            original = first.idem.fingerprint
        else:
            return True
        if original != idem.fingerprint:
            call.fail(IdempotencyConflict(
                f"idempotency key {idem.key!r} was used for a different request within the "
                f"window ({self.config.idempotency_window:g} s); use a new key for a new request"
            ))
        elif entry is not None:
            call.reply(entry.answer)  # the original answer, as it was encoded
        else:
            assert first is not None
            first.followers.append(call)
        return False

    # -- results and events --

    def _new_id(self) -> str:
        """A UUID-shaped id (version 4), unique without a syscall per id: a random UUID whose
        last 48 bits count up (2^48 ids before this incarnation would repeat one)."""
        self._id_count += 1
        return f"{self._id_prefix}{(self._id_low + self._id_count) & _MASK48:012x}"

    def _next_cursor(self) -> int:
        self.last_cursor += 1
        return self.last_cursor

    def _make_event(
        self,
        event_type: str,
        body: dict[str, Any],
        publisher: str,
        agent_type: str | None,
        now: float,
        traceparent: str | None = None,
    ) -> _Event:
        cursor = self._next_cursor()
        expires_at = now + float(body["ttl_seconds"])
        event = {
            "event_id": self._new_id(),
            "cursor": encode_cursor(cursor),
            "project_id": self.project_id,
            "event_type": event_type,
            "topic": body.get("topic"),
            "publisher": publisher,
            "agent_type": agent_type,
            "data": body.get("data") or {},
            "correlation_id": body.get("correlation_id"),
            "round": body.get("round"),
            "references": body.get("references") or [],
            "timestamp": iso_time(now),
            "expires_at": iso_time(expires_at),
        }
        if traceparent is not None:
            event["traceparent"] = traceparent
        return _Event(cursor, event_type, expires_at, event, orjson.dumps(event))

    def _prepare_event(self, call: Call, msg: Publish, now: float) -> _Pending:
        ev = self._make_event(msg.event_type, msg.body, msg.publisher, msg.agent_type, now, msg.traceparent)
        reply = {
            "event_id": ev.event["event_id"],
            "cursor": ev.event["cursor"],
            "published": True,
            "timestamp": ev.event["timestamp"],
            "subscribers_notified": [],  # known after the commit
        }
        return _Pending(call, reply, events=[ev])

    def _prepare_results(self, call: Call, bodies: tuple[dict[str, Any], ...], stamp: _Stamp,
                         traceparent: str | None = None) -> _Pending:
        p = _Pending(call, {})
        replies = [self._prepare_result(p, body, stamp, traceparent) for body in bodies]
        p.reply = {"results": replies, "stored": len(replies)}
        return p

    def _prepare_result(self, p: _Pending, body: dict[str, Any], stamp: _Stamp,
                        traceparent: str | None = None) -> dict[str, Any]:
        """The record and its ``agent_completed`` event (built here directly: it is every
        result's), added to ``p``; returns the answer. The hot path of every durable write."""
        result_id = self._new_id()
        agent_type = body["agent_type"]
        issue_id = body["issue_id"]
        agent_id = body["agent_id"]
        status = body["result"]["status"]
        next_agents = stamp.next_agents(self.profiles, agent_type)
        storage_path = f"{self.config.storage_location}#results/{result_id}"
        stored_at = stamp.iso
        record = {
            **body,
            "id": result_id,
            "project_id": self.project_id,
            "stored_at": stored_at,
            "storage_path": storage_path,
        }
        if "timestamp" not in record:
            record["timestamp"] = stored_at
        self.last_cursor = cursor = self.last_cursor + 1
        cursor_text = encode_cursor(cursor)
        event = {  # the fields of _make_event, in its order
            "event_id": self._new_id(),
            "cursor": cursor_text,
            "project_id": self.project_id,
            "event_type": "agent_completed",
            "topic": "coordination",
            "publisher": SERVER_PUBLISHER,
            "agent_type": agent_type,
            "data": {
                "result_id": result_id,
                "issue_id": issue_id,
                "agent_id": agent_id,
                "agent_type": agent_type,
                "status": status,
                "next_agents": next_agents,
            },
            "correlation_id": body.get("correlation_id") or issue_id,
            "round": None,
            "references": [],
            "timestamp": stored_at,
            "expires_at": stamp.completed_expiry,
        }
        if traceparent is not None:
            event["traceparent"] = traceparent
        p.events.append(_Event(cursor, "agent_completed", stamp.now + _COMPLETED_TTL, event, orjson.dumps(event)))
        p.results.append(ResultRow(
            result_id, self.project_id, issue_id, agent_type, agent_id, status, stored_at,
            orjson.dumps(record),
        ))
        return {
            "id": result_id,
            "stored": True,
            "storage_path": storage_path,
            "next_agents": next_agents,
            "event_published": True,
            "event_cursor": cursor_text,
        }

    async def _commit(self, pending: list[_Pending]) -> None:
        try:
            await self._commit_once(pending, allocate=False)
        except CursorConflict:
            # Another process appended to this project since this one last looked. Again, with
            # the cursors taken by the store under the project's lock: never refused again.
            self.stats["cursor_conflicts"] += 1
            await self._commit_once(pending, allocate=True)

    def _renumber(self, pending: list[_Pending], first: int) -> None:
        """Give ``pending``'s events the cursors from ``first`` on, in their order (as the store
        took them), and their answers the new cursors (the old ones were never stored)."""
        self.last_cursor = first - 1
        for p in pending:
            for ev in p.events:
                ev.cursor = self._next_cursor()
                ev.event["cursor"] = encode_cursor(ev.cursor)
                ev.body = orjson.dumps(ev.event)
            if "results" in p.reply:
                for part, ev in zip(p.reply["results"], p.events, strict=True):
                    part["event_cursor"] = ev.event["cursor"]
            elif "event_cursor" in p.reply:
                p.reply["event_cursor"] = p.events[0].event["cursor"]
            elif p.events:
                p.reply["cursor"] = p.events[0].event["cursor"]

    async def _read_remote(self, before: int | None = None) -> bool:
        """Take in what other processes appended after this project's high-water (and below
        ``before``), delivered and retained as local appends are; False if the store could not
        be read. Commit order is cursor order: nothing below what it read is committed later."""
        self._next_poll = trio.current_time() + self.config.remote_poll
        while True:
            try:
                bodies = await self.store.call(
                    EventsAfter(self.project_id, self.last_cursor, self.config.remote_batch, before),
                    timeout=self.config.store_timeout,
                )
            except (StoreError, ActorError):
                return False
            new = [_remote(body) for body in bodies]
            if not new:
                return True
            self.last_cursor = new[-1].cursor
            self.stats["remote_events"] += len(new)
            self._append_events(new, remote=True)
            if len(new) < self.config.remote_batch:
                return True

    async def _commit_once(self, pending: list[_Pending], allocate: bool) -> None:
        """Commit and answer; raises :class:`CursorConflict` (nothing answered) if another
        process took these cursors first. ``allocate``: the store takes the cursors (after
        the high-water, under the project's lock), rewriting the events and the keys' answers;
        the others' events below them are read and delivered here first."""
        results = [row for p in pending for row in p.results]
        events = [
            EventRow(self.project_id, ev.cursor, ev.event_type, ev.expires_at, ev.body)
            for p in pending
            for ev in p.events
        ]
        trim_below = self.log.trim_below([ev for p in pending for ev in p.events])
        if not trim_below and self.log.floor > self._store_floor:
            trim_below = self.log.floor + 1
        expires_at = self.wall_clock() + self.config.idempotency_window
        keys = tuple(
            IdempotencyRow(p.idem.sub, p.idem.key, p.idem.fingerprint, orjson.dumps(p.reply), expires_at)
            for p in pending
            if p.idem is not None
        )
        kind = AllocatedAppend if allocate else AppendBatch
        batch = kind(self.project_id, self.last_cursor, tuple(results), tuple(events), trim_below, keys)
        error: Exception | None = None
        try:
            # No timeout of its own: the caller's bounds the request, and a store crash fails
            # this call at once. A timeout here could not undo a commit in progress anyway.
            lane = self.store.view  # the store's direct lane, while it has one
            first = await (lane.commit(batch) if isinstance(lane, CommitLane) else self.store.call(batch))
        except CursorConflict:
            if self.config.shared_store and not allocate:
                raise
            error = NotStored("the store refused this write's cursors, not stored; retry")
        except StoreError as exc:  # rolled back
            error = NotStored(f"the store rolled back this write, not stored: {exc}; retry")
        except ActorError as exc:
            # The store stopped while it held the append: it may have committed it.
            error = await self._settle(batch, exc)
        if error is not None:
            # Not acknowledged. The cursors taken are skipped, never reused; except on a shared
            # store, where another process may have stored events at them meanwhile (while the
            # database was unreachable, say): this project knows everything only up to before
            # them, so it reads (and then appends) from there. One of them stored after all
            # (an outcome in doubt) is then read as another's, or refuses the next append.
            if self.config.shared_store and events:
                self.last_cursor = min(e.cursor for e in events) - 1
            for p in pending:
                p.call.fail(error)
                for follower in p.followers:
                    follower.fail(error)
            return
        self.stats["commits"] += 1
        self._store_floor = max(self._store_floor, trim_below - 1)
        if allocate:
            # what this project knew before these events took their (unstored) cursors
            self.last_cursor = min((e.cursor for e in events), default=self.last_cursor + 1) - 1
            for _ in range(3):  # committed: the others' events before these go out first
                if await self._read_remote(before=first):
                    break
            else:
                raise RemoteUnreadable("committed, but the other processes' events before it "
                                       "could not be read: the project restarts")
            self._renumber(pending, first)
        new_events: list[_Event] = []
        for p in pending:
            for row in p.results:
                self.results.put(row.id, row.body)
            self.stats["results_stored"] += len(p.results)
            new_events.extend(p.events)
        notified = self._append_events(new_events)
        for p in pending:
            if not p.results:
                p.reply["subscribers_notified"] = notified.get(p.events[0].cursor, [])
            p.call.reply(p.reply)
            if p.idem is not None:
                # in memory the answer as given; the store's copy lists no subscribers
                self.idem.put(p.idem.scope, IdempotencyEntry(p.idem.fingerprint, orjson.dumps(p.reply), expires_at))
                for follower in p.followers:
                    follower.reply(p.reply)

    async def _settle(self, batch: AppendBatch, exc: ActorError) -> Exception | None:
        """After the store stopped holding ``batch``: None if it committed (the store's
        high-water cursor reached the batch's; on a shared store, the event stored at the batch's
        last cursor is the batch's own), else the error that says what is known.

        A store incarnation ends only after the transaction it ran has ended, so once the
        restarted store answers, the answer is final.
        """
        try:
            if self.config.shared_store and batch.events:
                # another process may have stored these cursors since: ours committed if the
                # event stored at our last cursor is ours
                last = batch.events[-1]
                found = await self.store.call(EventsAfter(self.project_id, last.cursor - 1, 1, last.cursor + 1),
                                              timeout=self.config.store_timeout)
                high = batch.last_cursor if found == [last.body] else -1
            else:
                high = await self.store.call(HighWater(self.project_id), timeout=self.config.store_timeout)
        except (StoreError, ActorError) as again:
            return OutcomeUnknown(
                f"the store stopped while it held this write ({exc}) and could not be asked whether "
                f"it committed ({again}): it may or may not be stored; retry with the same "
                "idempotency key to get its original answer without storing it twice"
            )
        if isinstance(batch, AllocatedAppend):  # its cursors are the store's: not known here
            return OutcomeUnknown(
                f"the store stopped while it held this write ({exc}): it may or may not be "
                "stored; retry with the same idempotency key to get its original answer"
            )
        if high >= batch.last_cursor:
            return None
        return NotStored(f"the store stopped before committing this write ({exc}), not stored; retry")

    def _append_events(self, new_events: list[_Event], remote: bool = False) -> dict[int, list[str]]:
        """Retain, deliver and wake waiters; returns who was notified of each cursor."""
        if not new_events:
            return {}
        if not remote:
            self.stats["events_published"] += len(new_events)
        self.log.append(ev.entry() for ev in new_events)
        now = self.wall_clock()
        if now >= self._next_sweep:  # expired events are never given again: free them
            self._next_sweep = now + _SWEEP_SECONDS
            self.log.drop_expired(now)
        notified = self._fan_out(new_events)
        if self.waiters:
            self._wake_waiters()
        return notified

    def _fan_out(self, new_events: list[_Event]) -> dict[int, list[str]]:
        if not self.subscriptions:
            return {}  # nobody notified of any
        dead: set[str] = set()
        notified: dict[int, list[str]] = {}
        for ev in new_events:
            agents: set[str] = set()
            cursor = ev.event["cursor"]
            topic = ev.event.get("topic")
            for sub in self.subscriptions.values():
                sink = sub.sink
                # one still catching up takes this event from the log, in order, later
                if (sub.position is not None or sink.session_key in dead
                        or not sub.wants(ev.event_type, topic, ev.event)):
                    continue
                if sink.deliver(sub.sid, cursor, ev.body):
                    agents.add(sink.agent_id)
                    # fault injection: stored, given to one subscriber, the others not yet
                    self.fault_point("mid_fanout")
                else:
                    dead.add(sink.session_key)
            self.stats["deliveries"] += len(agents)
            notified[ev.cursor] = sorted(agents)
        for key in dead:
            self._drop_session(key)
        return notified

    async def _get(self, call: Call, msg: GetResult) -> None:
        encoded = self.results.get(msg.result_id)
        if encoded is None:
            encoded = await self.store.call(
                StoreGetResult(self.project_id, msg.result_id), timeout=self.config.store_timeout
            )
            if encoded is None:
                call.fail(NotFound(f"no result {msg.result_id!r}"))
                return
            self.results.put(msg.result_id, encoded)
        call.reply(encoded)

    # -- waits --

    def _matching(self, msg: Wait, after: int, limit: int) -> tuple[list[Entry], bool]:
        out: list[Entry] = []
        for ev in self.log.after(after, self.wall_clock()):
            if ev.event_type != msg.event_type or not _passes(msg.filter, ev):
                continue
            if len(out) == limit:
                return out, True
            out.append(ev)
        return out, False

    def _wait(self, call: Call, msg: Wait) -> None:
        key = None
        if msg.since is None:
            key = (msg.sub, f"{msg.event_type}\x00{msg.filter.text}")
            after = self.wait_cursors.get(key) or 0
        else:
            after = msg.since
        found, more = self._matching(msg, after, msg.limit)
        if found or msg.timeout <= 0:
            call.reply(self._answer_wait(msg, key, after, found, more, timed_out=not found))
            return
        if len(self.waiters) >= self.config.max_waiters:
            call.fail(Overloaded("too many waits in progress for this project", retry_after=1.0))
            return
        self.waiters.append(
            _Waiter(self.defer_call(call), msg, after, trio.current_time() + msg.timeout, key)
        )
        self.fault_point("during_wait")  # fault injection: with a wait parked

    def _answer_wait(
        self,
        msg: Wait,
        key: tuple[str, str] | None,
        after: int,
        found: list[Entry],
        more: bool,
        timed_out: bool,
    ) -> WaitAnswer:
        reply = self._wait_reply(found, after, more, timed_out)
        if found and key is not None:
            return WaitAnswer(reply, ConfirmWait(key[0], key[1], found[-1].cursor))
        return WaitAnswer(reply)

    def _advance_wait(self, key: tuple[str, str], cursor: int) -> None:
        """Move a server-side wait position forward (a delivered answer); never backwards."""
        if cursor <= (self.wait_cursors.peek(key) or 0):
            return
        self.wait_cursors.put(key, cursor)
        self.store.try_cast(SaveWaitCursor(self.project_id, key[0], key[1], cursor))

    def _wait_reply(self, found: list[Entry], after: int, more: bool, timed_out: bool) -> bytes:
        """The answer, encoded: the retained events' bytes are spliced in, never re-encoded."""
        return b'{"events":[%s],"more_available":%s,"next_cursor":"%s"%s}' % (
            b",".join(ev.body for ev in found),
            b"true" if more else b"false",
            encode_cursor(found[-1].cursor if found else max(after, 0)).encode(),
            b',"timeout":true' if timed_out else b"",
        )

    def _wake_waiters(self) -> None:
        keep = []
        for w in self.waiters:
            if w.call.abandoned:
                continue
            found, more = self._matching(w.msg, max(w.after, w.scanned), w.msg.limit)
            if found:
                w.call.reply(self._answer_wait(w.msg, w.key, w.after, found, more, timed_out=False))
            else:
                w.scanned = self.last_cursor  # nothing up to here: never search it again
                keep.append(w)
        self.waiters = keep

    # -- subscriptions --

    def _subscribe(self, msg: Subscribe) -> dict[str, Any]:
        if len(self.subscriptions) >= self.config.max_subscriptions:
            raise Overloaded("too many subscriptions on this project", retry_after=5.0)
        self.next_sid += 1
        sid = f"{self.project_id}/{self.next_sid}"
        sub = _Subscription(sid, msg.sink, msg.event_types, msg.topics, msg.filter)
        cursor = encode_cursor(self.last_cursor)
        recovered = msg.since is None or msg.since >= self.log.floor
        reply = {"subscription": sid, "cursor": cursor, "recovered": recovered}
        if msg.announce:
            msg.sink.subscribed(msg.reply_id, reply)
        msg.sink.begin(sid, cursor if msg.since is None else encode_cursor(msg.since))
        self.subscriptions[sid] = sub
        if msg.since is not None:
            sub.position = max(msg.since, self.log.floor)
            self._catch_up(sub)
        return reply

    def _catch_up(self, sub: _Subscription) -> None:
        """Queue the retained events ``sub`` wants after its position, as far as its sink
        takes them now. At the end of the log the subscription goes live, in this same step
        (no gap, no duplicate); otherwise the sink pulls again once its outbox drained.
        Replay thus runs at the consumer's pace and never overflows the outbound bound."""
        assert sub.position is not None
        if sub.position < self.log.floor:
            # what it still needed was trimmed while it caught up: never a silent gap
            del self.subscriptions[sub.sid]
            sub.sink.behind(sub.sid)
            return
        now = self.wall_clock()
        sink = sub.sink
        for ev in self.log.after(sub.position):
            if ev.expires_at > now and sub.wants(ev.event_type, ev.topic, ev):
                if not sink.replay(sub.sid, encode_cursor(ev.cursor), ev.body):
                    sink.want_more(self.ref, Pull(sink.session_key, sub.sid))
                    return
            sub.position = ev.cursor
        sub.position = None

    def _drop_session(self, session_key: str) -> None:
        for sid in [s for s, sub in self.subscriptions.items() if sub.sink.session_key == session_key]:
            del self.subscriptions[sid]

    def _stats(self) -> dict[str, Any]:
        return {
            **self.stats,
            "last_cursor": encode_cursor(self.last_cursor),
            "retained_events": len(self.log),
            "retained_bytes": self.log.bytes,
            "subscriptions": len(self.subscriptions),
            "waiters": sum(not w.call.abandoned for w in self.waiters),
            "wait_positions": len(self.wait_cursors),
            "cached_results": len(self.results),
        }


class RemoteUnreadable(Exception):
    """Raised out of the project actor (it restarts, loading from the store; its callers learn
    the outcome is unknown): an append committed with cursors the store took, and the other
    processes' events below them could not be read, so they cannot be delivered before it."""


_WRITES = (StoreResult, StoreResults, Publish)
_SWEEP_SECONDS = 30.0
#: how long a stored result's ``agent_completed`` event is retained (seconds)
_COMPLETED_TTL = 86_400


class _Stamp:
    """The time of one batch of writes, taken once: they are committed together, so they
    carry the same time (and a result's texts of it are formatted once per batch)."""

    __slots__ = ("now", "iso", "_expiry", "_next")

    def __init__(self, now: float) -> None:
        self.now = now
        self.iso = iso_time(now)
        self._expiry: str | None = None
        self._next: dict[str, tuple[str, ...]] = {}

    @property
    def completed_expiry(self) -> str:
        """When an ``agent_completed`` event stored now expires, as text."""
        if self._expiry is None:
            self._expiry = iso_time(self.now + _COMPLETED_TTL)
        return self._expiry

    def next_agents(self, profiles: Profiles, agent_type: str) -> list[str]:
        """The agent types to run after ``agent_type`` (a profile looked up once a batch)."""
        found = self._next.get(agent_type)
        if found is None:
            found = self._next[agent_type] = tuple(profiles.get(agent_type).next_agents)
        return list(found)


def _passes(flt: EventFilter, event: dict[str, Any] | Entry) -> bool:
    """Whether ``event`` passes ``flt``; an :class:`Entry` is decoded only for a filter with
    conditions."""
    if not flt.terms:
        return True
    return flt.matches(event if isinstance(event, dict) else event.decoded())


def _looks(msg: Any, last_cursor: int) -> bool:
    """Whether ``msg`` makes a project on a shared store read what other processes appended
    first: an announcement of cursors it has not seen, or a wait or subscription (which then
    sees every event acknowledged anywhere before it arrived)."""
    if isinstance(msg, RemoteAppend):
        return msg.cursor is None or msg.cursor > last_cursor
    return isinstance(msg, Wait | Subscribe)


def _remote(body: bytes) -> _Event:
    """A stored event another process appended, as a new event of this one."""
    event = orjson.loads(body)
    expires_at = datetime.fromisoformat(event["expires_at"].replace("Z", "+00:00")).timestamp()
    return _Event(int(event["cursor"]), event["event_type"], expires_at, event, body)


def _loaded(body: bytes) -> Entry:
    """The log entry of a stored event (decoded once, here; the log keeps the bytes)."""
    event = orjson.loads(body)
    expires_at = datetime.fromisoformat(event["expires_at"].replace("Z", "+00:00")).timestamp()
    return Entry.of(event, body, expires_at)
