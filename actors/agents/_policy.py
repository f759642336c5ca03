"""Pure pieces of agent supervision: the restart policy and the governor's caps.

No clock, no processes: time and randomness are arguments, so both are tested directly.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from ..profiles import AgentProfile
from ._errors import AgentCapReached

__all__ = ["Caps", "Governor", "RestartPolicy"]


@dataclass
class RestartPolicy:
    """When to restart an agent whose process ended.

    ``never``: no restart. ``on-failure``: a failed run (non-zero exit, a signal, a start that
    failed) is restarted after ``backoff * 2**n`` seconds (``n`` the restarts already within
    ``period``), capped at ``backoff_max`` and scaled by a jitter factor in [0.5, 1.0]; the
    ``max_restarts + 1``-th failure within ``period`` seconds is final. A clean exit (0) is
    never restarted.
    """

    policy: str = "never"
    max_restarts: int = 3
    period: float = 60.0
    backoff: float = 0.5
    backoff_max: float = 30.0
    history: deque[float] = field(default_factory=deque)

    @classmethod
    def of(cls, profile: AgentProfile) -> RestartPolicy:
        return cls(profile.restart, profile.max_restarts, profile.restart_period,
                   profile.restart_backoff, profile.restart_backoff_max)

    def after_failure(self, now: float, jitter: float) -> float | None:
        """Seconds to wait before the restart of a failed run, or None: give up.

        ``jitter`` is a number in [0, 1] (random in production). Records the restart.
        """
        if self.policy != "on-failure":
            return None
        while self.history and self.history[0] <= now - self.period:
            self.history.popleft()
        if len(self.history) >= self.max_restarts:
            return None
        delay: float = min(self.backoff_max, self.backoff * 2.0 ** len(self.history))
        self.history.append(now)
        return delay * (0.5 + 0.5 * min(1.0, max(0.0, jitter)))


@dataclass(frozen=True)
class Caps:
    """The governor's server-wide caps (docs/protocol.md "Bounds"); per type: the profile."""

    #: agents running at once in one project (starting, running, stalled, or waiting to restart)
    per_project: int = 64
    #: spawn depth: 1 for an agent spawned by a token that is not a spawned agent's, 2 for one
    #: spawned by such an agent, ...
    max_depth: int = 3


class Governor:
    """Counts the live agents of each project and type; admits a spawn or names the cap.

    Owned by one actor (the registry); a slot is held from admission until the agent ends.
    """

    def __init__(self, caps: Caps) -> None:
        self.caps = caps
        self._agents: dict[str, tuple[str, str]] = {}
        self._per_project: dict[str, int] = {}
        self._per_type: dict[tuple[str, str], int] = {}

    def __len__(self) -> int:
        return len(self._agents)

    def running(self, project_id: str, agent_type: str | None = None) -> int:
        if agent_type is None:
            return self._per_project.get(project_id, 0)
        return self._per_type.get((project_id, agent_type), 0)

    def check(self, project_id: str, profile: AgentProfile, depth: int) -> None:
        """Raise :class:`AgentCapReached` if a spawn of ``profile``'s type at ``depth`` in
        ``project_id`` passes a cap; the depth is checked first, then the type, then the project."""
        if depth > self.caps.max_depth:
            raise AgentCapReached(
                "depth", self.caps.max_depth,
                f"spawn depth {depth} is over the cap of {self.caps.max_depth} "
                "(an agent spawned by a spawned agent ...)",
            )
        cap = profile.max_running
        if cap is not None and self.running(project_id, profile.agent_type) >= cap:
            raise AgentCapReached(
                "type", cap,
                f"{cap} agents of type '{profile.agent_type}' are already running in this "
                "project (the profile's max_running); retry when one has ended",
            )
        if self.running(project_id) >= self.caps.per_project:
            raise AgentCapReached(
                "project", self.caps.per_project,
                f"{self.caps.per_project} agents are already running in this project; "
                "retry when one has ended",
            )

    def add(self, agent_id: str, project_id: str, agent_type: str) -> None:
        if agent_id in self._agents:
            return
        self._agents[agent_id] = (project_id, agent_type)
        self._per_project[project_id] = self._per_project.get(project_id, 0) + 1
        key = (project_id, agent_type)
        self._per_type[key] = self._per_type.get(key, 0) + 1

    def remove(self, agent_id: str) -> None:
        found = self._agents.pop(agent_id, None)
        if found is None:
            return
        project_id, _ = found
        self._per_project[project_id] -= 1
        if not self._per_project[project_id]:
            del self._per_project[project_id]
        self._per_type[found] -= 1
        if not self._per_type[found]:
            del self._per_type[found]
