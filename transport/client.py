"""The Python SDK: a trio client of Orchestra's WebSocket protocol (docs/sdk.md).

::

    async with orchestra.client.connect("http://127.0.0.1:3001", token) as client:
        context = await client.context_get("ISS-7", task="fix the login")
        await client.store_result("ISS-7", {"status": "success"})
        async for event in await client.subscribe(["agent_completed"]):
            ...

It speaks only the public protocol. Guarantees:

- Many requests may be in flight on one connection; each answer is paired by ``id``.
- A dropped connection is reopened with exponential backoff and jitter (honouring a
  ``retry_after_seconds`` the server gives); 4001 and 4003 are final and raise
  :class:`Unauthorized` / :class:`Forbidden` to every caller.
- A request in flight when its connection drops is sent again on the next one. Every write
  carries an idempotency key (a generated one unless the caller gives one), so a write sent
  again is stored once.
- Every subscription resumes after a reconnect (a dropped connection, a 4008, a 1012, a
  restart of the server) with ``since`` = the last cursor handed to its consumer's buffer:
  the consumer sees each event exactly once, in cursor order (per project). Events already
  seen are dropped by cursor as a safety net. A consumer that falls behind its bounded buffer
  is resubscribed from where it stopped once it has read the buffer, never silently skipped.
- The token is refreshed (``auth.refresh``) when the server says it is expiring and by a
  timer before its ``exp``; a reconnect uses the newest token.
"""

from __future__ import annotations

import base64
import itertools
import math
import random
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson
import trio
import trio_websocket

from .client_errors import (
    Conflict,
    ConnectionFailed,
    EventsLost,
    Forbidden,
    InvalidRequest,
    NotFound,
    OrchestraError,
    RateLimited,
    ServerError,
    TooLarge,
    Unauthorized,
    Unavailable,
    error_from_body,
    error_from_close,
)

__all__ = [
    "Backoff",
    "Client",
    "ClientConfig",
    "Conflict",
    "ConnectionFailed",
    "Event",
    "EventsLost",
    "Forbidden",
    "InvalidRequest",
    "NotFound",
    "OrchestraError",
    "RateLimited",
    "ServerError",
    "Subscription",
    "TooLarge",
    "Unauthorized",
    "Unavailable",
    "connect",
    "ws_url",
]

#: An event object of the protocol (``event_id``, ``cursor``, ``project_id``, ``event_type``,
#: ``topic``, ``publisher``, ``agent_type``, ``data``, ...).
Event = dict[str, Any]

#: Operations that store something: each is sent with an idempotency key.
WRITE_OPS = frozenset({"result.store", "result.store_batch", "event.publish", "agent.spawn"})


@dataclass(frozen=True)
class ClientConfig:
    """The client's bounds and timings (seconds)."""

    #: first reconnect delay, and the cap of the exponential backoff
    backoff_initial: float = 0.1
    backoff_max: float = 5.0
    #: give up (``ConnectionFailed``) after this long without a connection; None: never
    reconnect_timeout: float | None = 60.0
    #: bound of one connection attempt (TCP, WebSocket handshake, the first ping)
    connect_timeout: float = 10.0
    #: times one request may be sent again after its connection dropped
    max_resends: int = 10
    #: times a request answered 503 is sent again after its ``retry_after_seconds``
    unavailable_retries: int = 3
    #: a 503 asking to wait longer than this is raised at once
    max_retry_after: float = 30.0
    #: requests in flight at once (more wait their turn)
    max_in_flight: int = 256
    #: events buffered per subscription for its consumer
    subscription_buffer: int = 1000
    #: refresh the token this long before it expires (at most a third of its lifetime)
    refresh_margin: float = 60.0
    #: the largest message sent (the server's ``--max-body-bytes``); larger: ``TooLarge``
    max_message_bytes: int = 10 * 1024 * 1024


class Backoff:
    """Reconnect delays: exponential from ``initial`` to ``maximum``, each with "equal
    jitter" (a uniform draw from half the step to the step). Pure."""

    def __init__(self, initial: float, maximum: float, rng: random.Random | None = None) -> None:
        self.initial = initial
        self.maximum = maximum
        self.rng = rng or random.Random()
        self.attempt = 0

    def next(self) -> float:
        step = min(self.maximum, self.initial * 2 ** min(self.attempt, 32))
        self.attempt += 1
        return step / 2 + self.rng.uniform(0, step / 2)

    def reset(self) -> None:
        self.attempt = 0


def ws_url(url: str) -> str:
    """The WebSocket URL of a server: ``http://h:p`` (as in ``ORCHESTRA_URL``) becomes
    ``ws://h:p/ws``, ``https`` becomes ``wss``; a ``ws``/``wss`` URL with a path is kept."""
    parts = urlsplit(url)
    scheme = {"http": "ws", "https": "wss", "ws": "ws", "wss": "wss"}.get(parts.scheme)
    if scheme is None or not parts.netloc:
        raise ValueError(f"not a server URL: {url!r} (expected http://host:port or ws://host:port/ws)")
    path = parts.path if parts.path not in ("", "/") else "/ws"
    return urlunsplit((scheme, parts.netloc, path, parts.query, ""))


def token_claims(token: str) -> dict[str, Any]:
    """The claims of a JWT, read without verifying it (the server verifies); {} if unreadable."""
    try:
        payload = token.split(".")[1]
        claims = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError, orjson.JSONDecodeError):
        return {}
    return claims if isinstance(claims, dict) else {}


class _LinkLost(Exception):
    """The connection a request was sent on closed before its answer came."""


class _Pending:
    __slots__ = ("done", "error", "lost", "on_reply", "result")

    def __init__(self, on_reply: Callable[[_Link, Any], None] | None) -> None:
        self.done = trio.Event()
        self.result: Any = None
        self.error: OrchestraError | None = None
        self.lost = False
        self.on_reply = on_reply


class _Link:
    """One WebSocket connection: its requests awaiting answers and its subscriptions' ids."""

    def __init__(self, ws: trio_websocket.WebSocketConnection, max_bytes: int) -> None:
        self.ws = ws
        self.max_bytes = max_bytes
        self.pending: dict[int, _Pending] = {}
        #: server subscription id -> the client's subscription
        self.subs: dict[str, Subscription] = {}
        #: the "*" subscription on this link, which takes pushes of projects attached later
        self.global_sub: Subscription | None = None
        self.closed = trio.Event()
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self._ids = itertools.count(1)

    def lose(self, code: int | None = None, reason: str | None = None) -> None:
        if self.closed.is_set():
            return
        self.close_code, self.close_reason = code, reason
        self.closed.set()
        for slot in self.pending.values():
            slot.lost = True
            slot.done.set()

    async def request(
        self, fields: dict[str, Any], on_reply: Callable[[_Link, Any], None] | None = None
    ) -> Any:
        """Send one request and wait for its answer: the result, or the error raised.
        ``on_reply`` runs in the reader, before any later frame is handled."""
        if self.closed.is_set():
            raise _LinkLost
        rid = next(self._ids)
        frame = orjson.dumps({"id": rid, **fields})
        if len(frame) > self.max_bytes:
            raise TooLarge({"error": "payload_too_large", "code": "REQ_002", "limit": self.max_bytes,
                            "message": f"a request of {len(frame)} bytes is over the limit of {self.max_bytes}"})
        slot = _Pending(on_reply)
        self.pending[rid] = slot
        try:
            try:
                await self.ws.send_message(frame.decode())
            except (trio_websocket.ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError):
                raise _LinkLost from None
            await slot.done.wait()
        finally:
            self.pending.pop(rid, None)
        if slot.lost:
            raise _LinkLost
        if slot.error is not None:
            raise slot.error
        return slot.result

    def answer(self, msg: dict[str, Any]) -> None:
        slot = self.pending.get(msg["id"]) if isinstance(msg.get("id"), int) else None
        if slot is None or slot.done.is_set():
            return  # a caller that gave up, or an error frame about no request
        if msg["ok"]:
            slot.result = msg.get("result")
            if slot.on_reply is not None:
                slot.on_reply(self, slot.result)
        else:
            slot.error = error_from_body(msg.get("error"))
        slot.done.set()


class Subscription:
    """A subscription's events, as an async iterator, each exactly once and in cursor order
    (per project for ``"*"``). It lives across reconnects. Ending iteration: after
    :meth:`unsubscribe` (or leaving ``async with``), or the client closing; a final error
    of the client (``Unauthorized``, ``Forbidden``, ``ConnectionFailed``) is raised."""

    def __init__(self, client: Client, args: dict[str, Any], since: Any) -> None:
        self._client = client
        self._args = args
        self.is_global = args.get("project_id") == "*"
        #: the last cursor handed to the buffer, per project ("" for a one-project subscription)
        self._cursors: dict[str, str] = {}
        self._since_all: str | None = None  # "*" with one cursor: for projects not yet seen
        if isinstance(since, dict):
            self._cursors.update(since)
        elif since is not None:
            if self.is_global:
                self._since_all = since
            else:
                self._cursors[""] = since
        self._buffer: deque[Event] = deque()
        self._wakeup = trio.Event()
        self._overflowed = False
        self._lost: list[Any] = []
        self._closed = False
        #: the server's id (of the present connection): one sid, or the global subscription id
        self.sid: str | None = None
        #: False once the server said events after a resume point may be gone
        self.recovered = True

    # -- what the client sends --

    def subscribe_args(self) -> dict[str, Any]:
        args = dict(self._args)
        if self.is_global:
            since: Any = dict(self._cursors) if self._cursors else self._since_all
        else:
            since = self._cursors.get("")
        if since is not None:
            args["since"] = since
        return args

    def cursor(self) -> str | dict[str, str] | None:
        """Where the consumer's buffer ends: the cursor to resume from (per project for ``"*"``)."""
        return dict(self._cursors) if self.is_global else self._cursors.get("")

    # -- called by the client's reader (never blocks) --

    def _on_reply(self, link: _Link, reply: dict[str, Any]) -> None:
        if self.is_global:
            self.sid = reply.get("global_subscription")
            for attached in reply.get("subscriptions") or []:
                link.subs[attached["subscription"]] = self
                if attached.get("recovered") is False:
                    self._gap(attached.get("project_id"))
                # attached now: from the cursor asked for, else live from its latest
                self._cursors.setdefault(attached["project_id"], self._since_all or attached["cursor"])
        else:
            self.sid = reply["subscription"]
            link.subs[self.sid] = self
            if reply.get("recovered") is False:
                self._gap(self._cursors.get(""))
            self._cursors.setdefault("", reply["cursor"])
        self._overflowed = False
        self._wake()

    def _push(self, event: Event) -> None:
        key = str(event.get("project_id", "")) if self.is_global else ""
        cursor = event.get("cursor")
        if not isinstance(cursor, str):
            return
        last = self._cursors.get(key)
        if (last is not None and cursor <= last) or self._overflowed or self._closed:
            return  # seen already, or dropped until the consumer catches up and resubscribes
        if len(self._buffer) >= self._client.config.subscription_buffer:
            self._overflowed = True
            self._wake()
            return
        self._buffer.append(event)
        self._cursors[key] = cursor
        self._wake()

    def _gap(self, since: Any) -> None:
        self.recovered = False
        self._lost.append(since)
        self._wake()

    def _wake(self) -> None:
        self._wakeup.set()

    def _end(self) -> None:
        self._closed = True
        self._wake()

    # -- the consumer's side --

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Event:
        while True:
            if self._lost:
                raise EventsLost(self._lost.pop(0))
            if self._buffer:
                await trio.lowlevel.checkpoint()
                return self._buffer.popleft()
            if self._client._final is not None:
                raise self._client._final
            if self._closed:
                raise StopAsyncIteration
            if self._overflowed:
                await self._client._renew(self)
                continue
            self._wakeup = trio.Event()
            await self._wakeup.wait()

    async def unsubscribe(self) -> None:
        """End it at the server; iteration ends once the buffer is read."""
        await self._client.unsubscribe(self)

    async def __aenter__(self) -> Subscription:
        return self

    async def __aexit__(self, *exc: object) -> None:
        with trio.CancelScope(shield=True), trio.move_on_after(5):
            await self.unsubscribe()


class Client:
    """A connection to one server, kept open (see the module's guarantees). Made by
    :func:`connect`; its methods may be called from many tasks at once."""

    def __init__(self, url: str, token: str, config: ClientConfig | None = None) -> None:
        self.url = ws_url(url)
        self.config = config or ClientConfig()
        self.token = token
        self.claims = token_claims(token)
        self._link: _Link | None = None
        self._ready = trio.Event()
        self._final: OrchestraError | None = None
        self._closed = False
        self._subs: list[Subscription] = []
        self._in_flight = trio.Semaphore(self.config.max_in_flight)
        self._refresh_now = trio.Event()
        #: connections opened (1 after connect), and requests sent again after their
        #: connection dropped: diagnostics
        self.connections = 0
        self.resends = 0

    # -- the operations of PROTOCOL.md --

    async def ping(self) -> dict[str, Any]:
        return await self._call("ping", {})  # type: ignore[no-any-return]

    async def status(self) -> dict[str, Any]:
        """The server's figures (per-project detail for an admin token)."""
        return await self._call("status", {})  # type: ignore[no-any-return]

    async def context_get(
        self, issue_id: str, *, agent_type: str | None = None, task: str | None = None,
        max_bytes: int | None = None, project_id: str | None = None,
    ) -> dict[str, Any]:
        """The context response for ``issue_id`` (``agent_type`` defaults to the token's)."""
        return await self._call("context.get", {  # type: ignore[no-any-return]
            "issue_id": issue_id, "agent_type": agent_type, "task": task, "max_bytes": max_bytes,
            "project_id": project_id})

    async def clear_context_cache(self, issue_id: str, *, project_id: str | None = None) -> dict[str, Any]:
        return await self._call("cache.clear", {"issue_id": issue_id, "project_id": project_id})  # type: ignore[no-any-return]

    async def store_result(
        self, issue_id: str, result: dict[str, Any], *, agent_id: str | None = None,
        agent_type: str | None = None, project_id: str | None = None, timestamp: str | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Store a result (``result["status"]`` a string); ``agent_id`` and ``agent_type``
        default to the token's ``sub`` and ``agent_type``. Stored once, also when sent again."""
        return await self._call("result.store", self.result_body(  # type: ignore[no-any-return]
            issue_id, result, agent_id=agent_id, agent_type=agent_type, project_id=project_id,
            timestamp=timestamp), idempotency_key=idempotency_key)

    async def store_results(
        self, bodies: list[dict[str, Any]], *, idempotency_key: str | None = None
    ) -> dict[str, Any]:
        """Store many result bodies in one transaction (see :meth:`result_body`)."""
        return await self._call("result.store_batch", {"results": bodies},  # type: ignore[no-any-return]
                                idempotency_key=idempotency_key)

    def result_body(
        self, issue_id: str, result: dict[str, Any], *, agent_id: str | None = None,
        agent_type: str | None = None, project_id: str | None = None, timestamp: str | None = None,
    ) -> dict[str, Any]:
        """A result body with this token's defaults, for :meth:`store_results`."""
        body = {"issue_id": issue_id, "result": result,
                "agent_id": agent_id or self.claims.get("sub"),
                "agent_type": agent_type or self.claims.get("agent_type"),
                "project_id": project_id, "timestamp": timestamp}
        return {k: v for k, v in body.items() if v is not None}

    async def get_result(self, result_id: str) -> dict[str, Any]:
        return await self._call("result.get", {"result_id": result_id})  # type: ignore[no-any-return]

    async def query_results(
        self, *, issue_id: str | None = None, agent_type: str | None = None,
        agent_id: str | None = None, status: str | None = None, since: str | None = None,
        until: str | None = None, q: str | None = None, limit: int | None = None,
        cursor: str | None = None, project_id: str | None = None,
    ) -> dict[str, Any]:
        """One page, newest first: ``{"results", "next_cursor"}``."""
        return await self._call("result.query", {  # type: ignore[no-any-return]
            "issue_id": issue_id, "agent_type": agent_type, "agent_id": agent_id, "status": status,
            "since": since, "until": until, "q": q, "limit": limit, "cursor": cursor,
            "project_id": project_id})

    async def publish(
        self, event_type: str, data: dict[str, Any] | None = None, *, topic: str | None = None,
        correlation_id: str | None = None, ttl_seconds: int | None = None, round: int | None = None,
        references: list[str] | None = None, project_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Publish an event; published once, also when sent again."""
        return await self._call("event.publish", {  # type: ignore[no-any-return]
            "event_type": event_type, "data": data, "topic": topic, "correlation_id": correlation_id,
            "ttl_seconds": ttl_seconds, "round": round, "references": references,
            "project_id": project_id}, idempotency_key=idempotency_key)

    async def wait(
        self, event_type: str, *, timeout: float = 30.0, filter: str | None = None,
        since: str | None = None, limit: int | None = None, project_id: str | None = None,
    ) -> dict[str, Any]:
        """Wait up to ``timeout`` seconds for matching events: ``{"events", "more_available",
        "next_cursor", "timeout"?}``. Without ``since`` the server keeps this agent's position
        (a wait sent again after a dropped connection repeats events, never loses them)."""
        return await self._call("event.wait", {  # type: ignore[no-any-return]
            "event_type": event_type, "timeout": max(0, min(300_000, math.ceil(timeout * 1000))),
            "filter": filter, "since": since, "limit": limit, "project_id": project_id})

    async def subscribe(
        self, event_types: list[str] | str = "*", *, topics: list[str] | None = None,
        filter: str | None = None, since: str | dict[str, str] | None = None,
        project_id: str | None = None,
    ) -> Subscription:
        """Subscribe; the events come from the returned :class:`Subscription`. ``since``
        replays the events after that cursor first. ``project_id="*"`` (an admin token for
        every project): every project; ``since`` may then name a cursor per project. One
        ``"*"`` subscription per client at a time."""
        args = {"event_types": event_types, "topics": topics, "filter": filter, "project_id": project_id}
        sub = Subscription(self, {k: v for k, v in args.items() if v is not None}, since)
        if sub.is_global and any(s.is_global for s in self._subs):
            raise ValueError("one '*' subscription per client: unsubscribe the other first")
        await self._call_subscribe(sub)
        return sub

    async def unsubscribe(self, subscription: Subscription) -> None:
        """End a subscription (its consumer reads what is buffered, then iteration ends)."""
        if subscription in self._subs:
            self._subs.remove(subscription)
        subscription._end()
        link = self._link
        if link is None or subscription.sid is None or link.closed.is_set():
            return  # no server-side subscription to end: the next connection will not have it
        for sid in [s for s, sub in link.subs.items() if sub is subscription]:
            del link.subs[sid]
        if link.global_sub is subscription:
            link.global_sub = None
        try:
            await link.request({"op": "event.unsubscribe", "subscription": subscription.sid})
        except (_LinkLost, NotFound):
            pass  # gone with its connection, or never reached this one

    async def refresh(self, token: str | None = None) -> dict[str, Any]:
        """``auth.refresh``: a fresh token for the same claims (or adopt ``token``, which must
        keep ``sub`` and ``project_id``). Later reconnects use it. Done automatically."""
        result = await self._call("auth.refresh", {"token": token})
        self.token = result["token"]
        self.claims = token_claims(self.token)
        return result  # type: ignore[no-any-return]

    async def spawn(
        self, agent_type: str, issue_id: str, *, task: str | None = None,
        context_requirements: dict[str, Any] | None = None, environment: dict[str, str] | None = None,
        project_id: str | None = None, idempotency_key: str | None = None,
    ) -> dict[str, Any]:
        """Spawn an agent process (``spawn_agents``); a spawn sent again starts one process."""
        return await self._call("agent.spawn", {  # type: ignore[no-any-return]
            "agent_type": agent_type, "issue_id": issue_id, "task": task,
            "context_requirements": context_requirements, "environment": environment,
            "project_id": project_id}, idempotency_key=idempotency_key)

    async def agent_status(self, agent_id: str) -> dict[str, Any]:
        return await self._call("agent.status", {"agent_id": agent_id})  # type: ignore[no-any-return]

    async def list_agents(
        self, *, state: str | None = None, agent_type: str | None = None, issue_id: str | None = None
    ) -> dict[str, Any]:
        return await self._call("agent.list", {  # type: ignore[no-any-return]
            "state": state, "agent_type": agent_type, "issue_id": issue_id})

    async def agent_logs(self, agent_id: str, *, tail: int | None = None) -> dict[str, Any]:
        return await self._call("agent.logs", {"agent_id": agent_id, "tail": tail})  # type: ignore[no-any-return]

    async def stop_agent(self, agent_id: str, *, grace_seconds: float | None = None) -> dict[str, Any]:
        return await self._call("agent.stop", {  # type: ignore[no-any-return]
            "agent_id": agent_id, "grace_seconds": grace_seconds})

    # -- requests --

    async def _call(self, op: str, args: dict[str, Any], *, idempotency_key: str | None = None) -> Any:
        fields = {"op": op, **{k: v for k, v in args.items() if v is not None}}
        if op in WRITE_OPS:
            fields["idempotency_key"] = idempotency_key or uuid.uuid4().hex
        async with self._in_flight:
            return await self._send(fields)

    async def _call_subscribe(self, sub: Subscription) -> None:
        def on_reply(link: _Link, reply: Any) -> None:
            sub._on_reply(link, reply)
            self._subs.append(sub)

        def prepare(link: _Link) -> None:
            if sub.is_global:  # pushes of a "*" subscription may precede its answer
                link.global_sub = sub

        async with self._in_flight:
            await self._send({"op": "event.subscribe", **sub.subscribe_args()}, on_reply, prepare)

    async def _send(
        self, fields: dict[str, Any], on_reply: Callable[[_Link, Any], None] | None = None,
        prepare: Callable[[_Link], None] | None = None,
    ) -> Any:
        resends = unavailable = 0
        while True:
            link = await self._current_link()
            if prepare is not None:
                prepare(link)
            try:
                return await link.request(fields, on_reply)
            except _LinkLost:
                resends += 1
                self.resends += 1
                if resends > self.config.max_resends:
                    raise ConnectionFailed(
                        f"{fields['op']} was lost with its connection {resends} times") from None
            except Unavailable as exc:
                wait = exc.retry_after
                if wait is None or wait > self.config.max_retry_after or unavailable >= self.config.unavailable_retries:
                    raise
                unavailable += 1
                await trio.sleep(wait * random.uniform(1.0, 1.25))

    async def _current_link(self) -> _Link:
        while True:
            if self._final is not None:
                raise self._final
            if self._closed:
                raise trio.ClosedResourceError("the client is closed")
            link = self._link
            if link is not None and not link.closed.is_set():
                return link
            await self._ready.wait()

    async def _renew(self, sub: Subscription) -> None:
        """Resubscribe ``sub`` from its cursor on the present connection after its consumer
        fell behind its buffer (a reconnect resubscribes it anyway)."""
        link = self._link
        if link is None or link.closed.is_set():
            await self._current_link()
            return
        for sid in [s for s, mine in link.subs.items() if mine is sub]:
            del link.subs[sid]
        try:
            if sub.sid is not None:
                try:
                    await link.request({"op": "event.unsubscribe", "subscription": sub.sid})
                except NotFound:
                    pass
            if sub.is_global:
                link.global_sub = sub
            await link.request({"op": "event.subscribe", **sub.subscribe_args()}, sub._on_reply)
        except _LinkLost:
            await self._current_link()  # the next connection resubscribes it

    # -- the connection's life --

    async def _maintain(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep a connection open until the client closes or an error is final. Reports
        started once the first connection is ready, or once the client has failed."""
        backoff = Backoff(self.config.backoff_initial, self.config.backoff_max)
        down_since = trio.current_time()
        ready = [task_status.started]
        try:
            while True:
                opened = self.connections
                try:
                    close_code, close_reason, retry_after = await self._serve_link(backoff, ready)
                except OrchestraError as final:
                    self._fail(final)
                    return
                final = error_from_close(close_code or 0, close_reason)
                if final is not None:
                    self._fail(final)
                    return
                if self.connections != opened:
                    down_since = trio.current_time()
                timeout = self.config.reconnect_timeout
                if timeout is not None and trio.current_time() - down_since > timeout:
                    self._fail(ConnectionFailed(f"no connection to {self.url} for {timeout:g} s"))
                    return
                delay = backoff.next()
                if retry_after is not None:
                    delay = max(delay, min(retry_after, self.config.max_retry_after))
                await trio.sleep(delay)
        finally:
            if ready:
                ready.pop()()

    async def _serve_link(
        self, backoff: Backoff, ready: list[Callable[[], object]]
    ) -> tuple[int | None, str | None, float | None]:
        """Open one connection and serve it until it closes: its close code and reason (None
        if it never opened or was cut without one) and a delay the server asked for. Raises a
        final error (a refused upgrade or resubscription: 401, 403, 404)."""
        headers = [(b"authorization", f"Bearer {self.token}".encode())]
        link: _Link | None = None
        failure: BaseException | None = None
        async with trio.open_nursery() as nursery:
            try:  # nothing raised in this body: it would come out of the nursery in a group
                with trio.fail_after(self.config.connect_timeout):
                    ws = await trio_websocket.connect_websocket_url(
                        nursery, self.url, extra_headers=headers, message_queue_size=64,
                        max_message_size=max(self.config.max_message_bytes, 64 * 1024 * 1024))
                    link = _Link(ws, self.config.max_message_bytes)
                    nursery.start_soon(self._reader, link)
                    await link.request({"op": "ping"})
                    for sub in list(self._subs):
                        if sub.is_global:
                            link.global_sub = sub
                        await link.request({"op": "event.subscribe", **sub.subscribe_args()}, sub._on_reply)
                self.connections += 1
                backoff.reset()
                self._link = link
                self._ready.set()
                if ready:
                    ready.pop()()
                await link.closed.wait()
            except (OSError, trio.TooSlowError, trio_websocket.HandshakeError, trio.BrokenResourceError,
                    _LinkLost, OrchestraError) as exc:
                failure = exc
            finally:
                if self._link is link:
                    self._link = None
                if self._ready.is_set() and self._final is None:
                    self._ready = trio.Event()
                nursery.cancel_scope.cancel()
        if link is not None:
            closed = link.ws.closed
            code = link.close_code or (closed.code if closed is not None else None)
            reason = link.close_reason or (closed.reason if closed is not None else None)
            link.lose(code, reason)
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                await link.ws.aclose()
            if code is not None:
                return code, reason, None
        if isinstance(failure, trio_websocket.ConnectionRejected):
            return None, None, self._rejected(failure)
        if isinstance(failure, Unauthorized | Forbidden):
            raise failure
        return None, None, None

    def _rejected(self, exc: trio_websocket.ConnectionRejected) -> float | None:
        """A refused upgrade: final for 401, 403 and 404; otherwise the delay it asks for."""
        try:
            body = orjson.loads(exc.body or b"{}")
        except orjson.JSONDecodeError:
            body = {}
        error = error_from_body(body if isinstance(body, dict) and "code" in body else
                                {"code": "", "message": f"upgrade refused with {exc.status_code}"},
                                exc.status_code)
        if exc.status_code in (401, 403, 404):
            raise error
        return error.retry_after if isinstance(error, Unavailable | RateLimited) else None

    async def _reader(self, link: _Link) -> None:
        try:
            while True:
                msg = orjson.loads(await link.ws.get_message())
                if not isinstance(msg, dict):
                    continue
                if "ok" in msg:
                    link.answer(msg)
                elif msg.get("op") == "event":
                    sub = link.subs.get(msg.get("subscription")) or link.global_sub
                    if sub is not None and isinstance(msg.get("event"), dict):
                        sub._push(msg["event"])
                elif msg.get("op") == "auth.expiring":
                    self._refresh_now.set()
        except trio_websocket.ConnectionClosed as exc:
            link.lose(exc.reason.code, exc.reason.reason)
        except orjson.JSONDecodeError:
            link.lose(1002, "the server sent a frame that is not JSON")
        finally:
            link.lose()

    async def _refresher(self) -> None:
        """Refresh the token before it expires: when the server warns, and by a timer."""
        while self._final is None:
            exp, iat = self.claims.get("exp"), self.claims.get("iat")
            deadline = math.inf
            if isinstance(exp, int | float):
                lifetime = exp - iat if isinstance(iat, int | float) and iat < exp else self.config.refresh_margin * 3
                margin = min(self.config.refresh_margin, lifetime / 3)
                deadline = trio.current_time() + (exp - margin - time.time())
            with trio.move_on_at(deadline):
                await self._refresh_now.wait()
            self._refresh_now = trio.Event()
            try:
                await self.refresh()
            except OrchestraError:
                if self._final is not None:
                    return
                await trio.sleep(1.0)  # tried again until the token expires (then 4001: final)

    def _fail(self, error: OrchestraError) -> None:
        self._final = error
        self._ready.set()  # wakes every caller, who raises it
        for sub in self._subs:
            sub._wake()


@asynccontextmanager
async def connect(url: str, token: str, *, config: ClientConfig | None = None) -> AsyncIterator[Client]:
    """Open a client: returns once connected (retrying refused connections with backoff up to
    ``config.reconnect_timeout``); raises :class:`Unauthorized` or :class:`Forbidden` for a
    token the server refuses, :class:`ConnectionFailed` when it cannot be reached. Leaving the
    block closes the connection and ends every subscription."""
    client = Client(url, token, config)
    body_error: BaseException | None = None
    yielded = False
    async with trio.open_nursery() as nursery:
        await nursery.start(client._maintain)
        if client._final is None:
            nursery.start_soon(client._refresher)
            yielded = True
            try:
                yield client
            except BaseException as exc:  # raised again outside the nursery: not in a group
                body_error = exc
        client._closed = True
        for sub in client._subs:
            sub._end()
        nursery.cancel_scope.cancel()
    if body_error is not None:
        raise body_error
    if not yielded and client._final is not None:
        raise client._final
