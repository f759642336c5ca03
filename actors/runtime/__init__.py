"""A small, general actor runtime on trio: actors with bounded mailboxes, and supervisors.

Nothing in here knows about Orchestra's domain.
"""

from ._actor import DEFERRED, Actor, ActorRef, Call, run_actor
from ._errors import (
    ActorCrashed,
    ActorError,
    ActorUnavailable,
    CallTimeout,
    DuplicateChild,
    ExitedBeforeStarting,
    InjectedCrash,
    ReplyError,
    SupervisorError,
    SupervisorGaveUp,
    SupervisorStopped,
)
from ._outbox import Outbox
from ._supervisor import Child, ChildSpec, Restart, Strategy, Supervisor
from ._thread import WorkerThread

__all__ = [
    "DEFERRED",
    "Actor",
    "ActorCrashed",
    "ActorError",
    "ActorRef",
    "ActorUnavailable",
    "Call",
    "CallTimeout",
    "Child",
    "ChildSpec",
    "DuplicateChild",
    "ExitedBeforeStarting",
    "InjectedCrash",
    "Outbox",
    "ReplyError",
    "Restart",
    "Strategy",
    "Supervisor",
    "SupervisorError",
    "SupervisorGaveUp",
    "SupervisorStopped",
    "WorkerThread",
    "run_actor",
]
