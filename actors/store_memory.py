"""A store backend in memory: the SQLite backend's contract without a file or a thread.

For tests of the actors on ``MockClock(autojump_threshold=0)``: the store actor runs it inline
(``blocking = False``), so no worker thread makes the clock jump while a commit is in flight.
Durable only as long as the object lives (a test may keep it across restarts of the actors).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .store import (
    LIVE_AGENT_STATES,
    AgentRow,
    AgentSeq,
    AppendBatch,
    FindSpawn,
    GetAgent,
    GetResult,
    ListAgents,
    LiveAgents,
    LoadProject,
    ProjectSnapshot,
    PurgeExpired,
    QueryResults,
    ResultRow,
    SaveAgent,
    SaveWaitCursor,
    StoreCounts,
    StoreError,
)

__all__ = ["MemoryBackend"]


@dataclass
class _Tables:
    #: seq -> row; seq grows like SQLite's AUTOINCREMENT
    results: dict[int, ResultRow] = field(default_factory=dict)
    result_ids: dict[str, int] = field(default_factory=dict)
    #: (project, cursor) -> (event_type, expires_at, body)
    events: dict[tuple[str, int], tuple[str, float, bytes]] = field(default_factory=dict)
    projects: dict[str, int] = field(default_factory=dict)
    wait_cursors: dict[tuple[str, str, str], int] = field(default_factory=dict)
    next_seq: int = 1
    #: agent_id -> row (spawned agents)
    agents: dict[str, AgentRow] = field(default_factory=dict)


class MemoryBackend:
    """Same writes, reads and outcomes as :class:`SQLiteBackend`: a write fails alone (nothing
    of it applied), reads see every write of the same call.

    ``fail_writes`` / ``fail_reads`` let a test make the next calls fail: each entry is an
    exception raised for the next write (or read) of a matching type.
    """

    #: run by the store actor on its own task, not on a worker thread
    blocking = False

    def __init__(self) -> None:
        self.tables = _Tables()
        self.opened = False
        self.fail_writes: list[tuple[type, Exception]] = []
        self.fail_reads: list[tuple[type, Exception]] = []

    def open(self) -> None:
        self.opened = True

    def close(self) -> None:
        self.opened = False

    def apply(self, writes: list[Any], reads: list[Any]) -> tuple[list[Any], list[Any]]:
        if not self.opened:
            raise StoreError("the memory store is not open")
        write_outcomes: list[Any] = []
        for write in writes:
            try:
                self._injected(self.fail_writes, write)
                self._write(write)
            except Exception as exc:  # that write only: nothing of it was applied
                write_outcomes.append(StoreError(f"write rejected: {type(exc).__name__}: {exc}"))
            else:
                write_outcomes.append(None)
        read_outcomes: list[Any] = []
        for read in reads:
            try:
                self._injected(self.fail_reads, read)
                read_outcomes.append(self._read(read))
            except Exception as exc:
                read_outcomes.append(StoreError(f"read failed: {type(exc).__name__}: {exc}"))
        return write_outcomes, read_outcomes

    @staticmethod
    def _injected(failures: list[tuple[type, Exception]], request: Any) -> None:
        for i, (kind, exc) in enumerate(failures):
            if isinstance(request, kind):
                del failures[i]
                raise exc

    # -- writes: check everything first, then change the tables --

    def _write(self, write: Any) -> None:
        t = self.tables
        if isinstance(write, AppendBatch):
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
            t.projects[write.project_id] = max(t.projects.get(write.project_id, 0), write.last_cursor)
            if write.trim_below:
                for key in [k for k in t.events if k[0] == write.project_id and k[1] < write.trim_below]:
                    del t.events[key]
        elif isinstance(write, SaveWaitCursor):
            position = (write.project_id, write.sub, write.wait_key)
            t.wait_cursors[position] = max(t.wait_cursors.get(position, write.cursor), write.cursor)
        elif isinstance(write, PurgeExpired):
            for key in [k for k, v in t.events.items() if v[1] <= write.now]:
                del t.events[key]
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
            mine = sorted(
                (cursor, body) for (project, cursor), (_, expires_at, body) in t.events.items()
                if project == read.project_id and expires_at > read.now
            )[-read.max_events:] if read.max_events > 0 else []
            return ProjectSnapshot(
                last_cursor=t.projects.get(read.project_id, 0),
                events=[body for _, body in mine],
                wait_cursors={(s, k): c for (p, s, k), c in t.wait_cursors.items() if p == read.project_id},
            )
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
        if read.before_seq is not None and not -(2**63) <= read.before_seq < 2**63:
            raise OverflowError("Python int too large to convert to SQLite INTEGER")
        out: list[tuple[int, bytes]] = []
        needle = read.q.lower() if read.q else None
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
            out.append((seq, row.body))
            if len(out) >= read.limit:
                break
        return out
