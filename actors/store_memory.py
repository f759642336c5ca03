"""A store backend in memory: the SQLite backend's contract without a file or a thread.

For tests of the actors on ``MockClock(autojump_threshold=0)``: the store actor runs it inline
(``blocking = False``), so no worker thread makes the clock jump while a commit is in flight.
Durable only as long as the object lives: a test keeps it across restarts of the store actor
(``StoreActor(backend)`` from the same object) to see that acknowledged writes survive.

Fault hooks let a test break the store at a chosen point: fail the next write or read of a
type (:meth:`MemoryBackend.fail_writes`, :meth:`MemoryBackend.fail_reads`), fail the next
commit as a whole (:meth:`MemoryBackend.fail_commit`), or make ``apply`` raise (the store
actor crashes) before anything is applied or after its writes committed
(:meth:`MemoryBackend.crash`).
"""

from __future__ import annotations

import copy
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from .errors import CommitFailed, ReadFailed, StoreError, WriteRejected
from .store import (
    LIVE_AGENT_STATES,
    AgentRow,
    AgentSeq,
    AppendBatch,
    FindSpawn,
    GetAgent,
    GetResult,
    HighWater,
    IdempotencyRow,
    ListAgents,
    LiveAgents,
    LoadProject,
    LookupKeys,
    ProjectSnapshot,
    PurgeExpired,
    QueryResults,
    ResultRow,
    SaveAgent,
    SaveWaitCursor,
    StoreCounts,
)

__all__ = ["BackendCrash", "MemoryBackend"]


class BackendCrash(Exception):
    """Raised out of :meth:`MemoryBackend.apply` by an armed :meth:`MemoryBackend.crash`: the
    backend itself is broken, so the store actor crashes (and is restarted)."""


@dataclass
class _Tables:
    #: seq -> row; seq grows like SQLite's AUTOINCREMENT
    results: dict[int, ResultRow] = field(default_factory=dict)
    result_ids: dict[str, int] = field(default_factory=dict)
    #: (project, cursor) -> (event_type, expires_at, body)
    events: dict[tuple[str, int], tuple[str, float, bytes]] = field(default_factory=dict)
    projects: dict[str, int] = field(default_factory=dict)
    wait_cursors: dict[tuple[str, str, str], int] = field(default_factory=dict)
    #: (project, sub, key) -> row
    keys: dict[tuple[str, str, str], IdempotencyRow] = field(default_factory=dict)
    next_seq: int = 1
    #: agent_id -> row (spawned agents)
    agents: dict[str, AgentRow] = field(default_factory=dict)


@dataclass
class _Armed:
    """One armed fault: for requests of ``kind``, ``times`` more times (None: until disarmed)."""

    kind: type | tuple[type, ...]
    error: BaseException | None
    times: int | None

    def fires(self, request: Any) -> bool:
        if not isinstance(request, self.kind) or self.times == 0:
            return False
        if self.times is not None:
            self.times -= 1
        return True


class MemoryBackend:
    """Same writes, reads and outcomes as :class:`~orchestra.actors.store.SQLiteBackend`: a
    write fails alone (:class:`WriteRejected`, nothing of it applied), a read alone
    (:class:`ReadFailed`), a commit that fails fails every write of it (:class:`CommitFailed`,
    nothing of them applied); reads see every write of the same call.

    ``seen`` counts the requests applied, by type (``seen[LookupKeys]``), failed ones included.
    """

    #: run by the store actor on its own task, not on a worker thread
    blocking = False

    def __init__(self) -> None:
        self.tables = _Tables()
        self.opened = False
        self.opens = 0
        self.seen: Counter[type] = Counter()
        #: calls of :meth:`apply` that held at least one write: group commits
        self.commits = 0
        self._write_faults: list[_Armed] = []
        self._read_faults: list[_Armed] = []
        self._commit_faults: list[_Armed] = []
        self._crash_before: list[_Armed] = []
        self._crash_after: list[_Armed] = []

    # -- fault hooks --

    def fail_writes(
        self, kind: type | tuple[type, ...] = object, error: StoreError | None = None,
        *, times: int | None = 1,
    ) -> None:
        """The next ``times`` writes of ``kind`` (None: every one, until :meth:`disarm`) fail
        alone with ``error`` (default: a transient :class:`WriteRejected`); nothing of them
        is applied."""
        self._write_faults.append(_Armed(kind, error, times))

    def fail_reads(
        self, kind: type | tuple[type, ...] = object, error: StoreError | None = None,
        *, times: int | None = 1,
    ) -> None:
        """The next ``times`` reads of ``kind`` fail alone with ``error`` (default: a
        transient :class:`ReadFailed`)."""
        self._read_faults.append(_Armed(kind, error, times))

    def fail_commit(
        self, kind: type | tuple[type, ...] = object, *, times: int | None = 1
    ) -> None:
        """The next ``times`` transactions holding a write of ``kind`` do not commit: each
        of their writes is answered :class:`CommitFailed` and none is applied."""
        self._commit_faults.append(_Armed(kind, None, times))

    def crash(
        self, kind: type | tuple[type, ...] = object, error: BaseException | None = None,
        *, after_commit: bool = False, times: int | None = 1,
    ) -> None:
        """The next ``times`` calls of :meth:`apply` holding a request of ``kind`` raise
        ``error`` (default :class:`BackendCrash`): before applying anything, or, with
        ``after_commit``, after their writes committed (and before any read)."""
        (self._crash_after if after_commit else self._crash_before).append(_Armed(kind, error, times))

    def disarm(self) -> None:
        """Forget every armed fault."""
        for faults in (self._write_faults, self._read_faults, self._commit_faults,
                       self._crash_before, self._crash_after):
            faults.clear()

    @staticmethod
    def _fired(faults: list[_Armed], requests: list[Any]) -> _Armed | None:
        for armed in faults:
            if any(armed.fires(r) for r in requests):
                return armed
        return None

    # -- inspection, for tests --

    def events_of(self, project_id: str) -> list[tuple[int, bytes]]:
        """The project's stored events, (cursor, body) in cursor order, expired ones included."""
        return sorted((c, v[2]) for (p, c), v in self.tables.events.items() if p == project_id)

    def result_ids(self) -> list[str]:
        """Ids of every stored result, in the order stored."""
        return list(self.tables.result_ids)

    def keys_of(self, project_id: str) -> dict[tuple[str, str], IdempotencyRow]:
        """The project's stored idempotency keys, expired ones included."""
        return {(s, k): row for (p, s, k), row in self.tables.keys.items() if p == project_id}

    def wait_cursors_of(self, project_id: str) -> dict[tuple[str, str], int]:
        return {(s, k): c for (p, s, k), c in self.tables.wait_cursors.items() if p == project_id}

    # -- the backend --

    def open(self) -> None:
        self.opened = True
        self.opens += 1

    def close(self) -> None:
        self.opened = False

    def apply(self, writes: list[Any], reads: list[Any]) -> tuple[list[Any], list[Any]]:
        if not self.opened:
            raise BackendCrash("the memory store is not open")
        for request in (*writes, *reads):
            self.seen[type(request)] += 1
        armed = self._fired(self._crash_before, writes + reads)
        if armed is not None:
            raise armed.error or BackendCrash("crashed before the commit (injected)")
        write_outcomes = self._commit(writes) if writes else []
        armed = self._fired(self._crash_after, writes + reads)
        if armed is not None:
            raise armed.error or BackendCrash("crashed after the commit (injected)")
        read_outcomes: list[Any] = []
        for read in reads:
            armed = self._fired(self._read_faults, [read])
            if armed is not None:
                read_outcomes.append(armed.error or ReadFailed("read failed: injected", transient=True))
                continue
            try:
                read_outcomes.append(self._read(read))
            except Exception as exc:  # any: that read's answer, as SQLite's backend does
                read_outcomes.append(ReadFailed(f"read failed: {type(exc).__name__}: {exc}"))
        return write_outcomes, read_outcomes

    def _commit(self, writes: list[Any]) -> list[Any]:
        self.commits += 1
        doomed = self._fired(self._commit_faults, writes) is not None
        saved = copy.deepcopy(self.tables) if doomed else None
        outcomes: list[Any] = []
        for write in writes:
            armed = self._fired(self._write_faults, [write])
            if armed is not None:
                outcomes.append(armed.error or WriteRejected("write rejected: injected", transient=True))
                continue
            try:
                self._write(write)
            except Exception as exc:  # that write only: nothing of it was applied
                outcomes.append(WriteRejected(f"write rejected: {type(exc).__name__}: {exc}"))
            else:
                outcomes.append(None)
        if saved is not None:
            self.tables = saved  # the transaction is rolled back whole
            failure = CommitFailed("commit failed: injected", transient=True)
            return [o if isinstance(o, StoreError) else failure for o in outcomes]
        return outcomes

    # -- writes: check everything first, then change the tables --

    def _write(self, write: Any) -> None:
        t = self.tables
        if isinstance(write, AppendBatch):
            _check_integer(write.last_cursor, write.trim_below,
                           *(e.cursor for e in write.events))
            ids = [r.id for r in write.results]
            if len(set(ids)) != len(ids) or any(i in t.result_ids for i in ids):
                raise StoreError("UNIQUE constraint failed: results.id")
            keys = [(e.project_id, e.cursor) for e in write.events]
            if len(set(keys)) != len(keys) or any(k in t.events for k in keys):
                raise StoreError("UNIQUE constraint failed: events.project_id, events.cursor")
            for row in write.results:
                t.results[t.next_seq] = row
                t.result_ids[row.id] = t.next_seq
                t.next_seq += 1
            for e in write.events:
                t.events[(e.project_id, e.cursor)] = (e.event_type, e.expires_at, e.body)
            t.projects[write.project_id] = max(t.projects.get(write.project_id, write.last_cursor),
                                               write.last_cursor)
            if write.trim_below:
                for key in [k for k in t.events if k[0] == write.project_id and k[1] < write.trim_below]:
                    del t.events[key]
            for k in write.keys:
                # an expired key not yet purged is reused: the new write takes it over
                t.keys[(write.project_id, k.sub, k.key)] = k
        elif isinstance(write, SaveWaitCursor):
            _check_integer(write.cursor)
            position = (write.project_id, write.sub, write.wait_key)
            t.wait_cursors[position] = max(t.wait_cursors.get(position, write.cursor), write.cursor)
        elif isinstance(write, PurgeExpired):
            for key in [k for k, v in t.events.items() if v[1] <= write.now]:
                del t.events[key]
            for scope in [s for s, row in t.keys.items() if row.expires_at <= write.now]:
                del t.keys[scope]
        elif isinstance(write, SaveAgent):
            agent, old = write.row, t.agents.get(write.row.agent_id)
            if agent.spawn_key is not None and any(
                a.project_id == agent.project_id and a.spawn_key == agent.spawn_key
                and a.agent_id != agent.agent_id for a in t.agents.values()
            ):
                raise StoreError("UNIQUE constraint failed: agents.project_id, agents.spawn_key")
            if old is not None:
                agent = AgentRow(
                    agent.agent_id, agent.project_id, agent.state, old.seq, agent.updated_at,
                    agent.body, old.spawn_key or agent.spawn_key, old.answer or agent.answer,
                )
            t.agents[agent.agent_id] = agent
        else:
            raise TypeError(f"not a store write: {write!r}")

    # -- reads --

    def _read(self, read: Any) -> Any:
        t = self.tables
        if isinstance(read, GetResult):
            seq = t.result_ids.get(read.result_id)
            row = t.results.get(seq) if seq is not None else None
            return row.body if row is not None and row.project_id == read.project_id else None
        if isinstance(read, QueryResults):
            return self._query(read)
        if isinstance(read, LoadProject):
            _check_integer(read.max_events)
            mine = sorted(
                (cursor, body) for (project, cursor), (_, expires_at, body) in t.events.items()
                if project == read.project_id and expires_at > read.now
            )
            if read.max_events >= 0:  # SQLite: a negative LIMIT is none
                mine = mine[len(mine) - read.max_events:] if read.max_events else []
            return ProjectSnapshot(
                last_cursor=t.projects.get(read.project_id, 0),
                events=[body for _, body in mine],
                wait_cursors=self.wait_cursors_of(read.project_id),
            )
        if isinstance(read, LookupKeys):
            found: dict[tuple[str, str], IdempotencyRow] = {}
            for sub, key in read.scopes:
                kept = t.keys.get((read.project_id, sub, key))
                if kept is not None and kept.expires_at > read.now:
                    found[(sub, key)] = kept
            return found
        if isinstance(read, HighWater):
            return t.projects.get(read.project_id, 0)
        if isinstance(read, StoreCounts):
            return {"results": len(t.results), "events": len(t.events), "projects": len(t.projects)}
        if isinstance(read, AgentSeq):
            return max((a.seq for a in t.agents.values()), default=0)
        if isinstance(read, GetAgent):
            agent = t.agents.get(read.agent_id)
            return agent if agent is not None and agent.project_id == read.project_id else None
        if isinstance(read, FindSpawn):
            return next((a for a in t.agents.values()
                         if a.project_id == read.project_id and a.spawn_key == read.spawn_key), None)
        if isinstance(read, ListAgents):
            rows = sorted((a for a in t.agents.values() if a.project_id == read.project_id
                           and (read.state is None or a.state == read.state)),
                          key=lambda a: a.seq, reverse=True)
            return rows[: read.limit]
        if isinstance(read, LiveAgents):
            return sorted((a for a in t.agents.values() if a.state in LIVE_AGENT_STATES),
                          key=lambda a: a.seq)[: read.limit]
        raise TypeError(f"not a store read: {read!r}")

    def _query(self, read: QueryResults) -> list[tuple[int, bytes]]:
        _check_integer(read.limit, *(() if read.before_seq is None else (read.before_seq,)))
        out: list[tuple[int, bytes]] = []
        limit = read.limit if read.limit >= 0 else len(self.tables.results)  # SQLite: negative is none
        needle = read.q.lower() if read.q else None
        if needle is not None:
            needle.encode("utf-8")  # a lone surrogate cannot be bound, as in SQLite
        for seq in sorted(self.tables.results, reverse=True):
            row = self.tables.results[seq]
            if read.before_seq is not None and seq >= read.before_seq:
                continue
            if any(
                wanted is not None and getattr(row, column) != wanted
                for column, wanted in (("project_id", read.project_id), ("issue_id", read.issue_id),
                                       ("agent_type", read.agent_type), ("agent_id", read.agent_id),
                                       ("status", read.status))
            ):
                continue
            if read.since is not None and row.stored_at < read.since:
                continue
            if read.until is not None and row.stored_at > read.until:
                continue
            if needle is not None and needle not in row.body.decode("utf-8", "replace").lower():
                continue
            if len(out) >= limit:
                break
            out.append((seq, row.body))
        return out


def _check_integer(*values: int) -> None:
    """SQLite's driver refuses integers that do not fit 64 bits: so does this backend."""
    for value in values:
        if not -(2**63) <= value < 2**63:
            raise OverflowError("Python int too large to convert to SQLite INTEGER")
