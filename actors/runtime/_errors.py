"""Errors raised by the actor runtime.

Every error a caller can see from :meth:`ActorRef.call` is an :class:`ActorError`,
so callers at the edge can turn all of them into one protocol answer.
"""

from __future__ import annotations


class ActorError(Exception):
    """Base class of every error the runtime raises to callers."""


class ActorCrashed(ActorError):
    """The actor died while the request was queued or being handled.

    The request may or may not have taken effect; it was not acknowledged.
    """

    def __init__(self, name: str, reason: str) -> None:
        super().__init__(f"actor {name!r} crashed: {reason}")
        self.name = name
        self.reason = reason


class ActorUnavailable(ActorError):
    """The actor is stopped (shut down, or its supervisor gave up on it)."""

    def __init__(self, name: str, why: str = "stopped") -> None:
        super().__init__(f"actor {name!r} is unavailable: {why}")
        self.name = name
        self.why = why


class CallTimeout(ActorError):
    """No reply arrived within the caller's timeout (mailbox full or actor busy)."""

    def __init__(self, name: str, timeout: float) -> None:
        super().__init__(f"actor {name!r} did not reply within {timeout:g}s")
        self.name = name
        self.timeout = timeout


class ReplyError(Exception):
    """Base for errors an actor *answers* with instead of crashing.

    When :meth:`Actor.handle` raises a subclass of this, the caller receives it and the
    actor keeps running; raised out of :meth:`Actor.handle_batch`, it answers every call of
    the batch not yet answered. Any other exception crashes the actor.
    """


class InjectedCrash(Exception):
    """Raised inside an actor on purpose by fault injection."""


class SupervisorGaveUp(Exception):
    """A supervisor exceeded its restart intensity and stopped all its children.

    Raised out of :meth:`Supervisor.run`, so that its own supervisor sees a crash.
    """

    def __init__(self, name: str, child: str, reason: str) -> None:
        super().__init__(
            f"supervisor {name!r} gave up after too many restarts; last crash of {child!r}: {reason}"
        )
        self.name = name
        self.child = child
        self.reason = reason


class SupervisorError(Exception):
    """A supervisor could not do what it was asked at run time (start or stop a child)."""


class DuplicateChild(SupervisorError):
    """:meth:`Supervisor.start_child` with an id that a running-or-restarting child has."""

    def __init__(self, supervisor: str, child_id: str) -> None:
        super().__init__(f"child id {child_id!r} already exists in {supervisor!r}")
        self.supervisor = supervisor
        self.child_id = child_id


class SupervisorStopped(SupervisorError):
    """The supervisor is not running (not started yet, stopping or stopped): it starts no
    child; a child it was starting when it stopped was stopped with it."""

    def __init__(self, supervisor: str) -> None:
        super().__init__(f"supervisor {supervisor!r} is not running")
        self.supervisor = supervisor


class ExitedBeforeStarting(SupervisorError):
    """A child's ``run`` returned without reporting itself started."""

    def __init__(self, child_id: str) -> None:
        super().__init__(f"child {child_id!r} exited before starting")
        self.child_id = child_id
