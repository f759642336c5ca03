"""The registry of spawned agents: spawns (idempotency, the governor), the index of live
agents, status, lists, stops and log paths, and the recovery after a crash of the server.

It is one for the whole server (not per project): the caps and the recovery span projects,
a spawned agent outlives the connection (and the project actor) that asked for it, and
shutdown must end every process group at once. Each agent actor owns its process; the
registry owns the index of live agents (told by the agents on every change) and the governor.
"""

from __future__ import annotations

import itertools
import logging
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import trio

from ..errors import IdempotencyConflict, NotFound, StoreError, Unavailable
from ..idempotency import IdemKey
from ..profiles import Profiles
from ..records import iso_time
from ..runtime import DEFERRED, Actor, ActorError, ActorRef, Call, ChildSpec, Restart, Supervisor
from ..store import AgentRow, AgentSeq, FindSpawn, GetAgent, ListAgents, LiveAgents, SaveAgent
from ..store_leases import (
    Beat,
    ClaimExpired,
    EndProcess,
    HostLeftovers,
    ProcessRow,
    Reap,
    RegisterProcess,
)
from ._agent import AgentActor, AgentChanged, Fence, GetAnswer, GetRecord, ServerStopping, Stop
from ._errors import NotSpawnable
from ._lease import owner_gone
from ._policy import Caps, Governor
from ._procs import ProcessIdentity, end_groups, is_own_group
from ._spec import (
    LIVE_STATES,
    TERMINAL_STATES,
    AgentHooks,
    AgentsConfig,
    AgentSpec,
    check_os_strings,
    public_record,
)
from ._workspace import remove_worktree

__all__ = [
    "AgentRegistry",
    "AgentStatus",
    "ListAgentRecords",
    "LogPath",
    "Spawn",
    "StopAgent",
    "agent_child_id",
]

log = logging.getLogger("orchestra.agents")


def agent_child_id(agent_id: str) -> str:
    return f"agent:{agent_id}"


# -- messages --


@dataclass(frozen=True, slots=True)
class Spawn:
    """Start an agent of ``agent_type`` (its profile's command) for ``issue_id``.

    ``spawned_by`` is the requesting token's ``sub`` (it decides the spawn depth); ``idem`` the
    request's idempotency key (scope: project, sub, key). Answers PROTOCOL.md's spawn answer.
    """

    project_id: str
    agent_type: str
    issue_id: str
    task: str | None = None
    environment: tuple[tuple[str, str], ...] = ()
    spawned_by: str | None = None
    idem: IdemKey | None = None
    #: the size of the agent's context file (``context_requirements.max_bytes``); None: default
    context_bytes: int | None = None
    #: the spawning request's W3C ``traceparent``: the agent's events and TRACEPARENT carry it
    traceparent: str | None = None


@dataclass(frozen=True, slots=True)
class AgentStatus:
    """Answers the agent's public record; NotFound for an unknown id or another project's."""

    project_id: str
    agent_id: str


@dataclass(frozen=True, slots=True)
class ListAgentRecords:
    """Answers the project's agent records, newest spawn first, filtered."""

    project_id: str
    state: str | None = None
    agent_type: str | None = None
    issue_id: str | None = None


@dataclass(frozen=True, slots=True)
class StopAgent:
    """Ends the agent; answers its public record once the process has ended."""

    project_id: str
    agent_id: str
    grace: float | None = None


@dataclass(frozen=True, slots=True)
class LogPath:
    """Answers the path of the agent's log file."""

    project_id: str
    agent_id: str


@dataclass
class _Pending:
    msg: Spawn
    calls: list[Call]
    fingerprint: str | None
    spawn_key: str | None
    agent_id: str | None = None


@dataclass(frozen=True, slots=True)
class _Found:
    pending: _Pending
    original: AgentRow | None
    parent: dict[str, Any] | None
    error: BaseException | None = None


@dataclass(frozen=True, slots=True)
class _LeaseLost:
    """Cast by the lease's task: this process no longer holds its lease."""

    reason: str


@dataclass(frozen=True, slots=True)
class _Started:
    pending: _Pending
    outcome: Any
    #: the agent's actor runs (even if its answer could not be had)
    running: bool = True


def spawn_key(idem: IdemKey) -> str:
    return f"{idem.sub}\x00{idem.key}"


class AgentRegistry(Actor):
    """Admits spawns (idempotency, governor), starts agent actors under ``children``, keeps
    the records of the live agents and answers status, lists, stops and log paths.

    Guarantees: a spawn repeated with the same key (same project and ``sub``) answers the
    original answer and starts nothing, also after a restart of the server (the key is stored
    with the agent's record before its process starts); every live agent holds a governor slot
    until it ended. On the first start it ends the process groups that a crash of the server
    left running (those it can prove are its own) and records those agents ``failed``.
    """

    def __init__(
        self,
        config: AgentsConfig,
        profiles: Profiles,
        store: ActorRef,
        children: Supervisor,
        hooks: AgentHooks | None,
        *,
        recover: bool = False,
        mailbox_size: int = 4096,
        wall_clock: Any = time.time,
    ) -> None:
        self.config = config
        self.profiles = profiles
        self.store = store
        self.children = children
        self.hooks = hooks
        self.recover = recover
        self.mailbox_size = mailbox_size
        self.wall_clock = wall_clock

    async def on_start(self) -> None:
        self.governor = Governor(Caps(self.config.per_project, self.config.max_depth))
        # read-only for others, between this actor's steps (AgentSupervisor.running)
        self.ref.view = self.governor
        self.live: dict[str, dict[str, Any]] = {}
        self.spawning: dict[str, _Pending] = {}
        #: agents whose spawn is not yet answered: forgotten only after it is
        self.starting: set[str] = set()
        self.ended_early: set[str] = set()
        self.seq = await self._store(AgentSeq())
        for child in self.children.child_ids():
            ref = self.children.lookup(child)
            if ref is None:
                continue
            try:
                record = await ref.call(GetRecord(), timeout=2)
            except ActorError:
                continue
            self._note(record)
        if self.config.leases:
            assert self.config.process is not None
            if self.recover:
                await self._register()
                await self._reap_host()
            self.helpers.start_soon(self._lease_loop)
        elif self.recover:
            await self._recover()

    async def on_stop(self) -> None:
        # The server stops: every process group at once (the agent actors, stopped after this,
        # then find their processes gone and record them stopped).
        for agent_id in self.live:
            ref = self.children.lookup(agent_child_id(agent_id))
            if ref is not None:
                ref.try_cast(ServerStopping())  # a full mailbox: that agent's own stop does it
        pids = [r["pid"] for r in self.live.values() if r["state"] in ("running", "stalled") and r["pid"]]
        if pids:
            await end_groups(pids, self.config.shutdown_grace)
        if self.config.leases:
            assert self.config.process is not None
            # stopped in order: nothing of this process is left to end (the agents' records
            # are written by their actors just after this; others fail what stays live)
            with trio.move_on_after(self.config.store_timeout):
                try:
                    await self._store(EndProcess(self.config.process.process_id))
                except (StoreError, ActorError) as exc:
                    log.warning("could not record this process stopped: %r", exc)

    async def _store(self, msg: Any) -> Any:
        return await self.store.call(msg, timeout=self.config.store_timeout)

    # -- recovery after a crash of the server --

    async def _recover(self) -> None:
        """End the process groups a crash of the server left running, those provably ours (all
        at once: SIGTERM, SIGKILL after the grace), and record each agent ``failed``."""
        rows: list[AgentRow] = await self._store(LiveAgents())
        left: list[tuple[AgentRow, dict[str, Any], bool]] = []
        for row in rows:
            if self.children.lookup(agent_child_id(row.agent_id)) is not None:
                continue
            try:
                record = orjson.loads(row.body)
                ident = record.get("_identity")
                ours = ident is not None and is_own_group(ProcessIdentity(**ident))
            except (ValueError, TypeError, KeyError, AttributeError) as exc:
                # one unreadable record must not stop the others' recovery (nor the server)
                log.error("agent %s left by a crash has an unreadable record: %r", row.agent_id, exc)
                continue
            left.append((row, record, ours))
        await end_groups([r["_identity"]["pid"] for _, r, ours in left if ours], self.config.shutdown_grace)
        for row, record, ours in left:
            try:
                await self._mark_failed(row, record, ours)
            except (StoreError, ActorError) as exc:
                log.error("agent %s left by a crash could not be recorded: %r", row.agent_id, exc)

    async def _mark_failed(self, row: AgentRow, record: dict[str, Any], ended: bool) -> None:
        await self._remove_worktree(row, record)
        why = "server restarted" + ("; its process group was ended" if ended else "")
        record.update(state="failed", reason=why, ended_at=iso_time(self.wall_clock()))
        await self._store(SaveAgent(AgentRow(
            row.agent_id, row.project_id, "failed", row.seq, iso_time(self.wall_clock()),
            orjson.dumps(record),
        )))
        log.warning("agent %s (project %s) left by a crash: %s", row.agent_id, row.project_id, why)
        await self._publish_failed(row.project_id, record)

    async def _remove_worktree(self, row: AgentRow, record: dict[str, Any]) -> None:
        root = self.config.root_of(row.project_id)
        if record.get("workspace") not in (None, str(root)):
            with trio.move_on_after(30):
                await remove_worktree(root, Path(record["workspace"]), row.agent_id)

    async def _publish_failed(self, project_id: str, record: dict[str, Any]) -> None:
        """``agent_failed`` for an agent whose record another part (recovery, a lease) ended."""
        if self.hooks is None:
            return
        with trio.move_on_after(self.config.store_timeout):
            try:
                await self.hooks.publish(project_id, "agent_failed", {
                    "agent_id": record.get("agent_id"), "agent_type": record.get("agent_type"),
                    "issue_id": record.get("issue_id"), "state": "failed",
                    "reason": record.get("reason"), "exit_code": None,
                    "restarts": record.get("restarts", 0),
                }, record.get("_traceparent"))
            except Exception as exc:  # any: recovery goes on
                log.warning("agent %s: agent_failed could not be published: %r",
                            record.get("agent_id"), exc)

    # -- leases (the PostgreSQL store: several processes) --

    async def _register(self) -> None:
        me = self.config.process
        assert me is not None
        await self._store(RegisterProcess(me))

    async def _reap_host(self) -> None:
        """End what processes of this host that are provably gone left running (the process
        groups of their agents, each proved the agent's), and record their live agents
        ``failed``. Several processes of the host starting at once: each group is ended by
        whoever comes first, each agent recorded (and its event published) once."""
        me = self.config.process
        assert me is not None
        found: list[tuple[ProcessRow, list[AgentRow]]] = await self._store(
            HostLeftovers(me.host, me.process_id))
        for proc, rows in found:
            owner = proc.process
            if not owner_gone(owner, me):
                continue  # alive (another worker of this host), or nothing can be proved
            groups = []
            for row in rows:
                try:
                    ident = orjson.loads(row.body).get("_identity")
                    if ident is not None and is_own_group(ProcessIdentity(**ident)):
                        groups.append(ident["pid"])
                except (ValueError, TypeError, KeyError, AttributeError) as exc:
                    log.error("agent %s of a gone process has an unreadable record: %r", row.agent_id, exc)
            await end_groups(groups, self.config.shutdown_grace)
            why = f"owner process {owner.process_id} is gone (found by {me.process_id} on its host)"
            if groups:
                log.warning("ended %d process groups left by %s", len(groups), why)
            failed: list[AgentRow] = await self._store(Reap(owner.process_id, why))
            for row in failed:
                record = orjson.loads(row.body)
                log.warning("agent %s (project %s): %s", row.agent_id, row.project_id, why)
                await self._remove_worktree(row, record)
                await self._publish_failed(row.project_id, record)

    async def _lease_loop(self) -> None:
        """Beat this process's lease every ``lease_interval`` seconds; once it has held it
        without a miss for ``lease_expiry`` seconds (so every process that can reach the
        database had the time to beat, also after the database restarted), declare lost the
        processes whose lease expired and publish ``agent_failed`` for their agents. A beat
        that finds the lease taken fences this process's agents and takes it again."""
        config, me = self.config, self.config.process
        assert me is not None
        steady_since: float | None = None
        unreachable = False
        while True:
            try:
                if not await self._store(Beat(me.process_id)):
                    why = (f"owner process {me.process_id} lost its lease (no heartbeat for "
                           f"{config.lease_expiry:g} s)")
                    log.error("this process lost its lease; ending its agents: %s", why)
                    await self.ref.cast(_LeaseLost(why))
                    await self._register()
                    steady_since = None
                if unreachable:
                    unreachable = False
                    log.warning("lease: beating again")
                now = trio.current_time()
                steady_since = now if steady_since is None else steady_since
                if now - steady_since >= config.lease_expiry:
                    failed: list[AgentRow] = await self._store(
                        ClaimExpired(me.process_id, config.lease_expiry))
                    for row in failed:
                        record = orjson.loads(row.body)
                        log.warning("agent %s (project %s): %s", row.agent_id, row.project_id,
                                    record.get("reason"))
                        await self._publish_failed(row.project_id, record)
            except (StoreError, ActorError) as exc:
                steady_since = None
                if not unreachable:
                    unreachable = True
                    log.warning("lease: cannot beat now (%s); trying again", exc)
            await trio.sleep(config.lease_interval)

    def _fence(self, why: str) -> None:
        for agent_id in self.live:
            ref = self.children.lookup(agent_child_id(agent_id))
            if ref is not None:
                ref.try_cast(Fence(why))  # a full mailbox: the next lost beat tries again

    # -- messages --

    async def handle(self, msg: Any) -> Any:
        if isinstance(msg, AgentChanged):
            return self._changed(msg.record)
        if isinstance(msg, Spawn):
            return self._spawn(msg)
        if isinstance(msg, _Found):
            return self._found(msg)
        if isinstance(msg, _Started):
            return self._started(msg)
        if isinstance(msg, _LeaseLost):
            return self._fence(msg.reason)
        if isinstance(msg, AgentStatus | LogPath | StopAgent):
            call = self.defer()
            self.helpers.start_soon(self._about_one, call, msg)
            return DEFERRED
        if isinstance(msg, ListAgentRecords):
            call = self.defer()
            self.helpers.start_soon(self._list, call, msg)
            return DEFERRED
        raise TypeError(f"not an agents message: {msg!r}")

    def _note(self, record: dict[str, Any]) -> None:
        agent_id = record["agent_id"]
        if record["state"] in TERMINAL_STATES:
            self.live.pop(agent_id, None)
            self.governor.remove(agent_id)
            if agent_id in self.starting:
                self.ended_early.add(agent_id)  # forgotten once its spawn is answered
            else:
                self.helpers.start_soon(self.children.stop_child, agent_child_id(agent_id))
        else:
            self.live[agent_id] = record
            self.governor.add(agent_id, record["project_id"], record["agent_type"])

    def _changed(self, record: dict[str, Any]) -> None:
        if record["state"] in LIVE_STATES and record["agent_id"] not in self.live:
            if self.children.lookup(agent_child_id(record["agent_id"])) is None:
                return  # a late word from an agent already forgotten
        self._note(record)

    def _spawn(self, msg: Spawn) -> Any:
        profile = self.profiles.get(msg.agent_type)
        if not profile.command:
            raise NotSpawnable(msg.agent_type)
        if self.hooks is None:
            raise Unavailable("this server cannot spawn agents: it was started without their hooks",
                              retry_after=3600)
        check_os_strings(msg.environment, msg.task, {
            "agent_type": msg.agent_type, "issue_id": msg.issue_id, "project_id": msg.project_id})
        call = self.defer()
        key = spawn_key(msg.idem) if msg.idem is not None else None
        fp = msg.idem.fingerprint.hex() if msg.idem is not None else None
        if key is not None:
            pending = self.spawning.get(f"{msg.project_id}\x00{key}")
            if pending is not None:  # the same spawn is in flight: share its answer
                if pending.fingerprint != fp:
                    call.fail(_reused(msg.idem))
                else:
                    pending.calls.append(call)
                return DEFERRED
        pending = _Pending(msg, [call], fp, key)
        if key is not None:
            self.spawning[f"{msg.project_id}\x00{key}"] = pending
        parent = self.live.get(msg.spawned_by or "")
        if key is None and (msg.spawned_by is None or parent is not None):
            self._admit(pending, parent)
        else:
            self.helpers.start_soon(self._lookup, pending)
        return DEFERRED

    async def _lookup(self, pending: _Pending) -> None:
        """Reads what admission needs from the store: the original of a keyed spawn, and the
        record of a spawning agent that is no longer live (for the depth)."""
        msg = pending.msg
        try:
            original = None
            if pending.spawn_key is not None:
                original = await self._store(FindSpawn(msg.project_id, pending.spawn_key))
            parent = self.live.get(msg.spawned_by or "")
            if parent is None and msg.spawned_by is not None:
                row = await self._store(GetAgent(msg.project_id, msg.spawned_by))
                parent = orjson.loads(row.body) if row is not None else None
            found = _Found(pending, original, parent)
        except (StoreError, ActorError) as exc:
            found = _Found(pending, None, None, exc)
        await self.ref.cast(found)

    def _found(self, msg: _Found) -> None:
        pending = msg.pending
        if msg.error is not None:
            self._finish(pending, Unavailable(f"the agent store cannot be read now: {msg.error}"))
        elif msg.original is not None:
            original = orjson.loads(msg.original.body)
            if original.get("_fingerprint") != pending.fingerprint:
                assert pending.msg.idem is not None
                self._finish(pending, _reused(pending.msg.idem))
            elif msg.original.answer is not None:
                self._finish(pending, orjson.loads(msg.original.answer))
            else:  # the server stopped while it started that agent: say what became of it
                self._finish(pending, {
                    "agent_id": original["agent_id"], "spawned": original["pid"] is not None,
                    "process_id": original["pid"], "context_injected": False, "jwt_token": None,
                    "webhook_url": None, "state": original["state"],
                })
        else:
            self._admit(pending, msg.parent)

    def _admit(self, pending: _Pending, parent: dict[str, Any] | None) -> None:
        msg = pending.msg
        profile = self.profiles.get(msg.agent_type)
        same_project = parent is not None and parent.get("project_id") == msg.project_id
        depth = int(parent.get("depth") or 1) + 1 if parent is not None and same_project else 1
        try:
            self.governor.check(msg.project_id, profile, depth)
        except Exception as exc:
            self._finish(pending, exc)
            return
        self.seq += 1
        agent_id = f"{_type_slug(msg.agent_type)}-{uuid.uuid4().hex[:12]}"
        pending.agent_id = agent_id
        spec = AgentSpec(
            agent_id=agent_id, project_id=msg.project_id, agent_type=msg.agent_type,
            issue_id=msg.issue_id, task=msg.task, environment=msg.environment, profile=profile,
            depth=depth, spawned_by=msg.spawned_by, seq=self.seq,
            root=self.config.root_of(msg.project_id), data_dir=self.config.data_dir,
            spawn_key=pending.spawn_key, fingerprint=pending.fingerprint,
            context_bytes=msg.context_bytes, traceparent=msg.traceparent,
            owner=self.config.process.process_id if self.config.process is not None else None,
        )
        self.live[agent_id] = spec.initial_record()
        self.governor.add(agent_id, msg.project_id, msg.agent_type)
        self.starting.add(agent_id)
        self.helpers.start_soon(self._start, pending, spec)

    async def _start(self, pending: _Pending, spec: AgentSpec) -> None:
        """Record the agent (with its spawn key) durably, then start its actor, which starts
        the process before it reports started."""
        recorded = False
        try:
            await self._store(SaveAgent(AgentRow(
                spec.agent_id, spec.project_id, "starting", spec.seq, iso_time(self.wall_clock()),
                orjson.dumps(spec.initial_record()), spec.spawn_key,
            )))
            recorded = True
            ref = ActorRef(agent_child_id(spec.agent_id), mailbox_size=self.mailbox_size)
            starts = itertools.count()
            config, hooks, store, registry = self.config, self.hooks, self.store, self.ref
            assert hooks is not None
            await self.children.start_child(ChildSpec.actor(
                agent_child_id(spec.agent_id), ref,
                lambda: AgentActor(
                    spec, hooks, store, registry, restarted=next(starts) > 0,
                    log_max_bytes=config.log_max_bytes, log_backups=config.log_backups,
                    store_timeout=config.store_timeout,
                ),
                restart=Restart.TRANSIENT,
            ))
        except Exception as exc:  # any: this spawn's answer, the registry serves on
            if recorded:  # nothing runs: the record (and a retry with its key) says so
                record = {**spec.initial_record(), "state": "failed",
                          "reason": f"could not be started: {exc!r}", "ended_at": iso_time(self.wall_clock())}
                with trio.move_on_after(self.config.store_timeout):
                    try:
                        await self._store(SaveAgent(AgentRow(
                            spec.agent_id, spec.project_id, "failed", spec.seq,
                            iso_time(self.wall_clock()), orjson.dumps(record),
                        )))
                    except (StoreError, ActorError) as again:
                        log.warning("agent %s: its failed start could not be recorded: %r", spec.agent_id, again)
            await self.ref.cast(_Started(pending, exc, running=False))
            return
        try:
            outcome: Any = await ref.call(GetAnswer(), timeout=self.config.store_timeout)
        except Exception as exc:  # any: the agent runs; its answer could not be had now
            outcome = exc
        await self.ref.cast(_Started(pending, outcome))

    def _started(self, msg: _Started) -> None:
        pending = msg.pending
        agent_id = pending.agent_id
        assert agent_id is not None
        self.starting.discard(agent_id)
        outcome = msg.outcome
        if isinstance(outcome, BaseException):
            log.warning("agent %s: its spawn could not be answered: %r", agent_id, outcome, exc_info=outcome)
            if not isinstance(outcome, StoreError | Unavailable):
                outcome = Unavailable(f"the agent could not be started: {outcome}")
        if not msg.running:  # nothing runs: its slot is free
            self.live.pop(agent_id, None)
            self.governor.remove(agent_id)
        elif agent_id in self.ended_early:
            # it ended before its spawn was answered: forget it now (a running agent whose
            # answer was late stays: it runs, and a retry with its key finds its answer)
            self.ended_early.discard(agent_id)
            self.helpers.start_soon(self.children.stop_child, agent_child_id(agent_id))
        self._finish(pending, outcome)

    def _finish(self, pending: _Pending, outcome: Any) -> None:
        if pending.spawn_key is not None:
            self.spawning.pop(f"{pending.msg.project_id}\x00{pending.spawn_key}", None)
        for call in pending.calls:
            if isinstance(outcome, BaseException):
                call.fail(outcome)
            else:
                call.reply(outcome)

    # -- reads (helpers: they read ``live`` between the actor's steps, never write it) --

    async def _fresh(self, record: dict[str, Any]) -> dict[str, Any]:
        """A live agent's record from the agent itself (its last activity is not told to the
        registry); the registry's copy if it does not answer at once."""
        ref = self.children.lookup(agent_child_id(record["agent_id"]))
        if ref is None:
            return record
        try:
            return await ref.call(GetRecord(), timeout=1)  # type: ignore[no-any-return]
        except ActorError:
            return record

    async def _record(self, project_id: str, agent_id: str) -> dict[str, Any]:
        record = self.live.get(agent_id)
        if record is not None and record["project_id"] == project_id:
            return await self._fresh(record)
        row = await self._store(GetAgent(project_id, agent_id))
        if row is None:
            raise NotFound(f"no spawned agent {agent_id!r} in this project")
        return orjson.loads(row.body)  # type: ignore[no-any-return]

    async def _about_one(self, call: Call, msg: AgentStatus | LogPath | StopAgent) -> None:
        try:
            if isinstance(msg, StopAgent):
                ref = None
                if msg.agent_id in self.live and self.live[msg.agent_id]["project_id"] == msg.project_id:
                    ref = self.children.lookup(agent_child_id(msg.agent_id))
                if ref is not None:
                    grace = msg.grace if msg.grace is not None else self.profiles.get(
                        self.live[msg.agent_id]["agent_type"]).stop_grace
                    call.reply(await ref.call(Stop(msg.grace), timeout=grace + self.config.store_timeout))
                    return
            record = await self._record(msg.project_id, msg.agent_id)
            call.reply(record["log_path"] if isinstance(msg, LogPath) else public_record(record))
        except Exception as exc:  # any: the answer to this request only
            call.fail(exc)

    async def _list(self, call: Call, msg: ListAgentRecords) -> None:
        try:
            rows = await self._store(ListAgents(msg.project_id, limit=self.config.max_listed))
            out = []
            for row in rows:
                live = self.live.get(row.agent_id)
                record = await self._fresh(live) if live is not None else orjson.loads(row.body)
                if msg.state is not None and record.get("state") != msg.state:
                    continue
                if msg.agent_type is not None and record.get("agent_type") != msg.agent_type:
                    continue
                if msg.issue_id is not None and record.get("issue_id") != msg.issue_id:
                    continue
                out.append(public_record(record))
            call.reply(out)
        except Exception as exc:  # any: the answer to this request only
            call.fail(exc)


def _reused(idem: IdemKey | None) -> IdempotencyConflict:
    key = idem.key if idem is not None else "?"
    return IdempotencyConflict(
        f"idempotency key {key!r} was used for a different spawn; use a new key for a new request"
    )


def _type_slug(agent_type: str) -> str:
    slug = "".join(c for c in agent_type if c.isascii() and (c.isalnum() or c in "-_"))[:48]
    return slug or "agent"
