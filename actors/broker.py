"""The broker: starts a project's actors on demand (its project actor and its context actor)
and keeps the way to each.

Lookups of running actors do not pass through the broker's mailbox: the supervisors' child
tables (each written only by its supervisor) are read directly, so the hot path costs a dict
lookup. Only a first request for a project (or for its context) calls the broker, which starts
the actor: one way to start things on first use, so a start is never raced.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from .errors import NotFound, Overloaded
from .events import EventFilter
from .project import Subscribe, SubscriptionSink, Unsubscribe
from .runtime import Actor, ActorError, ActorRef, ChildSpec, Supervisor

__all__ = [
    "BrokerActor",
    "BrokerStats",
    "DropGlobals",
    "EnsureContext",
    "EnsureProject",
    "GlobalSink",
    "ProjectUnavailable",
    "SubscribeAll",
    "UnsubscribeAll",
    "context_child_id",
    "project_child_id",
]

log = logging.getLogger("orchestra")


class ProjectUnavailable(Overloaded):
    """The project's actor could not start (its state could not be loaded): 503, retry."""


def project_child_id(project_id: str) -> str:
    return f"project:{project_id}"


def context_child_id(project_id: str) -> str:
    return f"context:{project_id}"


@dataclass(frozen=True, slots=True)
class EnsureProject:
    """Answered with the ref of the project's actor, started if it was not running."""

    project_id: str


@dataclass(frozen=True, slots=True)
class EnsureContext:
    """Answered with the ref of the project's context actor, started if it was not running."""

    project_id: str


class GlobalSink(SubscriptionSink, Protocol):
    """A sink that can hold subscriptions of every project (an admin session)."""

    def attached(self, project_id: str, sid: str, ref: ActorRef) -> None:
        """A subscription ``sid`` at ``project_id``'s actor now feeds this sink."""
        ...


@dataclass(frozen=True, slots=True)
class SubscribeAll:
    """Subscribe ``sink`` to every project, running now or started later.

    ``since``: None (running projects live from now), one cursor for every running project,
    or a cursor per project id. A project not named (and every project started later) is
    replayed from its beginning, so nothing it published before the attachment is missed.
    """

    sink: GlobalSink
    event_types: frozenset[str] | None
    topics: frozenset[str] | None
    filter: EventFilter
    since: int | dict[str, int] | None = None


@dataclass(frozen=True, slots=True)
class UnsubscribeAll:
    session_key: str
    gsid: str


@dataclass(frozen=True, slots=True)
class BrokerStats:
    pass


@dataclass(frozen=True, slots=True)
class DropGlobals:
    """Cast when a session closed: forget its global subscriptions."""

    session_key: str


@dataclass(slots=True)
class _Global:
    gsid: str
    msg: SubscribeAll
    #: project id -> (project ref, sid) of each attachment
    attached: dict[str, tuple[ActorRef, str]]

    def since_for(self, project_id: str, running: bool) -> int | None:
        since = self.msg.since
        if isinstance(since, dict):
            return since.get(project_id, 0)
        if since is None:
            return None if running else 0
        return since if running else 0


class BrokerActor(Actor):
    def __init__(
        self,
        projects: Supervisor,
        make_project: Callable[[str], Actor],
        *,
        max_projects: int = 10_000,
        mailbox_size: int = 1024,
        max_globals: int = 1_000,
        contexts: Supervisor | None = None,
        make_context: Callable[[str], Actor] | None = None,
    ) -> None:
        self.projects = projects
        self.make_project = make_project
        self.contexts = contexts
        self.make_context = make_context
        self.max_projects = max_projects
        self.max_globals = max_globals
        self.mailbox_size = mailbox_size
        self.started = 0
        self.contexts_started = 0
        self.failed_starts = 0
        #: global ("*") subscriptions, attached to every project this broker starts
        self.globals: dict[str, _Global] = {}
        self._next_gsid = 0

    async def handle(self, msg: Any) -> Any:
        if isinstance(msg, EnsureProject):
            return await self._ensure(msg)
        if isinstance(msg, EnsureContext):
            return await self._ensure_context(msg.project_id)
        if isinstance(msg, SubscribeAll):
            return await self._subscribe_all(msg)
        if isinstance(msg, UnsubscribeAll):
            g = self.globals.get(msg.gsid)
            if g is None or g.msg.sink.session_key != msg.session_key:
                raise NotFound(f"no subscription {msg.gsid!r} on this connection")
            del self.globals[msg.gsid]
            for ref, sid in g.attached.values():
                ref.try_cast(Unsubscribe(msg.session_key, sid))
            return {}
        if isinstance(msg, DropGlobals):
            for gsid in [k for k, g in self.globals.items() if g.msg.sink.session_key == msg.session_key]:
                del self.globals[gsid]
            return None
        if isinstance(msg, BrokerStats):
            return {"started": self.started, "contexts_started": self.contexts_started,
                    "failed_starts": self.failed_starts,
                    "global_subscriptions": len(self.globals)}
        raise TypeError(f"unexpected message {msg!r}")

    async def _subscribe_all(self, msg: SubscribeAll) -> dict[str, Any]:
        if len(self.globals) >= self.max_globals:
            raise Overloaded(f"too many '*' subscriptions ({self.max_globals})", retry_after=5.0)
        self._next_gsid += 1
        g = _Global(f"*/{self._next_gsid}", msg, {})
        self.globals[g.gsid] = g
        replies = []
        for child_id in self.projects.child_ids():
            ref = self.projects.lookup(child_id)
            if ref is not None:
                reply = await self._attach(g, child_id.split(":", 1)[1], ref, running=True)
                if reply is not None:
                    replies.append(reply)
        return {
            "subscription": [r["subscription"] for r in replies],
            "subscriptions": replies,
            "cursor": None,
            "global_subscription": g.gsid,
        }

    async def _attach(
        self, g: _Global, project_id: str, ref: ActorRef, running: bool
    ) -> dict[str, Any] | None:
        m = g.msg
        try:
            reply: dict[str, Any] = await ref.call(
                Subscribe(m.sink, m.event_types, m.topics, m.filter,
                          g.since_for(project_id, running), announce=False),
                timeout=10.0,
            )
        except (ActorError, Overloaded) as exc:
            # that project's actor is restarting or full: its pushes are missing and the
            # admin is told in the log; a restart of the project closes the session (1012)
            log.warning("global subscription %s: project %s not attached: %s", g.gsid, project_id, exc)
            return None
        g.attached[project_id] = (ref, reply["subscription"])
        m.sink.attached(project_id, reply["subscription"], ref)
        return {**reply, "project_id": project_id}

    async def _ensure(self, msg: EnsureProject) -> ActorRef:
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
        for g in list(self.globals.values()):
            await self._attach(g, project_id, ref, running=False)
        return ref

    async def _ensure_context(self, project_id: str) -> ActorRef:
        """The ref of the project's context actor, started now if needed (at most one per
        project running: the context actor is as bounded as the project actors)."""
        if self.contexts is None or self.make_context is None:
            raise TypeError("this broker starts no context actors")
        child_id = context_child_id(project_id)
        ref = self.contexts.lookup(child_id)
        if ref is not None:
            return ref
        if len(self.contexts) >= self.max_projects:
            raise Overloaded(f"project limit reached ({self.max_projects})", retry_after=30.0)
        ref = ActorRef(child_id, mailbox_size=self.mailbox_size)
        make = self.make_context
        try:
            await self.contexts.start_child(ChildSpec.actor(child_id, ref, lambda: make(project_id)))
        except Exception as exc:
            log.warning("context of %s failed to start: %s: %s", project_id, type(exc).__name__, exc)
            raise ProjectUnavailable(
                f"the context of project {project_id!r} could not start ({type(exc).__name__}); "
                "retry shortly", retry_after=1.0,
            ) from None
        self.contexts_started += 1
        return ref
