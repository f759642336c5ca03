"""The server's supervision tree::

    root (one_for_one)
    ├── store      StoreActor      permanent   the only writer of the durable store
    ├── projects   Supervisor      permanent   one ProjectActor per project id, started on demand
    ├── broker     BrokerActor     permanent   starts project and context actors on first use
    ├── agents     Supervisor      permanent   spawned agent processes and their registry
    ├── sessions   Supervisor      permanent   one Session per WebSocket connection (temporary)
    └── contexts   Supervisor      permanent   one ContextActor per project, started on first use

The live sessions are listed in one :class:`SessionRegistry`, written by the sessions only.
The agents' subtree stops before the broker, the projects and the store (children stop in
reverse order), so that its last records and events still reach them; its spawns answer
Unavailable until ``agents.hooks`` is set (by the transport, before :meth:`ActorSystem.run`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from .agents import AgentsConfig, AgentSupervisor, agent_child_id
from .agents._lease import this_process
from .broker import BrokerActor, EnsureContext, EnsureProject, context_child_id, project_child_id
from .context.engine import ContextLimits
from .context_actor import ContextActor, ContextStats
from .errors import StoreError
from .principal import Principal
from .profiles import Profiles
from .project import ProjectActor, ProjectConfig, ProjectStats, RemoteAppend
from .records import iso_time
from .runtime import ActorError, ActorRef, ChildSpec, Restart, Supervisor
from .session import Connection, Dispatcher, Session, SessionLimits, SessionRegistry
from .store import DiskFaults, SQLiteBackend, StoreActor, StoreBackend, StoreCounts, default_db_path

__all__ = ["ActorSystem", "SystemConfig"]


@dataclass(frozen=True)
class SystemConfig:
    data_dir: Path
    profiles: Profiles = field(default_factory=Profiles)
    project: ProjectConfig = field(default_factory=ProjectConfig)
    synchronous: str = "NORMAL"
    #: a ``postgresql://`` URL: the durable store lives there; None: SQLite in ``data_dir``
    store_url: str | None = None
    mailbox_size: int = 4096
    #: code base per project id; others use ``default_root``
    roots: dict[str, Path] = field(default_factory=dict)
    default_root: Path = field(default_factory=Path.cwd)
    context_sweep: float = 2.0
    #: files whose content no context answer gives out, beyond the defaults (gitignore syntax)
    context_withhold: tuple[str, ...] = ()
    #: the context engine's bounds: the listing's share of an answer, the search cache, the
    #: per-word tables kept
    context_limits: ContextLimits = field(default_factory=ContextLimits)
    max_restarts: int = 20
    restart_period: float = 60.0
    #: spawned agents running at once per project, and the spawn depth (docs/protocol.md "Bounds")
    agents_per_project: int = 64
    agents_max_depth: int = 3
    #: SIGTERM -> SIGKILL of every spawned agent when the server stops
    agents_shutdown_grace: float = 5.0
    #: PostgreSQL only: each process beats its lease this often; one older than the expiry is
    #: lost (its agents ``failed``)
    lease_interval: float = 2.0
    lease_expiry: float = 10.0


class ActorSystem:
    """Builds and runs the tree; the transport's only way into the actors."""

    def __init__(self, config: SystemConfig) -> None:
        self.config = config
        db_path = default_db_path(config.data_dir)
        self.db_path = db_path
        location = str(db_path)
        postgres: StoreBackend | None = None
        #: PostgreSQL only: this process's ear on the other processes' appends
        self.listener: Any = None
        if config.store_url is not None:
            from .pg_notify import NotifyListener
            from .store_postgres import PostgresBackend, redact_url

            self.listener = NotifyListener(config.store_url, self._announced)

            # one object for every incarnation of the store: after the first, opening it while
            # the server is unreachable is not fatal (requests fail transient until it is back)
            postgres = PostgresBackend(config.store_url)
            location = redact_url(config.store_url)

        def make_backend() -> StoreBackend:
            return postgres if postgres is not None else SQLiteBackend(db_path, config.synchronous, self.disk)
        self.store = ActorRef("store", mailbox_size=config.mailbox_size)
        #: simulated disk trouble of the store (fault injection), kept across its restarts
        self.disk = DiskFaults()
        self.broker = ActorRef("broker", mailbox_size=config.mailbox_size)
        project_config = ProjectConfig(
            **{**config.project.__dict__, "storage_location": location,
               "shared_store": config.store_url is not None}
        )
        self.projects = Supervisor(
            "projects", max_restarts=config.max_restarts, period=config.restart_period
        )
        self.sessions = Supervisor("sessions", max_restarts=1_000_000, period=1.0)
        self.contexts = Supervisor(
            "contexts", max_restarts=config.max_restarts, period=config.restart_period
        )

        #: the live sessions (each session enters and leaves it itself)
        self.live_sessions = SessionRegistry()

        #: each project's counts, kept across its actor's restarts (written by that actor only)
        self._project_counts: dict[str, dict[str, int]] = {}

        #: this server process: the owner of the agents it spawns, its lease's identity
        self.process = this_process()
        #: spawned agents; ``agents.hooks`` is set by the transport before the tree runs
        self.agents = AgentSupervisor(
            AgentsConfig(data_dir=config.data_dir, root_of=self.root_of,
                         per_project=config.agents_per_project, max_depth=config.agents_max_depth,
                         shutdown_grace=config.agents_shutdown_grace, process=self.process,
                         leases=config.store_url is not None,
                         lease_interval=config.lease_interval, lease_expiry=config.lease_expiry),
            config.profiles, self.store, mailbox_size=config.mailbox_size,
        )

        def make_project(project_id: str) -> ProjectActor:
            counts = self._project_counts.setdefault(project_id, {})
            return ProjectActor(project_id, self.store, config.profiles, project_config, counts=counts)

        def make_context(project_id: str) -> ContextActor:
            return ContextActor(project_id, self.root_of(project_id), self.store, config.profiles,
                                sweep_interval=config.context_sweep, withhold=config.context_withhold,
                                limits=config.context_limits)

        self.root = Supervisor(
            "root",
            [
                ChildSpec.actor(
                    "store", self.store,
                    lambda: StoreActor(make_backend()),
                ),
                ChildSpec("projects", lambda: self.projects),
                ChildSpec.actor(
                    "broker", self.broker,
                    lambda: BrokerActor(self.projects, make_project, mailbox_size=config.mailbox_size,
                                        contexts=self.contexts, make_context=make_context),
                ),
                ChildSpec("agents", lambda: self.agents.tree),
                ChildSpec("sessions", lambda: self.sessions),
                ChildSpec("contexts", lambda: self.contexts),
            ],
            max_restarts=config.max_restarts,
            period=config.restart_period,
            # children stop in turn, each awaited this long before the next: the agents' stop
            # (their grace included) must end before the projects and the store stop
            stop_timeout=config.agents_shutdown_grace + 10.0,
        )

    async def run(self, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        if self.listener is None:
            await self.root.run(task_status=task_status)
            return
        async with trio.open_nursery() as nursery:
            await nursery.start(self.listener.run)
            await self.root.run(task_status=task_status)
            nursery.cancel_scope.cancel()

    def _announced(self, found: dict[str, int] | None) -> None:
        """Another process appended (``found``: project -> cursor; None: maybe, to any): the
        running project actors concerned look (one not running loads it when it starts)."""
        projects = self.running_projects() if found is None else found
        for pid in projects:
            ref = self.projects.lookup(project_child_id(pid))
            if ref is not None:  # a full mailbox drops it: the project's own poll catches up
                ref.try_cast(RemoteAppend(None if found is None else found[pid]))

    async def project(self, project_id: str, timeout: float = 10.0) -> ActorRef:
        """The ref of a project's actor, starting it on first use."""
        ref = self.projects.lookup(project_child_id(project_id))
        if ref is not None:
            return ref
        started: ActorRef = await self.broker.call(EnsureProject(project_id), timeout=timeout)
        return started

    def root_of(self, project_id: str) -> Path:
        return self.config.roots.get(project_id, self.config.default_root)

    async def context(self, project_id: str, timeout: float = 10.0) -> ActorRef:
        """The ref of a project's context actor, starting it (through the broker) on first use."""
        ref = self.contexts.lookup(context_child_id(project_id))
        if ref is not None:
            return ref
        started: ActorRef = await self.broker.call(EnsureContext(project_id), timeout=timeout)
        return started

    async def start_session(
        self, key: str, conn: Connection, dispatcher: Dispatcher, limits: SessionLimits,
        principal: Principal,
    ) -> Session:
        """Start a session for a verified connection under ``sessions`` (temporary: never
        restarted). Raises :class:`~orchestra.actors.runtime.SupervisorError` if it cannot
        start (the supervisor stopping, a duplicate key)."""
        session = Session(key, conn, dispatcher, limits, principal, self.live_sessions)
        await self.sessions.start_child(
            ChildSpec(f"session:{key}", lambda: session, restart=Restart.TEMPORARY, ref=session.ref)
        )
        return session

    async def context_stats(self) -> dict[str, Any]:
        hits = misses = 0
        for child in self.contexts.child_ids():
            ref = self.contexts.lookup(child)
            if ref is None:
                continue
            try:
                stats = await ref.call(ContextStats(), timeout=2)
            except ActorError:  # a restarting context actor: leave it out of the figures
                continue
            hits += stats["hits"]
            misses += stats["misses"]
        total = hits + misses
        return {"hits": hits, "misses": misses, "hit_rate": round(hits / total, 4) if total else None}

    def project_totals(self) -> dict[str, int]:
        """The counts of every project started since this system started, summed (read without
        a call: each project actor writes its own between its steps)."""
        totals: dict[str, int] = {}
        for counts in self._project_counts.values():
            for name, value in counts.items():
                totals[name] = totals.get(name, 0) + value
        return totals

    def running_projects(self) -> list[str]:
        return [c.split(":", 1)[1] for c in self.projects.child_ids()]

    def actor_ref(self, target: str) -> ActorRef | None:
        """Resolve a fault-injection target: ``store``, ``broker``, ``agents`` (the registry of
        spawned agents), ``project:<id>``, ``context:<id>``, ``session:<sub>`` (its oldest
        connection) or ``agent:<agent_id>`` (a spawned agent's actor); None if not running."""
        if target == "store":
            return self.store
        if target == "broker":
            return self.broker
        if target == "agents":
            return self.agents.ref
        if target.startswith("agent:"):
            return self.agents.children.lookup(agent_child_id(target.split(":", 1)[1]))
        if target.startswith("project:"):
            return self.projects.lookup(target)
        if target.startswith("context:"):
            return self.contexts.lookup(target)
        if target.startswith("session:"):
            sub = target.split(":", 1)[1]
            for child in self.sessions.child_ids():
                if child.startswith(f"session:{sub}#"):
                    return self.sessions.lookup(child)
        return None

    async def processes(self, timeout: float = 5.0) -> dict[str, Any]:
        """The deployment's server processes: ``{"process_id": this one's, "processes": [...]}``,
        each ``{process_id, host, pid, started_at, last_beat, state, reason}`` (``state``:
        ``alive``, ``lost`` or ``stopped``; a lease older than the expiry shows ``lost``
        before another process declared it). From the PostgreSQL lease table; with SQLite only
        this process. Never raises: a store that cannot answer adds ``error`` and this process."""
        me = self.process
        here = {"process_id": me.process_id, "host": me.host, "pid": me.pid,
                "started_at": iso_time(me.started_at), "last_beat": None, "state": "alive",
                "reason": None}
        out: dict[str, Any] = {"process_id": me.process_id, "processes": [here]}
        if self.config.store_url is None:
            return out
        from .store_leases import ListProcesses

        try:
            rows = await self.store.call(ListProcesses(), timeout=timeout)
        except (ActorError, StoreError) as exc:
            out["error"] = f"{type(exc).__name__}: {exc}"
            return out
        listed = []
        for r in rows:
            state = "lost" if r.state == "alive" and r.now - r.last_beat > self.config.lease_expiry else r.state
            listed.append({"process_id": r.process_id, "host": r.host, "pid": r.pid,
                           "started_at": iso_time(r.started_at), "last_beat": iso_time(r.last_beat),
                           "state": state, "reason": r.reason})
        if not any(p["process_id"] == me.process_id for p in listed):
            listed.insert(0, here)  # not registered yet (or its row was just dropped)
        out["processes"] = listed
        return out

    async def store_counts(self) -> dict[str, int]:
        counts: dict[str, int] = await self.store.call(StoreCounts(), timeout=10)
        return counts

    async def project_stats(self) -> dict[str, dict[str, Any]]:
        out = {}
        for pid in self.running_projects():
            ref = self.projects.lookup(project_child_id(pid))
            if ref is None:
                continue
            try:
                out[pid] = await ref.call(ProjectStats(), timeout=2)
            except ActorError as exc:  # a restarting project still shows up
                out[pid] = {"error": f"{type(exc).__name__}"}
        return out
