"""The MCP server of ``orchestra mcp``: one tool per operation of the protocol, resources, and
notifications of events (the ``mcp`` SDK's ``MCPServer`` on trio)."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Annotated, Any

import anyio
import orjson
import trio
from mcp.server.context import CallNext, HandlerResult, ServerRequestContext
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ResourceError, ResourceNotFoundError
from mcp.server.subscriptions import InMemorySubscriptionBus, ResourceUpdated
from mcp.shared.exceptions import MCPError
from mcp_types import (
    INTERNAL_ERROR,
    INVALID_PARAMS,
    CallToolResult,
    SubscriptionFilter,
    TextContent,
    ToolAnnotations,
)
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import Field

from ..client import Client, ClientConfig
from ..client_errors import EventsLost, NotFound, OrchestraError, RateLimited, Unavailable
from ._upstream import RECONNECT_TIMEOUT, Upstream

__all__ = ["EventWatch", "build_server", "serve", "tool_error"]

log = logging.getLogger("orchestra.mcp")

#: Bounds of a wait (the protocol's: 0 to 300 s).
MAX_WAIT_SECONDS = 300.0
#: Event types one ``subscriptions/listen`` stream may watch (more URIs are not watched).
MAX_WATCHED_TYPES = 64
#: Events one read of an ``orchestra://events/{event_type}`` resource returns at most.
EVENTS_PER_READ = 100
EVENTS_URI = "orchestra://events/"
#: The default bound of a ``get_context`` answer: clients bound one tool result (Claude Code
#: to 25,000 tokens by default), and 64 KiB of JSON stays well within that.
CONTEXT_BYTES = 65_536


def tool_error(exc: OrchestraError) -> CallToolResult:
    """The tool error for an error answer: its code and message first (what a model reads),
    then the whole error object, also as structured content."""
    text = f"{exc.code}: {exc.message}" if exc.code else exc.message
    if isinstance(exc, RateLimited | Unavailable) and exc.retry_after is not None:
        text += f" (retry after {exc.retry_after:g} s)"
    return CallToolResult(
        content=[TextContent(type="text", text=text + "\n" + orjson.dumps(exc.body).decode())],
        structured_content={"error": exc.body},
        is_error=True,
    )


def _invalid(field: str, message: str) -> CallToolResult:
    return tool_error(OrchestraError({
        "error": "invalid_request", "code": "REQ_001", "field": field, "message": message}))


def _answer(result: dict[str, Any]) -> CallToolResult:
    return CallToolResult(
        content=[TextContent(type="text", text=orjson.dumps(result).decode())],
        structured_content=result,
    )


class EventWatch:
    """Notifications of events, as ``notifications/resources/updated`` for the resource
    ``orchestra://events/{event_type}``; reading that resource returns the events themselves.

    Two ways to ask, one per era of MCP:

    - 2026-07-28: a ``subscriptions/listen`` stream naming such URIs among its resource
      subscriptions; the watches end with the stream.
    - the ``initialize`` handshake: ``resources/subscribe`` (advertised in the capabilities)
      until ``resources/unsubscribe`` or the end of the session. This SDK's ``MCPServer``
      does not serve it, so this middleware does; any URI may be subscribed, only events
      URIs are ever notified.

    Each watched type holds an SDK subscription to that event type. At most
    ``MAX_WATCHED_TYPES`` are watched per listen stream, and as many by ``resources/subscribe``
    (one more is refused). Notifications are level triggers: one may stand for several events,
    and one missed (the watch was not yet subscribed) loses nothing, since a read returns every
    event not yet read.
    """

    def __init__(self, upstream: Upstream, bus: InMemorySubscriptionBus, nursery: trio.Nursery) -> None:
        self.upstream = upstream
        self.bus = bus
        self._nursery = nursery
        #: watches asked for by ``resources/subscribe``: URI -> its scope
        self._subscribed: dict[str, trio.CancelScope] = {}

    async def __call__(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        if ctx.method == "subscriptions/listen":
            return await self._listen(ctx, call_next)
        if ctx.method == "initialize":
            return self._advertise(await call_next(ctx))
        if ctx.method in ("resources/subscribe", "resources/unsubscribe") and \
                ctx.protocol_version not in MODERN_PROTOCOL_VERSIONS:
            uri = (ctx.params or {}).get("uri")
            if not isinstance(uri, str) or not uri:
                raise MCPError(INVALID_PARAMS, "'uri' must be a non-empty string")
            if ctx.method == "resources/subscribe":
                self._subscribe(uri, ctx.session)
            elif (scope := self._subscribed.pop(uri, None)) is not None:
                scope.cancel()
            return {}
        return await call_next(ctx)

    async def _listen(self, ctx: ServerRequestContext[Any, Any], call_next: CallNext) -> HandlerResult:
        uris = self._event_uris(ctx)
        if not uris:
            return await call_next(ctx)
        async with trio.open_nursery() as nursery:
            for uri in uris[:MAX_WATCHED_TYPES]:
                nursery.start_soon(self._watch, uri, partial(self.bus.publish, ResourceUpdated(uri)))
            try:
                return await call_next(ctx)
            finally:
                nursery.cancel_scope.cancel()

    @staticmethod
    def _advertise(result: HandlerResult) -> HandlerResult:
        """The handshake's answer, saying that ``resources/subscribe`` is served."""
        capabilities = result.get("capabilities") if isinstance(result, dict) else None
        resources = capabilities.get("resources") if isinstance(capabilities, dict) else None
        if isinstance(resources, dict):
            resources["subscribe"] = True
        return result

    def _subscribe(self, uri: str, session: Any) -> None:
        if uri in self._subscribed or not _is_events_uri(uri):
            return
        if len(self._subscribed) >= MAX_WATCHED_TYPES:
            raise MCPError(INTERNAL_ERROR, f"at most {MAX_WATCHED_TYPES} event types are watched at once; "
                                           "unsubscribe one first")
        scope = self._subscribed[uri] = trio.CancelScope()

        async def notify() -> None:
            await session.send_resource_updated(uri)

        async def watch() -> None:
            with scope:
                try:
                    await self._watch(uri, notify)
                except (anyio.ClosedResourceError, anyio.BrokenResourceError):
                    pass  # the session has ended
            if self._subscribed.get(uri) is scope:
                del self._subscribed[uri]

        self._nursery.start_soon(watch)

    @staticmethod
    def _event_uris(ctx: ServerRequestContext[Any, Any]) -> list[str]:
        raw = (ctx.params or {}).get("notifications")
        try:
            wanted = SubscriptionFilter.model_validate(raw or {}).resource_subscriptions or []
        except ValueError:
            return []  # the listen handler refuses it
        return [uri for uri in dict.fromkeys(wanted) if _is_events_uri(uri)]

    async def _watch(self, uri: str, notify: Callable[[], Awaitable[None]]) -> None:
        event_type = uri.removeprefix(EVENTS_URI)
        try:
            client = await self.upstream.client()
            async with await client.subscribe([event_type]) as subscription:
                while True:
                    try:
                        async for _event in subscription:
                            await notify()
                        return  # the subscription ended with its client
                    except EventsLost:  # trimmed events: still a change to read
                        await notify()
        except OrchestraError as exc:
            log.warning("no notifications for %s: %s", uri, exc)


def _is_events_uri(uri: str) -> bool:
    return uri.startswith(EVENTS_URI) and len(uri) > len(EVENTS_URI)


# Argument types, described for the model that calls the tools.
IssueId = Annotated[str | None, Field(
    description="The issue (work item) id, e.g. 'ISS-7'. Default: the issue this agent was "
                "spawned for (ORCHESTRA_ISSUE_ID), if any.")]
AgentType = Annotated[str | None, Field(description="An agent type, e.g. 'python-specialist'.")]
Cursor = Annotated[str | None, Field(
    description="A cursor returned by an earlier call ('next_cursor'): continue after it.")]
Limit = Annotated[int | None, Field(ge=1, le=1000, description="At most this many items (1-1000).")]

_READ = ToolAnnotations(read_only_hint=True, open_world_hint=False)
_WRITE = ToolAnnotations(read_only_hint=False, destructive_hint=False, idempotent_hint=False, open_world_hint=False)

INSTRUCTIONS = """\
Tools of Orchestra, the coordinator of a fleet of coding agents working on one project.
Start with get_context for your issue (the code base's relevant files, git state and what
earlier agents produced); when done, store_result with a status ("success", "failure",
...) and what you found or changed; publish_event tells other agents something; wait_for_events
blocks until an event arrives (keep its next_cursor and pass it back as since). Errors come
back as tool errors starting with a code: RATE_001 says when to retry, AUTH_003 means your
token lacks the permission, NOT_FOUND an unknown id."""


def build_server(upstream: Upstream, nursery: trio.Nursery, *, default_issue: str | None = None) -> MCPServer:
    """The MCP server: one tool per operation of the protocol; resources for a stored result,
    the context of an issue and the events of a type (with notifications, see EventWatch)."""
    bus = InMemorySubscriptionBus()
    app: MCPServer = MCPServer(
        "orchestra", title="Orchestra", instructions=INSTRUCTIONS,
        version=_version(), log_level="WARNING", subscriptions=bus,
        middleware=[EventWatch(upstream, bus, nursery)],
    )

    async def run(method: Callable[[Client], Awaitable[dict[str, Any]]]) -> CallToolResult:
        try:
            return _answer(await upstream.call(method))
        except OrchestraError as exc:
            return tool_error(exc)

    def issue_of(issue_id: str | None) -> str | None:
        return issue_id or default_issue

    @app.tool(annotations=_READ)
    async def get_context(
        issue_id: IssueId = None,
        task: Annotated[str | None, Field(
            description="What you are about to do, in a sentence: files that match it rank higher.")] = None,
        agent_type: Annotated[str | None, Field(
            description="Whose context (default: your own agent type).")] = None,
        max_bytes: Annotated[int, Field(
            ge=1024, le=4_194_304,
            description=f"Bound of the whole answer in bytes (default {CONTEXT_BYTES}); what does "
                        "not fit is shortened or dropped by priority and 'truncated' says so.")] = CONTEXT_BYTES,
    ) -> CallToolResult:
        """The context for working on an issue: the project's structure, its most relevant files
        with their content (ranked for the task), git branch, recent commits and uncommitted
        changes, declared dependencies, and the results earlier agents stored for this issue."""
        issue = issue_of(issue_id)
        if issue is None:
            return _invalid("issue_id", "'issue_id' is required (no ORCHESTRA_ISSUE_ID is set)")
        return await run(lambda c: c.context_get(issue, task=task, agent_type=agent_type, max_bytes=max_bytes))

    @app.tool(annotations=_WRITE)
    async def store_result(
        result: Annotated[dict[str, Any], Field(
            description="What you produced, as a JSON object with at least a string 'status' "
                        "('success', 'failure', 'partial', ...), e.g. {\"status\": \"success\", "
                        "\"summary\": \"...\", \"files_changed\": [...]}.")],
        issue_id: IssueId = None,
        idempotency_key: Annotated[str | None, Field(
            description="Any unique string: a retry with the same key is stored only once.")] = None,
    ) -> CallToolResult:
        """Store your result for an issue, durably. Returns its id, the agent types that should
        run next, and publishes an 'agent_completed' event other agents can wait for."""
        issue = issue_of(issue_id)
        if issue is None:
            return _invalid("issue_id", "'issue_id' is required (no ORCHESTRA_ISSUE_ID is set)")
        return await run(lambda c: c.store_result(issue, result, idempotency_key=idempotency_key))

    @app.tool(annotations=_READ)
    async def get_result(
        result_id: Annotated[str, Field(description="A result id, as store_result or query_results gave it.")],
    ) -> CallToolResult:
        """One stored result by its id, with who stored it and when."""
        return await run(lambda c: c.get_result(result_id))

    @app.tool(annotations=_READ)
    async def query_results(
        issue_id: Annotated[str | None, Field(description="Only results for this issue.")] = None,
        agent_type: Annotated[str | None, Field(description="Only results stored by agents of this type.")] = None,
        agent_id: Annotated[str | None, Field(description="Only results stored by this agent.")] = None,
        status: Annotated[str | None, Field(description="Only results whose status is this, e.g. 'success'.")] = None,
        since: Annotated[str | None, Field(description="Only results stored at or after this ISO 8601 time.")] = None,
        until: Annotated[str | None, Field(description="Only results stored before this ISO 8601 time.")] = None,
        q: Annotated[str | None, Field(description="Only results whose JSON contains this text (any case).")] = None,
        limit: Limit = None,
        cursor: Cursor = None,
    ) -> CallToolResult:
        """Stored results of this project, newest first, one page at a time (default 50): pass
        'next_cursor' back as 'cursor' for the next page; null when there is no more."""
        return await run(lambda c: c.query_results(
            issue_id=issue_id, agent_type=agent_type, agent_id=agent_id, status=status,
            since=since, until=until, q=q, limit=limit, cursor=cursor))

    @app.tool(annotations=_WRITE)
    async def publish_event(
        event_type: Annotated[str, Field(description="The event's type, e.g. 'review_ready'.")],
        data: Annotated[dict[str, Any] | None, Field(description="The event's payload, a JSON object.")] = None,
        topic: Annotated[str | None, Field(description="A topic subscribers may filter on.")] = None,
        correlation_id: Annotated[str | None, Field(
            description="Ties related events together (e.g. the issue id).")] = None,
        ttl_seconds: Annotated[int | None, Field(ge=1, description="How long the event is kept.")] = None,
        idempotency_key: Annotated[str | None, Field(
            description="Any unique string: a retry with the same key is published only once.")] = None,
    ) -> CallToolResult:
        """Publish an event to the other agents of this project; returns its id and cursor.
        You are its publisher."""
        return await run(lambda c: c.publish(
            event_type, data, topic=topic, correlation_id=correlation_id, ttl_seconds=ttl_seconds,
            idempotency_key=idempotency_key))

    @app.tool(annotations=_READ)
    async def wait_for_events(
        event_type: Annotated[str, Field(
            description="The event type to wait for, e.g. 'agent_completed' (the server publishes "
                        "agent_completed, agent_spawned, agent_exited, agent_failed, agent_stalled).")],
        timeout_seconds: Annotated[float, Field(
            ge=0, le=MAX_WAIT_SECONDS,
            description="Return after this many seconds if nothing arrives (0-300, default 30). "
                        "Keep it under your client's own tool timeout.")] = 30.0,
        filter: Annotated[str | None, Field(
            description="Only events that match: 'field:value' terms, comma-separated, all must "
                        "hold; fields of 'data' first, e.g. 'issue_id:ISS-7,status:success'; "
                        "also a|b, !x, globs (iss-*), numbers (>90).")] = None,
        since: Annotated[str | None, Field(
            description="The 'next_cursor' of your previous wait: return only events after it. "
                        "Without it, events you were not yet given are returned.")] = None,
        limit: Limit = None,
    ) -> CallToolResult:
        """Wait for events of one type: returns as soon as at least one matches, or after the
        timeout with none ('timeout': true). Always returns 'next_cursor': pass it as 'since' to
        the next wait, and no event published in between is missed."""
        return await run(lambda c: c.wait(
            event_type, timeout=timeout_seconds, filter=filter, since=since, limit=limit))

    @app.tool(annotations=_WRITE)
    async def spawn_agent(
        agent_type: Annotated[str, Field(description="The type of agent to start; its command comes "
                                                     "from the server's profile for that type.")],
        issue_id: IssueId = None,
        task: Annotated[str | None, Field(description="What the new agent should do.")] = None,
        environment: Annotated[dict[str, str] | None, Field(
            description="Extra environment variables for its process (ORCHESTRA_* cannot be changed).")] = None,
        idempotency_key: Annotated[str | None, Field(
            description="Any unique string: a retry with the same key starts only one agent.")] = None,
    ) -> CallToolResult:
        """Start another agent on an issue (needs the spawn_agents permission). Returns its
        agent_id and state; follow it with agent_status, agent_logs, or wait_for_events on
        'agent_exited' with filter 'agent_id:<id>'."""
        issue = issue_of(issue_id)
        if issue is None:
            return _invalid("issue_id", "'issue_id' is required (no ORCHESTRA_ISSUE_ID is set)")
        return await run(lambda c: c.spawn(
            agent_type, issue, task=task, environment=environment, idempotency_key=idempotency_key))

    @app.tool(annotations=_READ)
    async def list_agents(
        state: Annotated[str | None, Field(
            description="Only agents in this state: starting, running, stalled, exited, failed or stopped.")] = None,
        agent_type: AgentType = None,
        issue_id: Annotated[str | None, Field(description="Only agents working on this issue.")] = None,
    ) -> CallToolResult:
        """The spawned agents of this project, newest first, with their state."""
        return await run(lambda c: c.list_agents(state=state, agent_type=agent_type, issue_id=issue_id))

    @app.tool(annotations=_READ)
    async def agent_status(
        agent_id: Annotated[str, Field(description="The agent's id, as spawn_agent or list_agents gave it.")],
    ) -> CallToolResult:
        """One spawned agent: its state, process id, exit code, restarts and last activity."""
        return await run(lambda c: c.agent_status(agent_id))

    @app.tool(annotations=_READ)
    async def agent_logs(
        agent_id: Annotated[str, Field(description="The agent's id.")],
        tail: Annotated[int | None, Field(ge=0, le=10_000,
                                          description="The last this many lines (default 100).")] = None,
    ) -> CallToolResult:
        """The last lines a spawned agent wrote to its stdout and stderr."""
        return await run(lambda c: c.agent_logs(agent_id, tail=tail))

    @app.tool(annotations=ToolAnnotations(destructive_hint=True, idempotent_hint=True, open_world_hint=False))
    async def stop_agent(
        agent_id: Annotated[str, Field(description="The agent's id.")],
        grace_seconds: Annotated[float | None, Field(
            ge=0, le=600, description="Seconds between SIGTERM and SIGKILL (default: its profile's).")] = None,
    ) -> CallToolResult:
        """Stop a spawned agent (needs the spawn_agents permission); returns its record once its
        process has ended."""
        return await run(lambda c: c.stop_agent(agent_id, grace_seconds=grace_seconds))

    async def read(method: Callable[[Client], Awaitable[dict[str, Any]]]) -> str:
        try:
            return orjson.dumps(await upstream.call(method)).decode()
        except NotFound as exc:
            raise ResourceNotFoundError(f"{exc.code}: {exc.message}") from None
        except OrchestraError as exc:
            raise ResourceError(f"{exc.code}: {exc.message}") from None

    @app.resource("orchestra://results/{result_id}", name="result", mime_type="application/json",
                  description="A stored result, by its id.")
    async def result_resource(result_id: str) -> str:
        return await read(lambda c: c.get_result(result_id))

    @app.resource("orchestra://context/{issue_id}", name="context", mime_type="application/json",
                  description="The context of an issue for this agent's type (as get_context).")
    async def context_resource(issue_id: str) -> str:
        return await read(lambda c: c.context_get(issue_id, max_bytes=CONTEXT_BYTES))

    @app.resource(EVENTS_URI + "{event_type}", name="events", mime_type="application/json",
                  description="The events of a type this agent was not yet given (at most "
                              f"{EVENTS_PER_READ}, oldest first); listen to this URI to be "
                              "notified when one is published.")
    async def events_resource(event_type: str) -> str:
        return await read(lambda c: c.wait(event_type, timeout=0, limit=EVENTS_PER_READ))

    return app


def _version() -> str:
    from orchestra import __version__

    return __version__


async def serve(url: str, token: str, *, default_issue: str | None = None,
                connect_timeout: float = RECONNECT_TIMEOUT) -> None:
    """Serve MCP on stdin/stdout until stdin closes; then close the connection and return."""
    async with trio.open_nursery() as nursery:
        upstream = Upstream(nursery, url, token, ClientConfig(reconnect_timeout=connect_timeout))
        nursery.start_soon(upstream.warm_up)
        try:
            await build_server(upstream, nursery, default_issue=default_issue).run_stdio_async()
        finally:
            upstream.close()
            nursery.cancel_scope.cancel()  # a connection still being opened
