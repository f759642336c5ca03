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

import math
import random
import time
import uuid
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

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
from .client_link import Backoff, Link, LinkLost, refresh_delay, token_claims, ws_url
from .client_subscription import Event, Subscription

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


class Client:
    """A connection to one server, kept open (see the module's guarantees). Made by
    :func:`connect`; its methods may be called from many tasks at once."""

    def __init__(self, url: str, token: str, config: ClientConfig | None = None) -> None:
        self.url = ws_url(url)
        self.config = config or ClientConfig()
        self.token = token
        self.claims = token_claims(token)
        self._link: Link | None = None
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

    @property
    def final_error(self) -> OrchestraError | None:
        """The error that ended the client (``Unauthorized``, ``Forbidden``,
        ``ConnectionFailed``), raised by every call since; None while it serves."""
        return self._final

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
        retired = link.retire(subscription)
        try:
            await link.request({"op": "event.unsubscribe", "subscription": subscription.sid})
        except (LinkLost, NotFound):
            pass  # gone with its connection, or never reached this one
        if not subscription.is_global:
            # a project answers after the pushes it queued: none of them can follow.
            # ("*": its projects are told after the answer, so its ids stay retired.)
            for sid in retired:
                link.subs.pop(sid, None)

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
        self, *, state: str | None = None, agent_type: str | None = None, issue_id: str | None = None,
        project_id: str | None = None,
    ) -> dict[str, Any]:
        """``project_id``: the project an all-projects admin token lists."""
        return await self._call("agent.list", {  # type: ignore[no-any-return]
            "state": state, "agent_type": agent_type, "issue_id": issue_id, "project_id": project_id})

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
        def on_reply(link: Link, reply: Any) -> None:
            sub._on_reply(link, reply)
            self._subs.append(sub)

        async with self._in_flight:
            await self._send(sub.subscribe_request, on_reply)

    async def _send(
        self, fields: dict[str, Any] | Callable[[Link], dict[str, Any]],
        on_reply: Callable[[Link, Any], None] | None = None,
    ) -> Any:
        """Send a request until answered (``fields``: or made for each connection it is sent on)."""
        resends = unavailable = 0
        while True:
            link = await self._current_link()
            try:
                return await link.request(fields(link) if callable(fields) else fields, on_reply)
            except LinkLost:
                resends += 1
                self.resends += 1
                if resends > self.config.max_resends:
                    raise ConnectionFailed(
                        f"a request was lost with its connection {resends} times") from None
            except Unavailable as exc:
                wait = exc.retry_after
                if wait is None or wait > self.config.max_retry_after or unavailable >= self.config.unavailable_retries:
                    raise
                unavailable += 1
                await trio.sleep(wait * random.uniform(1.0, 1.25))

    async def _current_link(self) -> Link:
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
        if sub.is_global:
            # pushes of its old attachments could arrive after the new replay began and be
            # taken for newer: a new connection resubscribes it with nothing in between
            with trio.CancelScope(shield=True), trio.move_on_after(1):
                await link.ws.aclose()
            await self._current_link()
            return
        retired = link.retire(sub)
        try:
            if sub.sid is not None:
                try:
                    await link.request({"op": "event.unsubscribe", "subscription": sub.sid})
                except NotFound:
                    pass
            for sid in retired:  # the project answered after the pushes it had queued
                link.subs.pop(sid, None)
            await link.request(sub.subscribe_request(link), sub._on_reply)
        except LinkLost:
            await self._current_link()  # the next connection resubscribes it
        except (RateLimited, Unavailable) as exc:  # still behind: the consumer's next read tries again
            await trio.sleep(min(exc.retry_after or 1.0, self.config.max_retry_after))

    # -- the connection's life --

    async def _maintain(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Keep a connection open until the client closes or an error is final. Reports
        started once the first connection is ready, or once the client has failed."""
        backoff = Backoff(self.config.backoff_initial, self.config.backoff_max)
        down_since = trio.current_time()
        ready: list[Callable[[], object]] = [task_status.started]
        try:
            while True:
                opened = self.connections
                try:
                    close_code, close_reason, retry_after = await self._serve_link(backoff, ready)
                except OrchestraError as final:
                    self._fail(final)
                    return
                if self._closed:
                    return
                closed_for_good = error_from_close(close_code or 0, close_reason)
                if closed_for_good is not None:
                    self._fail(closed_for_good)
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
        link: Link | None = None
        failure: BaseException | None = None
        try:
            link, failure = await self._run_link(backoff, ready, headers)
        except* trio_websocket.HandshakeError as group:  # a refused upgrade, raised by its reader task
            failure = group.exceptions[0]
        if link is not None and link.close_code is not None:
            return link.close_code, link.close_reason, None
        if isinstance(failure, trio_websocket.ConnectionRejected):
            return None, None, self._rejected(failure)
        if isinstance(failure, Unauthorized | Forbidden):
            raise failure
        return None, None, None

    async def _resubscribe(self, link: Link, sub: Subscription) -> None:
        """Resubscribe ``sub`` on a new connection from its cursor; a refusal for now (429,
        503: many subscriptions count against the rate limit) waits as asked, within
        ``connect_timeout`` for each."""
        with trio.fail_after(self.config.connect_timeout):
            while True:
                try:
                    await link.request(sub.subscribe_request(link), sub._on_reply)
                    return
                except (RateLimited, Unavailable) as exc:
                    await trio.sleep(min(exc.retry_after or 1.0, self.config.connect_timeout))

    async def _run_link(
        self, backoff: Backoff, ready: list[Callable[[], object]], headers: list[tuple[bytes, bytes]]
    ) -> tuple[Link | None, BaseException | None]:
        link: Link | None = None
        failure: BaseException | None = None
        async with trio.open_nursery() as nursery:
            try:  # nothing raised in this body: it would come out of the nursery in a group
                with trio.fail_after(self.config.connect_timeout):
                    ws = await trio_websocket.connect_websocket_url(
                        nursery, self.url, extra_headers=headers, message_queue_size=64,
                        max_message_size=max(self.config.max_message_bytes, 64 * 1024 * 1024))
                    link = Link(ws, self.config.max_message_bytes)
                    nursery.start_soon(self._reader, link)
                    await link.request({"op": "ping"})
                for sub in list(self._subs):
                    await self._resubscribe(link, sub)
                self.connections += 1
                backoff.reset()
                self._link = link
                self._ready.set()
                if ready:
                    ready.pop()()
                await link.closed.wait()
            except (OSError, trio.TooSlowError, trio_websocket.HandshakeError, trio.BrokenResourceError,
                    LinkLost, OrchestraError) as exc:
                failure = exc
            finally:
                if self._link is link:
                    self._link = None
                if self._ready.is_set() and self._final is None:
                    self._ready = trio.Event()
                if link is not None:
                    # the server's close code if it closed (the reader may not have seen it yet)
                    closed = link.ws.closed
                    if link.close_code is None and closed is not None:
                        link.lose(closed.code, closed.reason)
                    link.lose()
                    # the close handshake needs the reader: brief if it is being cancelled too
                    cancelled = trio.current_effective_deadline() == -math.inf
                    with trio.CancelScope(shield=True), trio.move_on_after(0.1 if cancelled else 1):
                        await link.ws.aclose()
                # let the connection's own reader finish the close handshake (it ends once
                # the server closes the TCP stream), within a grace
                nursery.cancel_scope.deadline = trio.current_time() + 1
        return link, failure

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

    async def _reader(self, link: Link) -> None:
        try:
            while True:
                msg = orjson.loads(await link.ws.get_message())
                if not isinstance(msg, dict):
                    continue
                if "ok" in msg:
                    link.answer(msg)
                elif msg.get("op") == "event":
                    sub = link.route(msg.get("subscription"))
                    if sub is not None and isinstance(msg.get("event"), dict):
                        sub._push(msg["event"])
                elif msg.get("op") == "auth.expiring":
                    self._refresh_now.set()
        except trio_websocket.ConnectionClosed as exc:
            reason = exc.reason
            link.lose(reason.code if reason else None, reason.reason if reason else None)
        except orjson.JSONDecodeError:
            link.lose(1002, "the server sent a frame that is not JSON")
        finally:
            link.lose()

    async def _refresher(self) -> None:
        """Refresh the token before it expires: when the server warns, and by a timer."""
        while self._final is None:
            delay = refresh_delay(self.claims, time.time(), self.config.refresh_margin)
            deadline = trio.current_time() + delay if delay is not None else math.inf
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
        link = client._link
        if link is not None:  # a clean close while the connection's reader still runs
            cancelled = trio.current_effective_deadline() == -math.inf  # then its reader is too
            with trio.CancelScope(shield=True), trio.move_on_after(0.1 if cancelled else 1):
                await link.ws.aclose()
        nursery.cancel_scope.cancel()
    if body_error is not None:
        raise body_error
    if not yielded and client._final is not None:
        raise client._final
