"""What an operation handler sees: the request's facts (:class:`Ctx`), who asks, and the
narrow :class:`Services` it may use, together an :class:`OpContext`; and the :class:`Op`
entry of the operation table. Handlers never see the server, the Api or the actor system.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from ..actors.agents import AgentSupervisor
from ..actors.errors import InvalidRequest
from ..actors.principal import Principal
from ..actors.profiles import Profiles
from ..actors.runtime import ActorRef
from ..actors.session import Session
from ..actors.store import DiskFaults, QueryResults

__all__ = ["Ctx", "Handler", "Op", "OpContext", "OpLimits", "Reply", "Services", "Tokens"]

Reply = dict[str, Any] | bytes | None


@dataclass(frozen=True, slots=True)
class Ctx:
    """The facts of one request beyond its arguments, as its transport read them."""

    request_id: str
    session: Session | None = None  # WebSocket only
    reply_id: Any = None  # the WebSocket request's "id"
    #: the ``Idempotency-Key`` header (HTTP) or the request's ``idempotency_key`` (WebSocket)
    idempotency_key: Any = None
    #: Called once the answer was written to the client (HTTP: after the response's bytes
    #: were handed to the socket; WebSocket: after the session's writer wrote the frame).
    #: Never called for an answer that was not written. Must not block.
    on_sent: list[Callable[[], None]] = field(default_factory=list)


class Tokens(Protocol):
    """Token work a handler may ask for (``transport/auth.py`` ``Auth`` is one)."""

    def verify(self, token: str, now: float | None = None) -> Principal: ...

    def mint(
        self, *, sub: str, agent_type: str, project_id: str, ttl: float = 3600,
        permissions: list[str] | None = None, admin: bool = False, spawned: bool = False,
    ) -> str: ...


@dataclass(frozen=True)
class OpLimits:
    """The bounds operations apply (docs/protocol.md "Bounds")."""

    call_timeout: float = 30.0
    wait_default_ms: int = 30_000
    wait_max_ms: int = 300_000
    fault_injection: bool = False


@dataclass(frozen=True, slots=True)
class Services:
    """What handlers may use of the server, and nothing else."""

    #: the ref of a project's actor, started on first use
    project: Callable[[str], Awaitable[ActorRef]]
    #: the ref of a project's context actor, started on first use
    context: Callable[[str], Awaitable[ActorRef]]
    #: a results query over every project (an all-projects admin's)
    query_store: Callable[[QueryResults], Awaitable[list[tuple[int, bytes]]]]
    #: keeps the "*" subscriptions
    broker: ActorRef
    profiles: Profiles
    tokens: Tokens
    limits: OpLimits
    #: the /status body as ``principal`` may see it
    status: Callable[[Principal | None], Awaitable[dict[str, Any]]]
    #: the actor a fault-injection target names, or None
    fault_target: Callable[[str], ActorRef | None]
    #: the store's simulated disk trouble (fault injection)
    disk: DiskFaults
    #: spawned agents: spawn, status, list, logs, stop (each scoped to a project by the caller)
    agents: AgentSupervisor


@dataclass(frozen=True, slots=True)
class OpContext:
    """What a handler knows: who asks, the request's facts, and the services it may use."""

    principal: Principal
    request: Ctx
    services: Services

    @property
    def session(self) -> Session:
        """The WebSocket session of the request; an operation served over HTTP too has none
        (InvalidRequest: the operations that use it are WebSocket-only)."""
        session = self.request.session
        if session is None:
            raise InvalidRequest("op", "this operation is served over WebSocket only")
        return session


Handler = Callable[[OpContext, dict[str, Any]], Awaitable[Reply]]


@dataclass(frozen=True)
class Op:
    name: str
    handler: Handler
    permission: str | None = None  # None: any valid token of the project
    #: how a WebSocket session runs it: "inline", "pooled" or "blocking"
    mode: str = "pooled"
    rate_limited: bool = True
    ws: bool = True
