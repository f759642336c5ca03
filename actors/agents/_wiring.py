"""The hooks of the agents' actors as the server gives them: events through the project
actor, the context through the project's context actor."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import trio

from ..context_actor import ContextGet
from ..project import SERVER_PUBLISHER, Publish
from ..runtime import ActorRef
from ._spec import AgentHooks, AgentSpec

__all__ = ["server_hooks"]

#: How long the server's own ``agent_*`` events are kept (as ``agent_completed``'s).
EVENT_TTL_SECONDS = 86_400


def server_hooks(
    *,
    url: Callable[[], str],
    mint_token: Callable[[AgentSpec], str],
    project: Callable[[str], Awaitable[ActorRef]],
    context: Callable[[str], Awaitable[ActorRef]],
    context_bytes: int = 262_144,
    timeout: float = 30.0,
) -> AgentHooks:
    """Hooks over the actor system: ``project(id)`` and ``context(id)`` give (starting if need
    be) a project's actor and its context actor (``ActorSystem.project`` / ``.context``)."""

    async def write_context(spec: AgentSpec, path: Path) -> None:
        ref = await context(spec.project_id)
        body: bytes = await ref.call(
            ContextGet(spec.issue_id, spec.agent_type, spec.task or "", spec.context_bytes or context_bytes),
            timeout=timeout,
        )
        await trio.Path(path).write_bytes(body)

    async def publish(project_id: str, event_type: str, data: dict[str, Any],
                      traceparent: str | None = None) -> None:
        ref = await project(project_id)
        body = {"topic": "coordination", "ttl_seconds": EVENT_TTL_SECONDS,
                "correlation_id": data.get("issue_id"), "data": data}
        await ref.call(Publish(event_type, body, SERVER_PUBLISHER, data.get("agent_type"), None, traceparent),
                       timeout=timeout)

    return AgentHooks(url=url, mint_token=mint_token, write_context=write_context, publish=publish)
