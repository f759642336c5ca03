"""The agents' subtree, and the few calls the request edge makes::

    agents              Supervisor   one_for_one
    ├── agent-processes Supervisor   dynamic: one AgentActor per spawned agent (transient)
    └── agent-registry  AgentRegistry   spawns, governor, idempotency, lists, crash recovery

The registry is declared last, so it stops first: it ends every process group at once, then
the agents (already without processes) record themselves stopped.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from ..profiles import Profiles
from ..runtime import ActorRef, ChildSpec, Supervisor
from ._agent import Touch
from ._logs import tail_lines
from ._registry import (
    AgentRegistry,
    AgentStatus,
    ListAgentRecords,
    LogPath,
    Spawn,
    StopAgent,
    agent_child_id,
)
from ._spec import AgentHooks, AgentsConfig

__all__ = ["AgentSupervisor"]


@dataclass
class AgentSupervisor:
    """The agents' subtree, and the few calls the request edge makes (one per operation).

    ``hooks`` may be set after construction and before it runs (without them, spawns answer
    Unavailable; recovery after a crash still ends leftover agents). Mount ``self.tree`` (a
    :class:`Supervisor`, so its crashes and restarts count in the root's totals) in the root
    supervisor after the broker, so that it stops before the projects and the store, which
    its last records and events need: ``ChildSpec("agents", lambda: agents.tree)``.
    """

    config: AgentsConfig
    profiles: Profiles
    store: ActorRef
    hooks: AgentHooks | None = None
    mailbox_size: int = 4096
    max_restarts: int = 1000
    restart_period: float = 60.0
    call_timeout: float = 30.0
    ref: ActorRef = field(init=False)
    children: Supervisor = field(init=False)
    tree: Supervisor = field(init=False)

    def __post_init__(self) -> None:
        self.ref = ActorRef("agent-registry", mailbox_size=self.mailbox_size)
        self.children = Supervisor("agent-processes", max_restarts=self.max_restarts,
                                   period=self.restart_period)
        starts = itertools.count()

        def registry() -> AgentRegistry:
            return AgentRegistry(self.config, self.profiles, self.store, self.children, self.hooks,
                                 recover=next(starts) == 0, mailbox_size=self.mailbox_size)

        self.tree = Supervisor("agents", [
            ChildSpec("agent-processes", lambda: self.children),
            ChildSpec.actor("agent-registry", self.ref, registry),
        ], max_restarts=self.max_restarts, period=self.restart_period,
            # the registry's stop ends every group: SIGTERM, the grace, SIGKILL, reaping
            stop_timeout=self.config.shutdown_grace + 5.0)

    async def run(self, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        await self.tree.run(task_status=task_status)

    # -- the request edge's calls --

    async def spawn(self, msg: Spawn) -> dict[str, Any]:
        """The spawn answer (``agent_id``, ``spawned``, ``process_id``, ``context_injected``,
        ``jwt_token``, ``webhook_url``, ``state``). Raises NotSpawnable (409 AGENT_001),
        AgentCapReached (429, names the cap), IdempotencyConflict, Unavailable/StoreError."""
        return await self.ref.call(msg, timeout=self.call_timeout)  # type: ignore[no-any-return]

    async def status(self, project_id: str, agent_id: str) -> dict[str, Any]:
        return await self.ref.call(AgentStatus(project_id, agent_id), timeout=self.call_timeout)  # type: ignore[no-any-return]

    async def list(self, project_id: str, *, state: str | None = None, agent_type: str | None = None,
                   issue_id: str | None = None) -> list[dict[str, Any]]:
        return await self.ref.call(  # type: ignore[no-any-return]
            ListAgentRecords(project_id, state, agent_type, issue_id), timeout=self.call_timeout
        )

    async def stop(self, project_id: str, agent_id: str, grace: float | None = None) -> dict[str, Any]:
        """The record once the agent has ended (``stopped``, or how it had ended before)."""
        timeout = self.call_timeout + (grace or 0.0) + 600.0 * (grace is None)
        return await self.ref.call(StopAgent(project_id, agent_id, grace), timeout=timeout)  # type: ignore[no-any-return]

    async def logs(self, project_id: str, agent_id: str, tail: int = 100) -> dict[str, Any]:
        """``{"agent_id", "lines", "log_path"}``: the last ``tail`` lines (at most 10,000)."""
        path = await self.ref.call(LogPath(project_id, agent_id), timeout=self.call_timeout)
        lines = await trio.to_thread.run_sync(tail_lines, Path(path), tail)
        return {"agent_id": agent_id, "lines": lines, "log_path": path}

    def running(self, project_id: str | None = None) -> int:
        """Live agents (starting, running, stalled) of the project, or of the server; 0 while
        the registry restarts. Never waits (for ``/status``)."""
        governor = self.ref.view
        if governor is None:
            return 0
        return len(governor) if project_id is None else governor.running(project_id)

    def is_live(self, agent_id: str) -> bool:
        """Whether the spawned agent ``agent_id`` has an actor (it has not ended, or is
        restarting); a dict lookup, never waits."""
        return self.children.lookup(agent_child_id(agent_id)) is not None

    def touch(self, sub: str) -> None:
        """The token ``sub`` made a request: if it is a spawned agent, it is alive. A dict
        lookup for any other ``sub``; never waits (a full mailbox drops the touch)."""
        ref = self.children.lookup(agent_child_id(sub))
        if ref is not None:
            ref.try_cast(Touch())


