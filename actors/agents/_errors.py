"""The answers of the agents' actors, in the families of ``actors/errors.py``."""

from __future__ import annotations

from ..errors import Conflict, LimitExceeded

__all__ = ["AgentCapReached", "NotSpawnable"]


class NotSpawnable(Conflict):
    """The agent type's profile has no ``command``: it cannot be spawned (409 ``AGENT_001``)."""

    def __init__(self, agent_type: str) -> None:
        super().__init__(
            f"agent type '{agent_type}' has no command configured; add one with --profiles",
            agent_type=agent_type,
        )
        self.agent_type = agent_type


class AgentCapReached(LimitExceeded):
    """A spawn over one of the governor's caps (429). ``cap`` names it: ``project`` (agents
    running in the project), ``type`` (of this agent type in the project, the profile's
    ``max_running``) or ``depth`` (an agent spawned by a spawned agent ...); ``bound`` is
    ``agents.<cap>``."""

    def __init__(self, cap: str, limit: int, message: str) -> None:
        super().__init__(f"agents.{cap}", limit, message, cap=cap, retry_after=1.0 if cap != "depth" else None)
        self.cap = cap
