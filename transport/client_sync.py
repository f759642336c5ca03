"""The SDK for plain (blocking) scripts: the trio client run on a thread of its own.

::

    with orchestra.client.connect_sync(os.environ["ORCHESTRA_URL"], os.environ["ORCHESTRA_TOKEN"]) as c:
        c.store_result("ISS-7", {"status": "success"})
        for event in c.subscribe(["agent_completed"]):
            ...

Same methods with the same signatures, same exceptions and the same reconnect and resume
guarantees as :class:`~orchestra.transport.client.Client`; each call blocks until its answer.
The client's ``timeout`` (seconds) bounds every call but ``wait`` (``TimeoutError`` past it);
``SyncSubscription.next(timeout=...)`` bounds one read. Calls may come from several threads.
"""

from __future__ import annotations

import functools
import math
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Concatenate, ParamSpec, TypeVar

import trio

from .client import Client, ClientConfig, Event, Subscription, connect

__all__ = ["SyncClient", "SyncSubscription", "connect_sync"]


P = ParamSpec("P")
R = TypeVar("R")


def _blocking(method: Callable[Concatenate[Client, P], Awaitable[R]]) -> Callable[Concatenate[SyncClient, P], R]:
    """``method`` of :class:`Client` as a blocking method of :class:`SyncClient`."""

    def call(self: SyncClient, /, *args: P.args, **kwargs: P.kwargs) -> R:
        return self._run(functools.partial(method, self.client, *args, **kwargs))  # type: ignore[no-any-return]

    functools.update_wrapper(call, method)  # help() and inspect show the method's signature
    call.__qualname__ = f"SyncClient.{method.__name__}"
    return call


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
            if limit is None or limit == math.inf:
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

    # -- the operations: Client's, with the same signatures, blocking --

    ping = _blocking(Client.ping)
    status = _blocking(Client.status)
    context_get = _blocking(Client.context_get)
    clear_context_cache = _blocking(Client.clear_context_cache)
    store_result = _blocking(Client.store_result)
    store_results = _blocking(Client.store_results)
    get_result = _blocking(Client.get_result)
    query_results = _blocking(Client.query_results)
    publish = _blocking(Client.publish)
    refresh = _blocking(Client.refresh)
    spawn = _blocking(Client.spawn)
    agent_status = _blocking(Client.agent_status)
    list_agents = _blocking(Client.list_agents)
    agent_logs = _blocking(Client.agent_logs)
    stop_agent = _blocking(Client.stop_agent)

    def result_body(self, issue_id: str, result: dict[str, Any], **kw: Any) -> dict[str, Any]:
        return self.client.result_body(issue_id, result, **kw)

    def wait(
        self, event_type: str, *, timeout: float = 30.0, filter: str | None = None,
        since: str | None = None, limit: int | None = None, project_id: str | None = None,
    ) -> dict[str, Any]:
        """As :meth:`Client.wait`; not bounded by the client's ``timeout`` (the server's wait
        is the bound)."""
        call = functools.partial(self.client.wait, event_type, timeout=timeout, filter=filter,
                                 since=since, limit=limit, project_id=project_id)
        return self._run(call, timeout=math.inf)  # type: ignore[no-any-return]

    def subscribe(
        self, event_types: list[str] | str = "*", *, topics: list[str] | None = None,
        filter: str | None = None, since: str | dict[str, str] | None = None,
        project_id: str | None = None,
    ) -> SyncSubscription:
        """As :meth:`Client.subscribe`; the events come from a blocking iterator."""
        call = functools.partial(self.client.subscribe, event_types, topics=topics, filter=filter,
                                 since=since, project_id=project_id)
        return SyncSubscription(self, self._run(call))

    def unsubscribe(self, subscription: SyncSubscription) -> None:
        subscription.unsubscribe()


def connect_sync(url: str, token: str, *, config: ClientConfig | None = None,
                 timeout: float | None = None) -> SyncClient:
    """A connected :class:`SyncClient` (raises what :func:`connect` raises)."""
    return SyncClient(url, token, config=config, timeout=timeout)
