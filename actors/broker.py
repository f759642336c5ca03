"""The broker: starts project actors on demand and keeps the way to each.

Lookups of running projects do not pass through the broker's mailbox: the projects
supervisor's child table (written only by that supervisor) is read directly, so the hot path
costs a dict lookup. Only a first request for a project calls the broker, which starts it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .errors import Overloaded
from .runtime import Actor, ActorRef, ChildSpec, Supervisor

__all__ = ["BrokerActor", "EnsureProject", "project_child_id"]


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

    async def handle(self, msg: EnsureProject) -> ActorRef:
        child_id = project_child_id(msg.project_id)
        ref = self.projects.lookup(child_id)
        if ref is not None:
            return ref
        if len(self.projects) >= self.max_projects:
            raise Overloaded(f"project limit reached ({self.max_projects})", retry_after=30.0)
        ref = ActorRef(child_id, mailbox_size=self.mailbox_size)
        project_id = msg.project_id
        await self.projects.start_child(
            ChildSpec.actor(child_id, ref, lambda: self.make_project(project_id))
        )
        self.started += 1
        return ref
