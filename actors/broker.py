"""The broker: starts project actors on demand and keeps the way to each.

Lookups of running projects do not pass through the broker's mailbox: the projects
supervisor's child table (written only by that supervisor) is read directly, so the hot path
costs a dict lookup. Only a first request for a project calls the broker, which starts it.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

from .errors import Overloaded
from .runtime import Actor, ActorRef, ChildSpec, Supervisor

__all__ = ["BrokerActor", "EnsureProject", "ProjectUnavailable", "project_child_id"]

log = logging.getLogger("orchestra")


class ProjectUnavailable(Overloaded):
    """The project's actor could not start (its state could not be loaded): 503, retry."""


def project_child_id(project_id: str) -> str:
    return f"project:{project_id}"


@dataclass(frozen=True, slots=True)
class EnsureProject:
    project_id: str


class BrokerActor(Actor):
    def __init__(
        self,
        projects: Supervisor,
        make_project: Callable[[str], Actor],
        *,
        max_projects: int = 10_000,
        mailbox_size: int = 1024,
    ) -> None:
        self.projects = projects
        self.make_project = make_project
        self.max_projects = max_projects
        self.mailbox_size = mailbox_size
        self.started = 0
        self.failed_starts = 0

    async def handle(self, msg: EnsureProject) -> ActorRef:
        """The ref of the running project, started now if needed.

        Raises :class:`Overloaded` past ``max_projects`` and :class:`ProjectUnavailable` if
        the project fails to start; the broker keeps running either way.
        """
        child_id = project_child_id(msg.project_id)
        ref = self.projects.lookup(child_id)
        if ref is not None:
            return ref
        if len(self.projects) >= self.max_projects:
            raise Overloaded(f"project limit reached ({self.max_projects})", retry_after=30.0)
        ref = ActorRef(child_id, mailbox_size=self.mailbox_size)
        project_id = msg.project_id
        try:
            await self.projects.start_child(
                ChildSpec.actor(child_id, ref, lambda: self.make_project(project_id))
            )
        except Exception as exc:
            # A start that fails (the store could not load the project, say) fails this
            # request only: the supervisor forgot the child, so the next request tries again.
            # Not a crash of the broker, and no restart counted anywhere.
            self.failed_starts += 1
            log.warning("project %s failed to start: %s: %s", project_id, type(exc).__name__, exc)
            raise ProjectUnavailable(
                f"project {project_id!r} could not start ({type(exc).__name__}); retry shortly",
                retry_after=1.0,
            ) from None
        self.started += 1
        return ref
