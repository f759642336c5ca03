"""A subscription of the SDK: its events handed to one consumer, exactly once and in order,
across reconnects. Internal to ``orchestra.transport.client`` (which re-exports it)."""

from __future__ import annotations

from collections import deque
from typing import Any, Protocol

import trio

from .client_errors import EventsLost, OrchestraError
from .client_link import Link


class Owner(Protocol):
    """What a subscription needs of its client (a ``Client``)."""

    @property
    def config(self) -> Any: ...
    @property
    def final_error(self) -> OrchestraError | None: ...
    async def _renew(self, sub: Subscription) -> None: ...
    async def unsubscribe(self, subscription: Subscription) -> None: ...

__all__ = ["Event", "Subscription"]

#: An event object of the protocol (``event_id``, ``cursor``, ``project_id``, ``event_type``,
#: ``topic``, ``publisher``, ``agent_type``, ``data``, ...).
Event = dict[str, Any]


class Subscription:
    """A subscription's events, as an async iterator, each exactly once and in cursor order
    (per project for ``"*"``). It lives across reconnects. Ending iteration: after
    :meth:`unsubscribe` (or leaving ``async with``), or the client closing; a final error
    of the client (``Unauthorized``, ``Forbidden``, ``ConnectionFailed``) is raised."""

    def __init__(self, client: Owner, args: dict[str, Any], since: Any) -> None:
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

    def subscribe_request(self, link: Link) -> dict[str, Any]:
        """The ``event.subscribe`` request that (re)subscribes it on ``link`` from its cursor.
        From here on it takes pushes again (those of a "*" subscription may precede the answer)."""
        self._overflowed = False
        if self.is_global:
            link.global_sub = self
        args = {"op": "event.subscribe", **self._args}
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

    def _on_reply(self, link: Link, reply: dict[str, Any]) -> None:
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
        # (an overflow is not cleared here: pushes dropped since the request would be a gap)
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
        if not self._lost:  # one notice until the consumer has seen it
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
            final = self._client.final_error
            if final is not None:
                raise final
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
