"""The durable store: a narrow backend interface, its SQLite implementation, and the store actor.

The store actor is the only writer. It takes every request waiting in its mailbox at once and
runs them in one backend call (on a worker thread, or inline for a backend that never blocks):
all writes in one transaction (one savepoint each, so a bad write fails alone), then the
reads, which therefore see every write queued before them.
A write is acknowledged only after its transaction has committed.

No request can crash the store: any exception of one write is that write's answer
(:class:`WriteRejected`, rolled back alone), of one read that read's (:class:`ReadFailed`), and
a transaction that does not commit fails each of its writes (:class:`CommitFailed`). A
:class:`StoreError` answer to a write always means *not stored*. Only a fault of the database
connection itself (a rollback that fails) crashes the actor, and then its callers get
``ActorCrashed``: outcome unknown.
"""

from __future__ import annotations

import os
import sqlite3
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NamedTuple, Protocol, TypeVar

import trio

from .errors import CommitFailed, ReadFailed, StoreError, WriteRejected
from .runtime import Actor, ActorCrashed, Call, WorkerThread

__all__ = [
    "LIVE_AGENT_STATES",
    "AgentRow",
    "AgentSeq",
    "AppendBatch",
    "CommitLane",
    "DiskFaults",
    "FindSpawn",
    "GetAgent",
    "ListAgents",
    "LiveAgents",
    "SaveAgent",
    "CommitFailed",
    "EventRow",
    "GetResult",
    "HighWater",
    "IdempotencyRow",
    "LoadProject",
    "LookupKeys",
    "ProjectSnapshot",
    "PurgeExpired",
    "QueryResults",
    "ReadFailed",
    "ResultRow",
    "SQLiteBackend",
    "SaveWaitCursor",
    "StoreActor",
    "StoreBackend",
    "StoreCounts",
    "StoreError",
    "WriteRejected",
]

T = TypeVar("T")

SCHEMA_VERSION = 3

# Each entry migrates from version i to i + 1; never edit a released entry, append a new one.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE projects (
        project_id   TEXT PRIMARY KEY,
        last_cursor  INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE results (
        seq         INTEGER PRIMARY KEY AUTOINCREMENT,
        id          TEXT NOT NULL UNIQUE,
        project_id  TEXT NOT NULL,
        issue_id    TEXT NOT NULL,
        agent_type  TEXT NOT NULL,
        agent_id    TEXT NOT NULL,
        status      TEXT NOT NULL,
        stored_at   TEXT NOT NULL,
        body        BLOB NOT NULL
    );
    CREATE INDEX results_by_project ON results (project_id, seq);
    CREATE INDEX results_by_issue ON results (project_id, issue_id, seq);
    CREATE TABLE events (
        project_id  TEXT NOT NULL,
        cursor      INTEGER NOT NULL,
        event_type  TEXT NOT NULL,
        expires_at  REAL NOT NULL,
        body        BLOB NOT NULL,
        PRIMARY KEY (project_id, cursor)
    ) WITHOUT ROWID;
    CREATE INDEX events_by_expiry ON events (expires_at);
    CREATE TABLE wait_cursors (
        project_id  TEXT NOT NULL,
        sub         TEXT NOT NULL,
        wait_key    TEXT NOT NULL,
        cursor      INTEGER NOT NULL,
        PRIMARY KEY (project_id, sub, wait_key)
    ) WITHOUT ROWID;
    CREATE TABLE agents (
        agent_id    TEXT PRIMARY KEY,
        project_id  TEXT NOT NULL,
        body        BLOB NOT NULL,
        updated_at  TEXT NOT NULL
    );
    """,
    # 2: idempotency keys, committed with the write they guard; purged after their window
    """
    CREATE TABLE idempotency (
        project_id   TEXT NOT NULL,
        sub          TEXT NOT NULL,
        key          TEXT NOT NULL,
        fingerprint  BLOB NOT NULL,
        answer       BLOB NOT NULL,
        expires_at   REAL NOT NULL,
        PRIMARY KEY (project_id, sub, key)
    ) WITHOUT ROWID;
    CREATE INDEX idempotency_by_expiry ON idempotency (expires_at);
    """,
    # 3: spawned agents: their state (to find those left running by a crash), the spawn's
    # idempotency scope and its original answer
    """
    ALTER TABLE agents ADD COLUMN state TEXT NOT NULL DEFAULT 'starting';
    ALTER TABLE agents ADD COLUMN spawn_key TEXT;
    ALTER TABLE agents ADD COLUMN answer BLOB;
    ALTER TABLE agents ADD COLUMN seq INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX agents_by_project ON agents (project_id, seq);
    CREATE INDEX agents_by_state ON agents (state);
    CREATE UNIQUE INDEX agents_by_spawn_key ON agents (project_id, spawn_key)
        WHERE spawn_key IS NOT NULL;
    """,
]


# -- rows and requests (small frozen messages) --


class ResultRow(NamedTuple):
    """A stored result. A named tuple, in the order of the results table's insert: cheaper
    to make than a frozen dataclass (two per durable result), and bound as it is."""

    id: str
    project_id: str
    issue_id: str
    agent_type: str
    agent_id: str
    status: str
    stored_at: str
    body: bytes


class EventRow(NamedTuple):
    """A stored event; a named tuple in the order of the events table's insert."""

    project_id: str
    cursor: int
    event_type: str
    expires_at: float
    body: bytes


@dataclass(frozen=True, slots=True)
class IdempotencyRow:
    """An idempotency key and the encoded answer of the write it guards."""

    sub: str
    key: str
    fingerprint: bytes
    answer: bytes
    expires_at: float


@dataclass(frozen=True, slots=True)
class AppendBatch:
    """Results and events of one project, committed together or not at all.

    ``last_cursor`` is recorded as the project's high-water mark, so cursors are never
    reused even after every event has expired. ``trim_below`` drops the project's events
    with a smaller cursor (retention cap).
    """

    project_id: str
    last_cursor: int
    results: tuple[ResultRow, ...] = ()
    events: tuple[EventRow, ...] = ()
    trim_below: int = 0
    #: keys of the keyed writes in it: recorded if and only if the batch commits
    keys: tuple[IdempotencyRow, ...] = ()


@dataclass(frozen=True, slots=True)
class SaveWaitCursor:
    project_id: str
    sub: str
    wait_key: str
    cursor: int


@dataclass(frozen=True, slots=True)
class GetResult:
    project_id: str
    result_id: str


@dataclass(frozen=True, slots=True)
class QueryResults:
    """Newest first. ``before_seq`` pages; ``q`` is a case-insensitive substring of the body."""

    project_id: str | None  # None: every project (admin)
    issue_id: str | None = None
    agent_type: str | None = None
    agent_id: str | None = None
    status: str | None = None
    since: str | None = None
    until: str | None = None
    q: str | None = None
    limit: int = 50
    before_seq: int | None = None


@dataclass(frozen=True, slots=True)
class LoadProject:
    project_id: str
    now: float
    max_events: int


@dataclass(frozen=True, slots=True)
class LookupKeys:
    """Answers ``{(sub, key): IdempotencyRow}`` for the keys stored and not expired at ``now``."""

    project_id: str
    scopes: tuple[tuple[str, str], ...]
    now: float


@dataclass(frozen=True, slots=True)
class HighWater:
    """Answers the project's stored high-water cursor (0 if none): an append whose
    ``last_cursor`` is at or below it has committed."""

    project_id: str


@dataclass(frozen=True, slots=True)
class ProjectSnapshot:
    last_cursor: int
    events: list[bytes]
    wait_cursors: dict[tuple[str, str], int] = field(default_factory=dict)


@dataclass(frozen=True, slots=True)
class PurgeExpired:
    now: float


@dataclass(frozen=True, slots=True)
class StoreCounts:
    pass


# -- spawned agents --

#: States in which an agent's process may be alive (or about to be): the ones to look for
#: after a crash of the server.
LIVE_AGENT_STATES = ("starting", "running", "stalled")


@dataclass(frozen=True, slots=True)
class AgentRow:
    """One spawned agent's record (``body``: its JSON), written whole on every change.

    ``seq`` orders a project's agents by spawn (newest last); ``spawn_key`` is the spawn's
    idempotency scope (``sub`` NUL ``key``), unique per project; ``answer`` the encoded
    original spawn answer, once there is one.
    """

    agent_id: str
    project_id: str
    state: str
    seq: int
    updated_at: str
    body: bytes
    spawn_key: str | None = None
    answer: bytes | None = None


@dataclass(frozen=True, slots=True)
class SaveAgent:
    """Insert or replace an agent's record; the spawn key and answer, once set, are kept."""

    row: AgentRow


@dataclass(frozen=True, slots=True)
class GetAgent:
    """Answers the :class:`AgentRow` of that agent in that project, or None."""

    project_id: str
    agent_id: str


@dataclass(frozen=True, slots=True)
class ListAgents:
    """Answers a project's :class:`AgentRow` s, newest spawn first, at most ``limit``."""

    project_id: str
    state: str | None = None
    limit: int = 1000


@dataclass(frozen=True, slots=True)
class LiveAgents:
    """Answers every :class:`AgentRow` (all projects) recorded in a live state."""

    limit: int = 100_000


@dataclass(frozen=True, slots=True)
class FindSpawn:
    """Answers the :class:`AgentRow` spawned with this idempotency scope, or None."""

    project_id: str
    spawn_key: str


@dataclass(frozen=True, slots=True)
class AgentSeq:
    """Answers the highest ``seq`` of any agent (0 if none)."""


class StoreBackend(Protocol):
    """What the store actor needs from a database. Synchronous: it runs in a worker thread,
    unless its class says ``blocking = False`` (then on the store actor's own task).

    Kept narrow so that another database (PostgreSQL for several hosts) can stand in
    without touching any actor.
    """

    def open(self) -> None: ...
    def close(self) -> None: ...
    def apply(self, writes: list[Any], reads: list[Any]) -> tuple[list[Any], list[Any]]:
        """Commit ``writes`` in one transaction, then answer ``reads``.

        Returns one outcome per write (None, or a :class:`StoreError` meaning *not stored*)
        and one per read (a value or a :class:`StoreError`), in order. Must not raise for
        anything one request contains; raising means the backend itself is broken (the
        store actor crashes and is restarted).
        """
        ...


class DiskFaults:
    """Disk trouble on demand, for fault injection: while ``mode`` is ``"full"`` or
    ``"read_only"`` every transaction of the backend that holds it fails as SQLite fails on a
    full or read-only disk (a transient :class:`CommitFailed`: not stored, answered 503);
    ``None`` is a healthy disk again. Set by the server's edge, read by the store's thread
    (one attribute, replaced whole); it outlives the store's restarts."""

    MODES = {
        "full": "database or disk is full",
        "read_only": "attempt to write a readonly database",
    }

    def __init__(self) -> None:
        self.mode: str | None = None

    def set(self, mode: str | None) -> None:
        if mode is not None and mode not in self.MODES:
            raise ValueError(f"unknown disk fault {mode!r}")
        self.mode = mode

    def check(self) -> None:
        mode = self.mode
        if mode is not None:
            raise sqlite3.OperationalError(self.MODES[mode])


class SQLiteBackend:
    """SQLite in WAL mode, run on the store actor's worker thread. ``synchronous`` is NORMAL
    (a commit survives a crash or SIGKILL of the process; an OS crash may lose the last
    instants) or FULL (fsync per commit). ``disk`` simulates a full or read-only disk."""

    #: its calls block: the store actor runs them on its worker thread
    blocking = True

    def __init__(self, path: Path, synchronous: str = "NORMAL", disk: DiskFaults | None = None) -> None:
        self.path = Path(path)
        self.synchronous = synchronous
        self.disk = disk or DiskFaults()
        self.db: sqlite3.Connection | None = None

    def open(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        db.execute("PRAGMA journal_mode=WAL")
        db.execute(f"PRAGMA synchronous={self.synchronous}")
        db.execute("PRAGMA foreign_keys=ON")
        db.execute("PRAGMA busy_timeout=5000")
        version = db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise StoreError(
                f"{self.path} has schema version {version}, newer than this release "
                f"({SCHEMA_VERSION}); upgrade orchestra-sidecar"
            )
        for target in range(version + 1, SCHEMA_VERSION + 1):
            db.execute("BEGIN IMMEDIATE")
            try:
                for statement in MIGRATIONS[target - 1].split(";"):
                    if statement.strip():
                        db.execute(statement)
                db.execute(f"PRAGMA user_version={target}")
                db.execute("COMMIT")
            except BaseException:
                db.execute("ROLLBACK")
                raise
        self.db = db

    def close(self) -> None:
        if self.db is not None:
            self.db.close()
            self.db = None

    def release(self) -> Callable[[], None] | None:
        """Hand over the open connection's closing (None if none is open) and forget it: what
        an incarnation that crashed runs on its thread once that thread is done with it."""
        db, self.db = self.db, None
        return db.close if db is not None else None

    def apply(self, writes: list[Any], reads: list[Any]) -> tuple[list[Any], list[Any]]:
        db = self.db
        assert db is not None
        write_outcomes = self._commit(db, writes) if writes else []
        read_outcomes: list[Any] = []
        for read in reads:
            try:
                read_outcomes.append(self._read(db, read))
            except Exception as exc:  # any: a value the driver cannot bind is not a crash
                read_outcomes.append(ReadFailed(f"read failed: {_why(exc)}", transient=_transient(exc)))
        return write_outcomes, read_outcomes

    def _commit(self, db: sqlite3.Connection, writes: list[Any]) -> list[Any]:
        outcomes: list[Any] = []
        try:
            self.disk.check()
            db.execute("BEGIN IMMEDIATE")
            for write in writes:
                db.execute("SAVEPOINT w")
                try:
                    self._write(db, write)
                except Exception as exc:  # any: this write's error, not the transaction's
                    db.execute("ROLLBACK TO w")
                    outcomes.append(
                        WriteRejected(f"write rejected: {_why(exc)}", transient=_transient(exc))
                    )
                else:
                    outcomes.append(None)
                db.execute("RELEASE w")
            db.execute("COMMIT")
        except Exception as exc:
            # Nothing of this transaction is stored. A rollback that fails leaves the
            # connection in doubt: that raises (the actor crashes and reopens the database).
            if db.in_transaction:
                db.execute("ROLLBACK")
            failure = CommitFailed(f"commit failed: {_why(exc)}", transient=_transient(exc))
            return [
                outcome if isinstance(outcome, WriteRejected) else failure
                for outcome in outcomes + [None] * (len(writes) - len(outcomes))
            ]
        return outcomes

    # -- writes --

    def _write(self, db: sqlite3.Connection, write: Any) -> None:
        if isinstance(write, AppendBatch):
            if write.results:
                _insert(db, _RESULTS_INSERT, write.results)
            if write.events:
                _insert(db, _EVENTS_INSERT, write.events)
            db.execute(
                "INSERT INTO projects (project_id, last_cursor) VALUES (?, ?)"
                " ON CONFLICT (project_id) DO UPDATE SET"
                " last_cursor = max(last_cursor, excluded.last_cursor)",
                (write.project_id, write.last_cursor),
            )
            if write.trim_below:
                db.execute(
                    "DELETE FROM events WHERE project_id = ? AND cursor < ?",
                    (write.project_id, write.trim_below),
                )
            if write.keys:
                # an expired key not yet purged is reused: the new write takes it over
                db.executemany(
                    "INSERT OR REPLACE INTO idempotency (project_id, sub, key, fingerprint, answer,"
                    " expires_at) VALUES (?, ?, ?, ?, ?, ?)",
                    [(write.project_id, k.sub, k.key, k.fingerprint, k.answer, k.expires_at)
                     for k in write.keys],
                )
        elif isinstance(write, SaveWaitCursor):
            db.execute(
                "INSERT INTO wait_cursors (project_id, sub, wait_key, cursor) VALUES (?, ?, ?, ?)"
                " ON CONFLICT DO UPDATE SET cursor = max(cursor, excluded.cursor)",
                (write.project_id, write.sub, write.wait_key, write.cursor),
            )
        elif isinstance(write, PurgeExpired):
            db.execute("DELETE FROM events WHERE expires_at <= ?", (write.now,))
            db.execute("DELETE FROM idempotency WHERE expires_at <= ?", (write.now,))
        elif isinstance(write, SaveAgent):
            r = write.row
            db.execute(
                "INSERT INTO agents (agent_id, project_id, body, updated_at, state, spawn_key,"
                " answer, seq) VALUES (?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT (agent_id) DO UPDATE SET"
                " body = excluded.body, updated_at = excluded.updated_at, state = excluded.state,"
                " spawn_key = coalesce(agents.spawn_key, excluded.spawn_key),"
                " answer = coalesce(agents.answer, excluded.answer)",
                (r.agent_id, r.project_id, r.body, r.updated_at, r.state, r.spawn_key, r.answer,
                 r.seq),
            )
        else:
            raise TypeError(f"not a store write: {write!r}")

    # -- reads --

    def _read(self, db: sqlite3.Connection, read: Any) -> Any:
        if isinstance(read, GetResult):
            row = db.execute(
                "SELECT body FROM results WHERE id = ? AND project_id = ?",
                (read.result_id, read.project_id),
            ).fetchone()
            return row[0] if row else None
        if isinstance(read, QueryResults):
            return self._query(db, read)
        if isinstance(read, LoadProject):
            row = db.execute(
                "SELECT last_cursor FROM projects WHERE project_id = ?", (read.project_id,)
            ).fetchone()
            events = db.execute(
                "SELECT body FROM (SELECT cursor, body FROM events"
                " WHERE project_id = ? AND expires_at > ? ORDER BY cursor DESC LIMIT ?)"
                " ORDER BY cursor",
                (read.project_id, read.now, read.max_events),
            ).fetchall()
            waits = db.execute(
                "SELECT sub, wait_key, cursor FROM wait_cursors WHERE project_id = ?",
                (read.project_id,),
            ).fetchall()
            return ProjectSnapshot(
                last_cursor=row[0] if row else 0,
                events=[e[0] for e in events],
                wait_cursors={(s, k): c for s, k, c in waits},
            )
        if isinstance(read, LookupKeys):
            found: dict[tuple[str, str], IdempotencyRow] = {}
            for sub, key in read.scopes:
                row = db.execute(
                    "SELECT fingerprint, answer, expires_at FROM idempotency"
                    " WHERE project_id = ? AND sub = ? AND key = ? AND expires_at > ?",
                    (read.project_id, sub, key, read.now),
                ).fetchone()
                if row is not None:
                    found[(sub, key)] = IdempotencyRow(sub, key, row[0], row[1], row[2])
            return found
        if isinstance(read, HighWater):
            row = db.execute(
                "SELECT last_cursor FROM projects WHERE project_id = ?", (read.project_id,)
            ).fetchone()
            return row[0] if row else 0
        if isinstance(read, StoreCounts):
            results = db.execute("SELECT count(*) FROM results").fetchone()[0]
            events = db.execute("SELECT count(*) FROM events").fetchone()[0]
            projects = db.execute("SELECT count(*) FROM projects").fetchone()[0]
            return {"results": results, "events": events, "projects": projects}
        if isinstance(read, GetAgent | ListAgents | LiveAgents | FindSpawn | AgentSeq):
            return self._agents(db, read)
        raise TypeError(f"not a store read: {read!r}")

    _AGENT_COLUMNS = "agent_id, project_id, state, seq, updated_at, body, spawn_key, answer"

    def _agents(self, db: sqlite3.Connection, read: Any) -> Any:
        cols = self._AGENT_COLUMNS
        if isinstance(read, AgentSeq):
            return db.execute("SELECT coalesce(max(seq), 0) FROM agents").fetchone()[0]
        if isinstance(read, GetAgent):
            row = db.execute(
                f"SELECT {cols} FROM agents WHERE agent_id = ? AND project_id = ?",
                (read.agent_id, read.project_id),
            ).fetchone()
            return AgentRow(*row) if row else None
        if isinstance(read, FindSpawn):
            row = db.execute(
                f"SELECT {cols} FROM agents WHERE project_id = ? AND spawn_key = ?",
                (read.project_id, read.spawn_key),
            ).fetchone()
            return AgentRow(*row) if row else None
        if isinstance(read, ListAgents):
            if read.state is None:
                rows = db.execute(
                    f"SELECT {cols} FROM agents WHERE project_id = ? ORDER BY seq DESC LIMIT ?",
                    (read.project_id, read.limit),
                ).fetchall()
            else:
                rows = db.execute(
                    f"SELECT {cols} FROM agents WHERE project_id = ? AND state = ?"
                    " ORDER BY seq DESC LIMIT ?",
                    (read.project_id, read.state, read.limit),
                ).fetchall()
            return [AgentRow(*r) for r in rows]
        marks = ", ".join("?" for _ in LIVE_AGENT_STATES)
        rows = db.execute(
            f"SELECT {cols} FROM agents WHERE state IN ({marks}) ORDER BY seq LIMIT ?",
            (*LIVE_AGENT_STATES, read.limit),
        ).fetchall()
        return [AgentRow(*r) for r in rows]

    def _query(self, db: sqlite3.Connection, read: QueryResults) -> list[tuple[int, bytes]]:
        where, args = result_filters(read, "?", "instr(lower(CAST(body AS TEXT)), ?) > 0")
        args.append(read.limit)
        return db.execute(
            f"SELECT seq, body FROM results{where} ORDER BY seq DESC LIMIT ?", args
        ).fetchall()


def result_filters(read: QueryResults, mark: str, contains: str,
                   seq_mark: str | None = None) -> tuple[str, list[Any]]:
    """The WHERE clause (empty, or starting with a space) and its arguments of a results
    query, in a SQL backend's dialect: ``mark`` is its placeholder, ``contains`` its clause
    that holds when the body holds the lowered ``q`` (one placeholder), ``seq_mark`` the
    placeholder of a seq (``mark`` unless given)."""
    clauses: list[str] = []
    args: list[Any] = []
    for column in ("project_id", "issue_id", "agent_type", "agent_id", "status"):
        value = getattr(read, column)
        if value is not None:
            clauses.append(f"{column} = {mark}")
            args.append(value)
    if read.since is not None:
        clauses.append(f"stored_at >= {mark}")
        args.append(read.since)
    if read.until is not None:
        clauses.append(f"stored_at <= {mark}")
        args.append(read.until)
    if read.q:
        clauses.append(contains)
        args.append(read.q.lower())
    if read.before_seq is not None:
        clauses.append(f"seq < {seq_mark or mark}")
        args.append(read.before_seq)
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), args


class _Insert:
    """An INSERT of rows given as tuples in its columns' order: as one statement for a row
    and as one for ``_CHUNK`` rows (so both stay in the connection's statement cache)."""

    __slots__ = ("one", "chunk")

    def __init__(self, head: str, width: int) -> None:
        row = "(" + ", ".join("?" * width) + ")"
        self.one = f"{head} VALUES {row}"
        self.chunk = f"{head} VALUES " + ", ".join([row] * _CHUNK)


#: rows per multi-row INSERT: 64 x 8 columns stays under SQLite's oldest bound of 999 variables
_CHUNK = 64
_RESULTS_INSERT = _Insert(
    "INSERT INTO results (id, project_id, issue_id, agent_type, agent_id, status, stored_at, body)", 8)
_EVENTS_INSERT = _Insert("INSERT INTO events (project_id, cursor, event_type, expires_at, body)", 5)


def _insert(db: sqlite3.Connection, insert: _Insert, rows: tuple[tuple[Any, ...], ...]) -> None:
    """Insert ``rows``, ``_CHUNK`` per statement: one step (and one release of the GIL) per
    chunk rather than per row; 12-13 us of the store thread's CPU per stored result against
    15-17 us with a statement per row (a result and its event, groups of 200-2,000)."""
    full = len(rows) - len(rows) % _CHUNK
    for start in range(0, full, _CHUNK):
        db.execute(insert.chunk, [value for row in rows[start:start + _CHUNK] for value in row])
    if full < len(rows):
        db.executemany(insert.one, rows[full:])


def _why(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _transient(exc: BaseException) -> bool:
    """Errors of the database's state (busy, locked, full, I/O), not of the request."""
    return isinstance(exc, sqlite3.OperationalError)


_WRITES = (AppendBatch, SaveWaitCursor, PurgeExpired, SaveAgent)


class _LaneDone:
    """Cast by a :class:`CommitLane` to its store: a group of appends that committed while
    the store's ``next_write`` crash point was armed, or whose backend call raised. The store
    crashes on it as it would have in :meth:`StoreActor.handle_batch`, failing those calls
    with ``ActorCrashed``."""

    __slots__ = ("calls", "outcomes", "error")

    def __init__(self, calls: list[Call], outcomes: list[Any] | None, error: BaseException | None) -> None:
        self.calls = calls
        self.outcomes = outcomes
        self.error = error


class CommitLane:
    """The store's direct lane for appends (:class:`AppendBatch` and the like): the caller
    hands its append to the store's worker thread, which commits every append waiting for it
    in one transaction (across projects, as the store actor's group commit does) and answers
    each caller straight back, without the store actor's mailbox and task in between (two
    task hand-offs fewer on every durable write and on publish -> deliver).

    The store actor publishes its lane as its ref's ``view`` for one incarnation; a caller
    that finds none sends its append through the mailbox. What the store actor guarantees,
    the lane keeps: an append is answered only after its transaction has ended (None, or what
    the write answers: committed; a :class:`StoreError`: not stored), or with
    ``ActorCrashed`` (outcome unknown: the caller asks the restarted store). A backend call
    that raises and the ``next_write`` crash point crash the store actor (the group goes to
    its mailbox, see :class:`_LaneDone`); an append still waiting when the incarnation ends is
    not run and is failed with ``ActorCrashed``. Everything here but :meth:`_drain` runs on
    the trio thread.
    """

    #: appends per transaction at most (as the store actor's ``max_batch``)
    max_group = 4096

    def __init__(self, store: StoreActor, thread: WorkerThread) -> None:
        self._store = store
        self._backend = store.backend
        self._thread = thread
        self._token = trio.lowlevel.current_trio_token()
        #: appends handed over, not yet taken by the thread (appended here, popped there)
        self._waiting: deque[Call] = deque()
        self._posted = False
        #: groups sent to the store's mailbox to crash it, not yet failed
        self._routed: list[list[Call]] = []
        #: set when the incarnation ends (or its connection broke): nothing more is run
        self.closed = False
        #: set when the incarnation ends: groups are answered here, never routed
        self._ended = False

    async def commit(self, write: Any) -> Any:
        """Commit ``write`` with whatever else is waiting; its answer as ``ActorRef.call``'s.
        Cancelling the wait abandons the answer, not the write (as with a call)."""
        call = Call(write)
        if self.closed:
            raise ActorCrashed(self._store.ref.name, "stopped before this write was handed over")
        self._waiting.append(call)
        if not self._posted:
            self._posted = True
            try:
                self._thread.post(self._drain)
            except RuntimeError:
                self._waiting.remove(call)
                raise ActorCrashed(self._store.ref.name, "its thread has stopped") from None
        return await call.answer()

    def _drain(self) -> None:
        """On the store's thread: commit what is waiting, a group a transaction."""
        self._posted = False  # an append added from now on posts another drain
        waiting = self._waiting
        while waiting:
            group: list[Call] = []
            while waiting and len(group) < self.max_group:
                group.append(waiting.popleft())
            outcomes: list[Any] | None = None
            error: BaseException | None = None
            if not self.closed:
                try:
                    outcomes, _ = self._backend.apply([c.msg for c in group], [])
                except BaseException as exc:  # the connection is in doubt: the store crashes
                    self.closed = True
                    error = exc
            try:
                self._token.run_sync_soon(self._done, group, outcomes, error)
            except trio.RunFinishedError:
                return

    def _done(self, group: list[Call], outcomes: list[Any] | None, error: BaseException | None) -> None:
        """On the trio thread: answer a group the thread is done with."""
        store = self._store
        if outcomes is not None:
            store.commits += 1
            store.writes += len(group)
        if outcomes is None and error is None:
            self._fail(group, "stopped before this write ran")  # not run
            return
        if self._ended:
            # the incarnation has ended: what ran is answered as it ended
            if outcomes is None:
                self._fail(group, _why(error) if error is not None else "not run")
            else:
                self._answer(group, outcomes)
            return
        if error is not None or "next_write" in store.ref.armed_points:
            if store.ref.try_cast(_LaneDone(group, outcomes, error)):
                self._routed.append(group)
                return
            self.closed = True  # its mailbox is full: no more through the lane
            self._fail(group, "its mailbox was full" if error is None else _why(error))
            return
        assert outcomes is not None
        self._answer(group, outcomes)

    @staticmethod
    def _answer(group: list[Call], outcomes: list[Any]) -> None:
        for call, outcome in zip(group, outcomes, strict=True):
            if isinstance(outcome, StoreError):
                call.fail(outcome)
            else:
                call.reply(outcome)

    def _fail(self, group: list[Call], why: str) -> None:
        error = ActorCrashed(self._store.ref.name, why)
        for call in group:
            call.fail(error)

    def settled(self, done: _LaneDone) -> None:
        """A routed group the store did not crash on (its point was disarmed): answered."""
        if done.calls in self._routed:
            self._routed.remove(done.calls)
        if done.outcomes is not None:
            self._answer(done.calls, done.outcomes)

    def refuse(self) -> None:
        """On the store's thread, in order with its jobs: run nothing handed over later."""
        self.closed = True

    def close(self, why: str = "crashed before answering") -> None:
        """The incarnation ended: run nothing more; fail what was routed and not answered."""
        self.closed = self._ended = True
        routed, self._routed = self._routed, []
        for group in routed:
            self._fail(group, why)


class StoreActor(Actor):
    """The only writer of the durable store; group-commits whatever is waiting.

    Replies to a write only after its transaction committed or rolled back (``None``, or a
    :class:`StoreError`: not stored). A request that fails is answered with its error; the
    actor serves on. Purges expired events every ``purge_interval`` seconds.
    """

    max_batch = 4096

    def __init__(
        self,
        backend: StoreBackend,
        *,
        purge_interval: float = 30.0,
        wall_clock: Any = time.time,
    ) -> None:
        self.backend = backend
        self.purge_interval = purge_interval
        self.wall_clock = wall_clock
        self.commits = 0
        self.writes = 0

    async def on_start(self) -> None:
        # The one thread that touches the database, for this incarnation's lifetime.
        self.thread: WorkerThread | None = None
        self.lane: CommitLane | None = None
        if getattr(type(self.backend), "blocking", True):
            self.thread = WorkerThread("orchestra-store")
        try:
            await self._run(self.backend.open)
        except BaseException:
            self.on_exit()
            raise
        self._next_purge = trio.current_time() + self.purge_interval
        if self.thread is not None:
            # appends may come straight to the thread (see CommitLane), for this incarnation
            self.lane = CommitLane(self, self.thread)
            self.ref.view = self.lane

    async def on_stop(self) -> None:
        # Orderly stop: commit whatever is still queued, then close the database. The thread
        # itself is stopped by on_exit, which runs after this and after a crash alike.
        pending = self.take_queued()
        with trio.move_on_after(5):
            if pending:
                await self.handle_batch(pending)
        if self.lane is not None and self.thread is not None:
            # the lane's appends handed over before this point commit; later ones are not run
            self.thread.post(self.lane.refuse)
        await self._run(self.backend.close)

    def on_exit(self) -> None:
        # After a crash too: the thread ends once the jobs handed to it are done. An orderly
        # stop closed the database; after a crash this incarnation's connection is closed
        # there, last (a backend without ``release`` keeps its own ways).
        lane = getattr(self, "lane", None)
        if lane is not None:
            lane.close()
            self.lane = None
        if self.thread is not None:
            release = getattr(self.backend, "release", None)
            self.thread.stop(then=release() if release is not None else None)
            self.thread = None

    async def _run(self, fn: Callable[[], T]) -> T:
        """``fn()`` on the worker thread, or inline (with a checkpoint) for a non-blocking backend."""
        if self.thread is None:
            await trio.lowlevel.checkpoint()
            return fn()
        return await self.thread.run(fn)

    def next_deadline(self) -> float:
        return self._next_purge

    async def on_timeout(self) -> None:
        self._next_purge = trio.current_time() + self.purge_interval
        await self._apply([PurgeExpired(self.wall_clock())], [])

    async def handle_batch(self, calls: list[Call]) -> None:
        for call in calls:
            done = call.msg
            if isinstance(done, _LaneDone):  # a lane's group: crash as if committed here
                for lane_call in done.calls:
                    self.defer_call(lane_call)  # failed with ActorCrashed by the crash
                if done.error is not None:
                    raise done.error
                self.fault_point("next_write")  # committed, not yet answered
                if self.lane is not None:
                    self.lane.settled(done)
        if any(isinstance(c.msg, _LaneDone) for c in calls):
            calls = [c for c in calls if not isinstance(c.msg, _LaneDone)]
        writes = [c for c in calls if isinstance(c.msg, _WRITES)]
        reads = [c for c in calls if not isinstance(c.msg, _WRITES)]
        write_outcomes, read_outcomes = await self._apply(
            [c.msg for c in writes], [c.msg for c in reads]
        )
        if writes:
            self.fault_point("next_write")  # fault injection: committed, not yet answered
        for call, outcome in zip(writes, write_outcomes, strict=True):
            if isinstance(outcome, StoreError):
                call.fail(outcome)
            else:  # None, or what the write answers (a backend-allocated cursor)
                call.reply(outcome)
        for call, outcome in zip(reads, read_outcomes, strict=True):
            if isinstance(outcome, Exception):
                call.fail(outcome)
            else:
                call.reply(outcome)

    async def _apply(self, writes: list[Any], reads: list[Any]) -> tuple[list[Any], list[Any]]:
        result = await self._run(lambda: self.backend.apply(writes, reads))
        if writes:
            self.commits += 1
            self.writes += len(writes)
        return result


def default_db_path(data_dir: os.PathLike[str] | str) -> Path:
    return Path(data_dir) / "orchestra.db"
