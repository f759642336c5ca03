"""The SDK for plain (blocking) scripts: the trio client run on a thread of its own.

::

    with orchestra.client.connect_sync(os.environ["ORCHESTRA_URL"], os.environ["ORCHESTRA_TOKEN"]) as c:
        c.store_result("ISS-7", {"status": "success"})
        for event in c.subscribe(["agent_completed"]):
            ...

Same methods, same arguments, same exceptions and the same reconnect and resume guarantees
as :class:`~orchestra.transport.client.Client`; each call blocks until its answer. A call may
be bounded with ``timeout`` (seconds; ``TimeoutError`` past it), per client or per call.
Calls may come from several threads at once.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable, Iterator
from typing import Any

import trio

from .client import Client, ClientConfig, Event, Subscription, connect

__all__ = ["SyncClient", "SyncSubscription", "connect_sync"]


class SyncSubscription:
    """A subscription as a blocking iterator of events (see :class:`Subscription`)."""

    def __init__(self, owner: SyncClient, sub: Subscription) -> None:
        self._owner = owner
        self.subscription = sub

    def __iter__(self) -> Iterator[Event]:
        return self

    def __next__(self) -> Event:
        return self.next()

    def next(self, timeout: float | None = None) -> Event:
        """The next event; ``timeout`` seconds at most (``TimeoutError``)."""
        try:
            return self._owner._run(self.subscription.__anext__, timeout=timeout)  # type: ignore[no-any-return]
        except StopAsyncIteration:
            raise StopIteration from None

    def cursor(self) -> str | dict[str, str] | None:
        return self.subscription.cursor()

    def unsubscribe(self) -> None:
        self._owner._run(self.subscription.unsubscribe)

    def __enter__(self) -> SyncSubscription:
        return self

    def __exit__(self, *exc: object) -> None:
        self.unsubscribe()


class SyncClient:
    """A :class:`Client` driven from ordinary threads. Made by :func:`connect_sync`; call
    :meth:`close` (or use ``with``) to end it."""

    def __init__(self, url: str, token: str, *, config: ClientConfig | None = None,
                 timeout: float | None = None) -> None:
        self.timeout = timeout
        self._client: Client | None = None
        self._token: trio.lowlevel.TrioToken | None = None
        self._stop: trio.Event | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None
        self._thread = threading.Thread(
            target=trio.run, args=(self._main, url, token, config), name="orchestra-client", daemon=True
        )
        self._thread.start()
        self._started.wait()
        if self._error is not None:
            self._thread.join()
            raise self._error

    async def _main(self, url: str, token: str, config: ClientConfig | None) -> None:
        try:
            async with connect(url, token, config=config) as client:
                self._client = client
                self._token = trio.lowlevel.current_trio_token()
                self._stop = trio.Event()
                self._started.set()
                await self._stop.wait()
        except BaseException as exc:  # handed to the thread that called connect_sync
            if not self._started.is_set():
                self._error = exc
                return
            raise
        finally:
            self._started.set()

    def _run(self, fn: Callable[..., Any], *args: Any, timeout: float | None = None, **kwargs: Any) -> Any:
        if self._token is None or not self._thread.is_alive():
            raise trio.ClosedResourceError("the client is closed")
        limit = timeout if timeout is not None else self.timeout

        async def call() -> Any:
            if limit is None:
                return await fn(*args, **kwargs)
            try:
                with trio.fail_after(limit):
                    return await fn(*args, **kwargs)
            except trio.TooSlowError:
                raise TimeoutError(f"no answer within {limit:g} s") from None

        return trio.from_thread.run(call, trio_token=self._token)

    def close(self) -> None:
        """Close the connection and end the client's thread (subscriptions end)."""
        if self._token is not None and self._thread.is_alive() and self._stop is not None:
            try:
                trio.from_thread.run_sync(self._stop.set, trio_token=self._token)
            except trio.RunFinishedError:
                pass
        self._thread.join()

    def __enter__(self) -> SyncClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def client(self) -> Client:
        """The trio client underneath (its ``token``, ``claims``, ``connections``)."""
        assert self._client is not None
        return self._client

    # -- the operations (see Client for each) --

    def ping(self, *, timeout: float | None = None) -> dict[str, Any]:
        return self._run(self.client.ping, timeout=timeout)  # type: ignore[no-any-return]

    def status(self, *, timeout: float | None = None) -> dict[str, Any]:
        return self._run(self.client.status, timeout=timeout)  # type: ignore[no-any-return]

    def context_get(self, issue_id: str, *, timeout: float | None = None, **kw: Any) -> dict[str, Any]:
        return self._run(self.client.context_get, issue_id, timeout=timeout, **kw)  # type: ignore[no-any-return]

    def clear_context_cache(self, issue_id: str, *, timeout: float | None = None, **kw: Any) -> dict[str, Any]:
        return self._run(self.client.clear_context_cache, issue_id, timeout=timeout, **kw)  # type: ignore[no-any-return]

    def store_result(self, issue_id: str, result: dict[str, Any], *, timeout: float | None = None,
                     **kw: Any) -> dict[str, Any]:
        return self._run(self.client.store_result, issue_id, result, timeout=timeout, **kw)  # type: ignore[no-any-return]

    def store_results(self, bodies: list[dict[str, Any]], *, timeout: float | None = None,
                      **kw: Any) -> dict[str, Any]:
        return self._run(self.client.store_results, bodies, timeout=timeout, **kw)  # type: ignore[no-any-return]

    def result_body(self, issue_id: str, result: dict[str, Any], **kw: Any) -> dict[str, Any]:
        return self.client.result_body(issue_id, result, **kw)

    def get_result(self, result_id: str, *, timeout: float | None = None) -> dict[str, Any]:
        return self._run(self.client.get_result, result_id, timeout=timeout)  # type: ignore[no-any-return]

    def query_results(self, *, timeout: float | None = None, **kw: Any) -> dict[str, Any]:
        return self._run(self.client.query_results, timeout=timeout, **kw)  # type: ignore[no-any-return]

    def publish(self, event_type: str, data: dict[str, Any] | None = None, *,
                timeout: float | None = None, **kw: Any) -> dict[str, Any]:
        return self._run(self.client.publish, event_type, data, timeout=timeout, **kw)  # type: ignore[no-any-return]

    def wait(self, event_type: str, *, timeout: float = 30.0, **kw: Any) -> dict[str, Any]:
        # the call's own bound leaves the server its whole wait
        return self._run(functools.partial(self.client.wait, event_type, timeout=timeout, **kw))  # type: ignore[no-any-return]

    def subscribe(self, event_types: list[str] | str = "*", *, timeout: float | None = None,
                  **kw: Any) -> SyncSubscription:
        sub = self._run(self.client.subscribe, event_types, timeout=timeout, **kw)
        return SyncSubscription(self, sub)

    def unsubscribe(self, subscription: SyncSubscription) -> None:
        subscription.unsubscribe()

    def refresh(self, token: str | None = None) -> dict[str, Any]:
        return self._run(self.client.refresh, token)  # type: ignore[no-any-return]

    def spawn(self, agent_type: str, issue_id: str, *, timeout: float | None = None, **kw: Any) -> dict[str, Any]:
        return self._run(self.client.spawn, agent_type, issue_id, timeout=timeout, **kw)  # type: ignore[no-any-return]

    def agent_status(self, agent_id: str, *, timeout: float | None = None) -> dict[str, Any]:
        return self._run(self.client.agent_status, agent_id, timeout=timeout)  # type: ignore[no-any-return]

    def list_agents(self, *, timeout: float | None = None, **kw: Any) -> dict[str, Any]:
        return self._run(self.client.list_agents, timeout=timeout, **kw)  # type: ignore[no-any-return]

    def agent_logs(self, agent_id: str, *, timeout: float | None = None, **kw: Any) -> dict[str, Any]:
        return self._run(self.client.agent_logs, agent_id, timeout=timeout, **kw)  # type: ignore[no-any-return]

    def stop_agent(self, agent_id: str, *, timeout: float | None = None, **kw: Any) -> dict[str, Any]:
        return self._run(self.client.stop_agent, agent_id, timeout=timeout, **kw)  # type: ignore[no-any-return]


def connect_sync(url: str, token: str, *, config: ClientConfig | None = None,
                 timeout: float | None = None) -> SyncClient:
    """A connected :class:`SyncClient` (raises what :func:`connect` raises)."""
    return SyncClient(url, token, config=config, timeout=timeout)
