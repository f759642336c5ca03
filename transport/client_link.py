"""The SDK's connection: one WebSocket with its requests paired to their answers by ``id``;
and the pure parts of keeping one open (the server URL, reconnect backoff, token claims).

Internal to ``orchestra.transport.client``.
"""

from __future__ import annotations

import base64
import itertools
import random
from collections.abc import Callable
from typing import Any, Protocol
from urllib.parse import urlsplit, urlunsplit

import orjson
import trio
import trio_websocket

from .client_errors import OrchestraError, TooLarge, error_from_body

__all__ = ["Backoff", "EventSink", "Link", "LinkLost", "refresh_delay", "token_claims", "ws_url"]


class EventSink(Protocol):
    """Where a connection hands the pushed events of one subscription (a ``Subscription``)."""

    def _push(self, event: dict[str, Any]) -> None: ...


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
        return float(step / 2 + self.rng.uniform(0, step / 2))

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


def refresh_delay(claims: dict[str, Any], now: float, margin: float) -> float | None:
    """Seconds from ``now`` (wall clock) until a token with these claims should be refreshed:
    ``margin`` before its ``exp``, at most a third of its lifetime (``exp - iat``) before;
    None without an ``exp``. Negative when that moment has passed."""
    exp, iat = claims.get("exp"), claims.get("iat")
    if not isinstance(exp, int | float) or isinstance(exp, bool):
        return None
    lifetime = exp - iat if isinstance(iat, int | float) and iat < exp else 3 * margin
    return float(exp - min(margin, lifetime / 3) - now)


def token_claims(token: str) -> dict[str, Any]:
    """The claims of a JWT, read without verifying it (the server verifies); {} if unreadable."""
    try:
        payload = token.split(".")[1]
        claims = orjson.loads(base64.urlsafe_b64decode(payload + "=" * (-len(payload) % 4)))
    except (IndexError, ValueError, orjson.JSONDecodeError):
        return {}
    return claims if isinstance(claims, dict) else {}


class LinkLost(Exception):
    """The connection a request was sent on closed before its answer came."""


class Pending:
    __slots__ = ("done", "error", "lost", "on_reply", "result")

    def __init__(self, on_reply: Callable[[Link, Any], None] | None) -> None:
        self.done = trio.Event()
        self.result: Any = None
        self.error: OrchestraError | None = None
        self.lost = False
        self.on_reply = on_reply


class Link:
    """One WebSocket connection: its requests awaiting answers and its subscriptions' ids."""

    def __init__(self, ws: trio_websocket.WebSocketConnection, max_bytes: int) -> None:
        self.ws = ws
        self.max_bytes = max_bytes
        self.pending: dict[int, Pending] = {}
        #: server subscription id -> the client's subscription; None: retired (its pushes
        #: still in flight are dropped, never routed to another subscription)
        self.subs: dict[str, EventSink | None] = {}
        #: the "*" subscription on this link, which takes pushes of projects attached later
        self.global_sub: EventSink | None = None
        self.closed = trio.Event()
        self.close_code: int | None = None
        self.close_reason: str | None = None
        self._ids = itertools.count(1)

    def retire(self, sub: EventSink) -> list[str]:
        """Stop routing pushes to ``sub`` on this connection; its server ids."""
        sids = [sid for sid, mine in self.subs.items() if mine is sub]
        for sid in sids:
            self.subs[sid] = None
        if self.global_sub is sub:
            self.global_sub = None
        return sids

    def route(self, sid: Any) -> EventSink | None:
        """The subscription a push of server id ``sid`` is for (None: drop it). Ids this
        connection was not told of belong to its "*" subscription (projects started later)."""
        if sid in self.subs:
            return self.subs[sid]
        return self.global_sub

    def lose(self, code: int | None = None, reason: str | None = None) -> None:
        if self.closed.is_set():
            return
        self.close_code, self.close_reason = code, reason
        self.closed.set()
        for slot in self.pending.values():
            slot.lost = True
            slot.done.set()

    async def request(
        self, fields: dict[str, Any], on_reply: Callable[[Link, Any], None] | None = None
    ) -> Any:
        """Send one request and wait for its answer: the result, or the error raised.
        ``on_reply`` runs in the reader, before any later frame is handled."""
        if self.closed.is_set():
            raise LinkLost
        rid = next(self._ids)
        frame = orjson.dumps({"id": rid, **fields})
        if len(frame) > self.max_bytes:
            raise TooLarge({"error": "payload_too_large", "code": "REQ_002", "limit": self.max_bytes,
                            "message": f"a request of {len(frame)} bytes is over the limit of {self.max_bytes}"})
        slot = Pending(on_reply)
        self.pending[rid] = slot
        try:
            try:
                await self.ws.send_message(frame.decode())
            except (trio_websocket.ConnectionClosed, trio.BrokenResourceError, trio.ClosedResourceError):
                raise LinkLost from None
            await slot.done.wait()
        finally:
            self.pending.pop(rid, None)
        if slot.lost:
            raise LinkLost
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
                try:
                    slot.on_reply(self, slot.result)
                except (KeyError, TypeError, AttributeError) as exc:  # not the answer's shape
                    slot.error = OrchestraError({"error": "invalid_answer", "code": "",
                                                 "message": f"unexpected answer: {exc!r:.200}"})
        else:
            slot.error = error_from_body(msg.get("error"))
        slot.done.set()
