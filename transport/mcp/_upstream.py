"""The one SDK client of an ``orchestra mcp`` process (no ``mcp`` import here)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from ..client import Client, ClientConfig, connect
from ..client_errors import ConnectionFailed, OrchestraError, Unauthorized

__all__ = ["RECONNECT_TIMEOUT", "Upstream"]

log = logging.getLogger("orchestra.mcp")

#: Seconds without a connection to the Orchestra server before a call fails with
#: ``CONNECTION_FAILED`` (the next call tries again); ``--connect-timeout``.
RECONNECT_TIMEOUT = 15.0


class Upstream:
    """The one SDK client of this MCP server, held by a task of ``nursery`` until
    :meth:`close`, or until an error that is final for it (then the next call opens a new one).

    :meth:`warm_up` opens it when the MCP server starts, so that the SDK renews the token
    while it is connected: a spawned agent's token lives ``token_ttl`` seconds (15 minutes by
    default), and its model may make its first call later than that. A new client uses the
    newest token the last one had. Calls waiting while an attempt to connect fails share its
    error instead of each waiting out an attempt of its own.
    """

    def __init__(self, nursery: trio.Nursery, url: str, token: str, config: ClientConfig | None = None) -> None:
        self._nursery = nursery
        self.url = url
        self.token = token
        self.config = config or ClientConfig(reconnect_timeout=RECONNECT_TIMEOUT)
        self._lock = trio.Lock()
        self._client: Client | None = None
        self._release: trio.Event | None = None
        self._attempts_ended = 0
        self._failure: OrchestraError | None = None

    async def client(self) -> Client:
        ended = self._attempts_ended
        async with self._lock:
            if self._client is None:
                if self._attempts_ended != ended and self._failure is not None:
                    raise self._failure  # the attempt this call waited for has just failed
                try:
                    self._client, self._release = await self._nursery.start(self._hold)
                    self._failure = None
                except OrchestraError as exc:
                    self._failure = exc
                    raise
                finally:
                    self._attempts_ended += 1
            return self._client

    async def warm_up(self) -> None:
        try:
            await self.client()
        except OrchestraError as exc:  # each call reports it as its own tool error
            log.warning("no connection to %s yet: %s", self.url, exc)

    async def call(self, method: Callable[[Client], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
        """``method`` on the client; an error after which this client cannot serve (a refused
        token, a connection given up) drops it, so the next call connects again."""
        client = await self.client()
        try:
            return await method(client)
        except trio.ClosedResourceError:  # another call dropped this client meanwhile
            raise ConnectionFailed("the connection to the server was closed; call again") from None
        except (Unauthorized, ConnectionFailed) as exc:
            self._drop(client)
            raise exc from None
        except OrchestraError as exc:
            if "close_code" in exc.body:  # 4003: final for this connection
                self._drop(client)
            raise

    def _drop(self, client: Client) -> None:
        if self._client is client and self._release is not None:
            self._release.set()
            self._client = self._release = None

    def close(self) -> None:
        if self._release is not None:
            self._release.set()
        self._client = self._release = None

    async def _hold(self, *, task_status: trio.TaskStatus[tuple[Client, trio.Event]] = trio.TASK_STATUS_IGNORED) -> None:
        release = trio.Event()
        async with connect(self.url, self.token, config=self.config) as client:
            task_status.started((client, release))
            try:
                await release.wait()
            finally:
                self.token = client.token  # refreshed while it was connected
