"""A store backend on PostgreSQL: the SQLite backend's contract on a server several processes share.

Chosen by a ``postgresql://`` store URL (``serve --store``). Runs on the store actor's worker
thread with one psycopg 3 connection, as the SQLite backend does: one transaction per group
commit, one savepoint per write (a bad write fails alone), then the reads.

Guarantees beyond the SQLite backend's, for several processes on one database:

* A project's row in ``projects`` is its lock: an append updates it (its last statement), so
  two transactions appending to one project commit one after the other, and the high-water
  cursor recorded there only grows. An append whose events are not all above the recorded
  high-water is rejected (:class:`CursorConflict`). So every committed append's cursors are
  above every cursor committed before it in its project (commit order is cursor order), and a
  cursor is never stored twice, even by a process whose idea of the project is stale.
* :class:`AllocatedAppend` lets the backend take the cursors itself, under that lock, in the
  transaction that stores the events: commit order is then cursor order per project, whichever
  process appends.

Failures: an error of one write is that write's :class:`WriteRejected`; a transaction that
does not reach COMMIT fails each of its writes (:class:`CommitFailed`, not stored); a lost
connection is *transient* (the store is unavailable, answered 503) and the next call
reconnects. A connection lost while COMMIT was in flight leaves the outcome unknown: that
raises :class:`CommitInDoubt`, the store actor crashes, and its callers settle the outcome by
asking again (as after any crash of the store).
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import orjson

from .errors import CommitFailed, ReadFailed, StoreError, WriteRejected
from .events import encode_cursor
from .records import iso_time
from .store import (
    LIVE_AGENT_STATES,
    AgentRow,
    AgentSeq,
    AppendBatch,
    EventRow,
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
    result_filters,
)
from .store_leases import (
    PROCESS_ROWS_KEPT,
    Beat,
    ClaimExpired,
    EndProcess,
    HostLeftovers,
    ListProcesses,
    ProcessRow,
    Reap,
    RegisterProcess,
)

try:  # an optional extra: `pip install 'orchestra-sidecar[postgres]'`
    import psycopg
except ImportError:  # pragma: no cover - depends on the installation
    psycopg = None  # type: ignore[assignment]

__all__ = [
    "SCHEMA_VERSION",
    "NOTIFY_PREFIX",
    "AllocatedAppend",
    "Beat",
    "ClaimExpired",
    "CommitInDoubt",
    "CursorConflict",
    "EndProcess",
    "EventsAfter",
    "HostLeftovers",
    "KeyTaken",
    "ListProcesses",
    "PostgresBackend",
    "ProcessRow",
    "Reap",
    "RegisterProcess",
    "is_postgres_url",
    "redact_url",
    "store_url_problem",
]

log = logging.getLogger(__name__)

T = TypeVar("T")

SCHEMA_VERSION = 6

#: the NOTIFY channel of appends is this prefix + the schema's name (schemas share nothing)
NOTIFY_PREFIX = "orchestra_events:"

#: SQLSTATE of orchestra_take_project's refusal: another writer has the cursors
_CURSOR_TAKEN = "OR001"
#: SQLSTATE of orchestra_keys_put's refusal: another writer holds a live idempotency key
_KEY_TAKEN = "OR002"

#: key of the advisory lock that serializes migrations between processes opening at once
_MIGRATION_LOCK = 0x6F72636865737472  # "orchestr"

# Each entry migrates from version i to i + 1; never edit a released entry, append a new one.
# The same tables as SQLite's at each version, plus what PostgreSQL runs itself. Keys that may hold a NUL
# (a wait key is type NUL filter, a spawn key sub NUL key; a token's subject is not checked
# for one) are BYTEA holding UTF-8: PostgreSQL's TEXT cannot hold a NUL, SQLite's can.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE projects (
        project_id   TEXT PRIMARY KEY,
        last_cursor  BIGINT NOT NULL DEFAULT 0
    );
    CREATE TABLE results (
        seq         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
        id          TEXT NOT NULL UNIQUE,
        project_id  TEXT NOT NULL,
        issue_id    TEXT NOT NULL,
        agent_type  TEXT NOT NULL,
        agent_id    TEXT NOT NULL,
        status      TEXT NOT NULL,
        stored_at   TEXT COLLATE "C" NOT NULL,  -- compared by code point, as SQLite does
        body        BYTEA NOT NULL
    );
    CREATE INDEX results_by_project ON results (project_id, seq);
    CREATE INDEX results_by_issue ON results (project_id, issue_id, seq);
    CREATE TABLE events (
        project_id  TEXT NOT NULL,
        cursor      BIGINT NOT NULL,
        event_type  TEXT NOT NULL,
        expires_at  DOUBLE PRECISION NOT NULL,
        body        BYTEA NOT NULL,
        PRIMARY KEY (project_id, cursor)
    );
    CREATE INDEX events_by_expiry ON events (expires_at);
    CREATE TABLE wait_cursors (
        project_id  TEXT NOT NULL,
        sub         BYTEA NOT NULL,
        wait_key    BYTEA NOT NULL,
        cursor      BIGINT NOT NULL,
        PRIMARY KEY (project_id, sub, wait_key)
    );
    CREATE TABLE agents (
        agent_id    TEXT PRIMARY KEY,
        project_id  TEXT NOT NULL,
        body        BYTEA NOT NULL,
        updated_at  TEXT NOT NULL
    );
    -- An append's last step: record the project's high-water cursor (its row, locked until
    -- COMMIT, is the project's lock); raise if its events are not all above the one recorded.
    CREATE FUNCTION orchestra_take_project(project TEXT, last BIGINT, lowest BIGINT)
    RETURNS void LANGUAGE plpgsql AS $$
    DECLARE
        high BIGINT;
    BEGIN
        INSERT INTO projects AS p (project_id, last_cursor) VALUES (project, last)
        ON CONFLICT (project_id) DO UPDATE
            SET last_cursor = greatest(p.last_cursor, excluded.last_cursor)
            WHERE lowest IS NULL OR p.last_cursor < lowest;
        IF NOT FOUND THEN
            SELECT p.last_cursor INTO high FROM projects p WHERE p.project_id = project;
            RAISE EXCEPTION USING ERRCODE = 'OR001', DETAIL = high::text, MESSAGE = format(
                'cursor %s is not above the project''s high-water cursor %s (another writer '
                'appended)', lowest, high);
        END IF;
    END $$;
    """,
    # 2: idempotency keys, committed with the write they guard; purged after their window
    """
    CREATE TABLE idempotency (
        project_id   TEXT NOT NULL,
        sub          BYTEA NOT NULL,
        key          BYTEA NOT NULL,
        fingerprint  BYTEA NOT NULL,
        answer       BYTEA NOT NULL,
        expires_at   DOUBLE PRECISION NOT NULL,
        PRIMARY KEY (project_id, sub, key)
    );
    CREATE INDEX idempotency_by_expiry ON idempotency (expires_at);
    """,
    # 3: spawned agents: their state, the spawn's idempotency scope and its original answer
    """
    ALTER TABLE agents ADD COLUMN state TEXT NOT NULL DEFAULT 'starting';
    ALTER TABLE agents ADD COLUMN spawn_key BYTEA;
    ALTER TABLE agents ADD COLUMN answer BYTEA;
    ALTER TABLE agents ADD COLUMN seq BIGINT NOT NULL DEFAULT 0;
    CREATE INDEX agents_by_project ON agents (project_id, seq);
    CREATE INDEX agents_by_state ON agents (state);
    CREATE UNIQUE INDEX agents_by_spawn_key ON agents (project_id, spawn_key)
        WHERE spawn_key IS NOT NULL;
    """,
    # 4: an append announces ``project:high-water`` to the processes sharing this schema (the
    # notification is delivered at COMMIT, dropped with a rolled-back write)
    """
    CREATE OR REPLACE FUNCTION orchestra_take_project(project TEXT, last BIGINT, lowest BIGINT)
    RETURNS void LANGUAGE plpgsql AS $$
    DECLARE
        high BIGINT;
    BEGIN
        INSERT INTO projects AS p (project_id, last_cursor) VALUES (project, last)
        ON CONFLICT (project_id) DO UPDATE
            SET last_cursor = greatest(p.last_cursor, excluded.last_cursor)
            WHERE lowest IS NULL OR p.last_cursor < lowest;
        IF NOT FOUND THEN
            SELECT p.last_cursor INTO high FROM projects p WHERE p.project_id = project;
            RAISE EXCEPTION USING ERRCODE = 'OR001', DETAIL = high::text, MESSAGE = format(
                'cursor %s is not above the project''s high-water cursor %s (another writer '
                'appended)', lowest, high);
        END IF;
        IF lowest IS NOT NULL THEN
            PERFORM pg_notify('orchestra_events:' || current_schema(), project || ':' || last);
        END IF;
    END $$;
    """,
    # 5: a write takes over only an expired idempotency key; a live one (another process's
    # write of the same key, committed first) refuses the write
    """
    CREATE FUNCTION orchestra_keys_put(stored BIGINT, given BIGINT)
    RETURNS void LANGUAGE plpgsql AS $$
    BEGIN
        IF stored < given THEN
            RAISE EXCEPTION USING ERRCODE = 'OR002', MESSAGE = format(
                '%s of %s idempotency keys are held by another writer''s live write',
                given - stored, given);
        END IF;
    END $$;
    """,
    # 6: the server processes sharing the database, each with its lease (last_beat, by the
    # database's clock); a spawned agent's owner (the process that started it), and whether it
    # was failed for its owner (its process group may still run on the owner's host)
    """
    CREATE TABLE processes (
        process_id   TEXT PRIMARY KEY,
        host         TEXT NOT NULL,
        pid          INTEGER NOT NULL,
        boot_id      TEXT NOT NULL,
        start_ticks  BIGINT NOT NULL,
        started_at   DOUBLE PRECISION NOT NULL,
        last_beat    DOUBLE PRECISION NOT NULL,
        state        TEXT NOT NULL DEFAULT 'alive',  -- alive, lost, stopped
        ended_at     DOUBLE PRECISION,
        reason       TEXT,
        reaped       BOOLEAN NOT NULL DEFAULT false   -- its host ended what it left
    );
    CREATE INDEX processes_by_host ON processes (host) WHERE NOT reaped;
    ALTER TABLE agents ADD COLUMN owner TEXT;
    ALTER TABLE agents ADD COLUMN orphaned BOOLEAN NOT NULL DEFAULT false;
    CREATE INDEX agents_by_owner ON agents (owner, state);
    """,
]
assert len(MIGRATIONS) == SCHEMA_VERSION


def is_postgres_url(store: str) -> bool:
    """Whether a ``--store`` value names a PostgreSQL database (else it is a SQLite path)."""
    return store.startswith(("postgresql://", "postgres://"))


def store_url_problem(url: str) -> str | None:
    """What keeps ``url`` from naming a PostgreSQL store this installation can use now (None:
    nothing): not such a URL, no driver, or no server answering there (one connection tried)."""
    if not is_postgres_url(url):
        return f"{url!r} is not a postgresql:// URL"
    if psycopg is None:
        return "the PostgreSQL store needs psycopg: pip install 'orchestra-sidecar[postgres]'"
    try:
        psycopg.connect(url, connect_timeout=5).close()
    except psycopg.Error as exc:
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        return f"cannot use {redact_url(url)}: {first}"
    return None


def redact_url(url: str) -> str:
    """The URL without its password and query, for logs and the results' ``storage_path``."""
    if psycopg is None:
        return url.split("?", 1)[0]
    try:
        info = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "postgresql://?"
    host = info.get("host") or "localhost"
    port = f":{info['port']}" if info.get("port") else ""
    return f"postgresql://{host}{port}/{info.get('dbname') or ''}"


class CursorConflict(WriteRejected):
    """An append whose events are not above the project's recorded high-water cursor, or take
    a stored one: another writer got there first. Transient: the writer reloads the project
    and tries again. ``high_water``: the recorded one, if known."""

    def __init__(self, message: str, high_water: int | None) -> None:
        super().__init__(message, transient=True)
        self.high_water = high_water


class KeyTaken(WriteRejected):
    """A keyed write whose idempotency key another writer (another process) stored first and
    is still live: not stored. Transient: the retry finds the key and gets its answer."""

    def __init__(self, message: str) -> None:
        super().__init__(message, transient=True)


class CommitInDoubt(Exception):
    """The connection was lost while COMMIT was in flight: the transaction may or may not have
    committed. Raised out of :meth:`PostgresBackend.apply`: the store actor crashes, its callers
    get ``ActorCrashed`` (outcome unknown) and learn the outcome from the next incarnation (the
    high-water cursor). Not a :class:`StoreError`, whose answer to a write means *not stored*."""


@dataclass(frozen=True, slots=True)
class AllocatedAppend(AppendBatch):
    """An :class:`AppendBatch` whose event cursors the backend takes, under the project's lock.

    The events' ``cursor`` values only order them (any increasing numbers); the backend stores
    them at ``high + 1, high + 2, ...`` above the project's recorded high-water ``high``,
    rewriting each event body's ``"cursor"`` field to match, and records the new high-water.
    ``last_cursor`` is ignored. The write's outcome is the first cursor taken (an ``int``)
    instead of None; with no events it is the high-water + 1 and nothing is taken.
    The idempotency keys' answers are stored with the cursors they name (``cursor`` and
    ``event_cursor`` fields, at any depth, equal to one of the events' given cursors) replaced
    by the ones taken.
    """


@dataclass(frozen=True, slots=True)
class EventsAfter:
    """A read: the stored events of a project after ``cursor``, in cursor order, at most
    ``limit``; answers their bodies. What another process appended, read by this one's
    project actor (commit order is cursor order, so nothing below what it read comes later)."""

    project_id: str
    cursor: int
    limit: int
    #: only the events below this cursor (None: all)
    before: int | None = None


_LEASE_OPS = (RegisterProcess, Beat, EndProcess, ClaimExpired, HostLeftovers, Reap, ListProcesses)

_PROCESS_COLUMNS = ("process_id, host, pid, boot_id, start_ticks, started_at, last_beat, state,"
                    " ended_at, reason")
_NOW = "extract(epoch FROM clock_timestamp())::float8"


class PostgresBackend:
    """PostgreSQL through psycopg 3, on the store actor's worker thread.

    ``url`` is a libpq URL or conninfo (``postgresql://host:5432/db?options=...``). The
    connection is opened by :meth:`open` (which migrates the schema) and, after it is lost,
    again by the next :meth:`apply`; until that succeeds every request fails transient.
    ``statement_timeout`` (seconds) bounds each statement, ``connect_timeout`` each connect,
    so a call never blocks the store's thread without end.
    """

    #: its calls block: the store actor runs them on its worker thread
    blocking = True

    def __init__(self, url: str, *, connect_timeout: float = 5.0, statement_timeout: float = 30.0) -> None:
        if psycopg is None:
            raise StoreError(
                "the PostgreSQL store needs psycopg: pip install 'orchestra-sidecar[postgres]'"
            )
        self.url = url
        self.connect_timeout = connect_timeout
        self.statement_timeout = statement_timeout
        self.conn: psycopg.Connection[Any] | None = None
        #: connections made (the first by :meth:`open`); a test reads it
        self.connects = 0
        #: the connection is lost and not yet replaced (logged once per outage)
        self._lost = False

    # -- connection and schema --

    def open(self) -> None:
        """Connect and migrate. The first open of this object raises if that fails (a wrong
        URL stops the server at once); a later one (the store actor restarted) leaves the
        backend disconnected instead, so a database restart cannot crash-loop the store:
        requests fail transient until :meth:`apply` reconnects."""
        self.close()
        try:
            self._connect()
        except psycopg.OperationalError:
            if not self.connects:
                raise
            self._lost = True
            log.warning("store: %s unreachable; reconnecting on each request until it is back",
                        redact_url(self.url))

    def close(self) -> None:
        conn, self.conn = self.conn, None
        if conn is not None:
            conn.close()

    def _connect(self) -> psycopg.Connection[Any]:
        given = psycopg.conninfo.conninfo_to_dict(self.url)
        conn = psycopg.connect(
            self.url,
            autocommit=True,  # transactions are explicit: BEGIN ... COMMIT
            connect_timeout=max(1, round(self.connect_timeout)),
            # the URL's own application_name (a process's name in pg_stat_activity) wins
            application_name=given.get("application_name", "orchestra"),
            keepalives=1, keepalives_idle=10, keepalives_interval=5, keepalives_count=3,
        )
        # No automatic server-side prepared statements: one prepared inside a pipeline that
        # aborts is lost on the server while the driver believes it exists (the next use of
        # that statement, COMMIT even, then fails). The statements are few and simple.
        conn.prepare_threshold = None
        try:
            conn.execute(f"SET statement_timeout = {int(self.statement_timeout * 1000)}")
            self._migrate(conn)
        except BaseException:
            conn.close()
            raise
        self.conn = conn
        self.connects += 1
        if self._lost:
            self._lost = False
            log.warning("store: connected to %s again", redact_url(self.url))
        return conn

    def _migrate(self, conn: psycopg.Connection[Any]) -> None:
        with conn.transaction():
            # Processes opening one database at once migrate it one after the other.
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            conn.execute("CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL)")
            row = conn.execute("SELECT max(version) FROM schema_version").fetchone()
            version = row[0] if row and row[0] is not None else 0
            if version > SCHEMA_VERSION:
                raise StoreError(
                    f"{redact_url(self.url)} has schema version {version}, newer than this "
                    f"release ({SCHEMA_VERSION}); upgrade orchestra-sidecar"
                )
            for target in range(version + 1, SCHEMA_VERSION + 1):
                conn.execute(MIGRATIONS[target - 1])
                conn.execute("INSERT INTO schema_version (version) VALUES (%s)", (target,))

    def _connection(self) -> psycopg.Connection[Any]:
        """The live connection, reconnecting if it was lost (OperationalError if it cannot)."""
        conn = self.conn
        if conn is not None and not conn.closed and not conn.broken:
            return conn
        self.close()
        if not self._lost:
            self._lost = True
            log.warning("store: connection to %s lost; reconnecting on each request until it is back",
                        redact_url(self.url))
        return self._connect()

    # -- the backend --

    def apply(self, writes: list[Any], reads: list[Any]) -> tuple[list[Any], list[Any]]:
        try:
            conn = self._connection()
        except Exception as exc:  # the server is unreachable: every request fails transient
            why = f"store unavailable: {_why(exc)}"
            return ([CommitFailed(why, transient=True) for _ in writes],
                    [ReadFailed(why, transient=True) for _ in reads])
        write_outcomes: list[Any] = []
        if writes:
            begun = self._begin(conn)
            write_outcomes = self._commit(begun, writes) if begun is not None else [
                CommitFailed("store unavailable: connection lost", transient=True) for _ in writes
            ]
        read_outcomes: list[Any] = []
        for read in reads:
            try:
                read_outcomes.append(self._read_once_more(read))
            except Exception as exc:  # any: a value the driver cannot bind is not a crash
                read_outcomes.append(ReadFailed(f"read failed: {_why(exc)}", transient=_transient(exc)))
        return write_outcomes, read_outcomes

    def _begin(self, conn: psycopg.Connection[Any]) -> psycopg.Connection[Any] | None:
        """BEGIN, on a new connection if the idle one turns out lost (nothing was sent on it
        yet, so nothing is in doubt); None if the server cannot be reached."""
        for attempt in range(2):
            try:
                conn.execute("BEGIN")
                return conn
            except psycopg.OperationalError:
                if not conn.broken or attempt:
                    return None
                try:
                    conn = self._connection()
                except psycopg.OperationalError:
                    return None
        return None

    def _read_once_more(self, read: Any) -> Any:
        """A read, repeated once on a new connection if the connection was lost under it."""
        conn = self._connection()
        try:
            return self._read(conn, read)
        except psycopg.OperationalError:
            if not conn.broken:
                raise
        return self._read(self._connection(), read)

    def _commit(self, conn: psycopg.Connection[Any], writes: list[Any]) -> list[Any]:
        """Within the transaction BEGIN opened: every write and COMMIT in one round trip (a
        pipeline). If anything in it fails, nothing of it is stored: the transaction is
        rolled back and run again write by write (:meth:`_commit_each`), which finds the
        write at fault. So the project's lock, taken by its append, is held for one round
        trip, and a group commit of any size costs two (BEGIN, then the rest)."""
        if not any(isinstance(w, AllocatedAppend) for w in writes):  # those read as they go
            try:
                with conn.pipeline():
                    self._write_group(conn, writes)
                    conn.execute("COMMIT")
                return [None] * len(writes)
            except Exception as exc:  # any: found again, write by write
                if conn.broken:  # COMMIT may have been sent and run
                    raise CommitInDoubt(f"connection lost during a commit: {_why(exc)}") from exc
                if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                    conn.execute("ROLLBACK")
                conn.execute("BEGIN")
        return self._commit_each(conn, writes)

    def _commit_each(self, conn: psycopg.Connection[Any], writes: list[Any]) -> list[Any]:
        """Within the transaction BEGIN opened: each write in its savepoint, then COMMIT."""
        outcomes: list[Any] = [None] * len(writes)
        # the appends in the order of their projects: the locks in one order in every transaction
        order = sorted(range(len(writes)), key=lambda i: (
            0, writes[i].project_id) if isinstance(writes[i], AppendBatch) else (1, ""))
        try:
            for i in order:
                write = writes[i]
                conn.execute("SAVEPOINT w")
                try:
                    outcome = self._write(conn, write)
                except StoreError as exc:
                    conn.execute("ROLLBACK TO w")
                    outcomes[i] = exc
                except Exception as exc:  # any: this write's error, not the transaction's
                    if conn.broken:
                        raise
                    conn.execute("ROLLBACK TO w")
                    outcomes[i] = _rejected(exc)
                else:
                    outcomes[i] = outcome
                conn.execute("RELEASE w")
        except Exception as exc:
            # COMMIT was not sent: nothing of this transaction is stored.
            if not conn.broken:
                conn.execute("ROLLBACK")  # a rollback that fails raises: the actor crashes
            failure = CommitFailed(f"commit failed: {_why(exc)}", transient=_transient(exc))
            return [
                outcome if isinstance(outcome, StoreError) else failure
                for outcome in outcomes
            ]
        try:
            conn.execute("COMMIT")
        except Exception as exc:
            if conn.broken:
                raise CommitInDoubt(f"connection lost during COMMIT: {_why(exc)}") from exc
            # The server answered: the transaction did not commit (e.g. a deferred constraint).
            if conn.info.transaction_status != psycopg.pq.TransactionStatus.IDLE:
                conn.execute("ROLLBACK")
            failure = CommitFailed(f"commit failed: {_why(exc)}", transient=_transient(exc))
            return [o if isinstance(o, StoreError) else failure for o in outcomes]
        return outcomes

    # -- writes --

    def _write(self, conn: psycopg.Connection[Any], write: Any) -> int | None:
        if isinstance(write, AllocatedAppend):
            return self._append_allocated(conn, write)
        if isinstance(write, AppendBatch):
            # the project's lock first, as every append takes it: no deadlock on the events
            self._take_project(conn, write.project_id, write.last_cursor, write.events)
            self._append(conn, write, write.events)
        elif isinstance(write, SaveWaitCursor):
            conn.execute(
                "INSERT INTO wait_cursors (project_id, sub, wait_key, cursor)"
                " VALUES (%s, %s, %s, %s::bigint) ON CONFLICT (project_id, sub, wait_key)"
                " DO UPDATE SET cursor = greatest(wait_cursors.cursor, excluded.cursor)",
                (write.project_id, write.sub.encode(), write.wait_key.encode(), write.cursor),
            )
        elif isinstance(write, PurgeExpired):
            conn.execute("DELETE FROM events WHERE expires_at <= %s", (write.now,))
            conn.execute("DELETE FROM idempotency WHERE expires_at <= %s", (write.now,))
        elif isinstance(write, SaveAgent):
            r = write.row
            # The owner (the record's ``owner``) is a column too, to find a process's agents.
            # A live record never replaces an ended one: an agent failed for its lost owner
            # stays failed whatever that owner, paused meanwhile, still says of it.
            conn.execute(
                "INSERT INTO agents (agent_id, project_id, body, updated_at, state, spawn_key,"
                " answer, seq, owner) VALUES (%s, %s, %s, %s, %s, %s, %s, %s::bigint, %s)"
                " ON CONFLICT (agent_id) DO UPDATE SET"
                " body = excluded.body, updated_at = excluded.updated_at, state = excluded.state,"
                " spawn_key = coalesce(agents.spawn_key, excluded.spawn_key),"
                " answer = coalesce(agents.answer, excluded.answer)"
                " WHERE agents.state <> ALL(%s) OR excluded.state = ANY(%s)",
                (r.agent_id, r.project_id, r.body, r.updated_at, r.state, _utf8(r.spawn_key),
                 r.answer, r.seq, _owner(r.body), list(TERMINAL_AGENT_STATES),
                 list(TERMINAL_AGENT_STATES)),
            )
        else:
            raise TypeError(f"not a store write: {write!r}")
        return None

    def _append(self, conn: psycopg.Connection[Any], write: AppendBatch,
                events: tuple[EventRow, ...]) -> None:
        """The batch's results, events, trim and keys (not the project's row)."""
        trims = {write.project_id: write.trim_below} if write.trim_below else {}
        keys = {(write.project_id, k.sub, k.key): k for k in write.keys}
        self._insert(conn, list(write.results), list(events), trims, keys)

    def _insert(self, conn: psycopg.Connection[Any], results: list[ResultRow],
                events: list[EventRow], trims: dict[str, int],
                keys: dict[tuple[str, str, str], IdempotencyRow]) -> None:
        """Rows of one or more appends, one statement per table whatever their number."""
        if results:
            conn.execute(
                "INSERT INTO results (id, project_id, issue_id, agent_type, agent_id, status,"
                " stored_at, body) SELECT i, p, s, t, a, st, at, b FROM unnest(%s::text[],"
                " %s::text[], %s::text[], %s::text[], %s::text[], %s::text[], %s::text[],"
                " %s::bytea[]) WITH ORDINALITY AS u(i, p, s, t, a, st, at, b, n) ORDER BY n",
                _columns(results, 8, lambda r: (r.id, r.project_id, r.issue_id, r.agent_type,
                                                r.agent_id, r.status, r.stored_at, r.body)),
            )
        if events:
            conn.execute(
                "INSERT INTO events (project_id, cursor, event_type, expires_at, body)"
                " SELECT * FROM unnest(%s::text[], %s::bigint[], %s::text[],"
                " %s::float8[], %s::bytea[])",
                _columns(events, 5, lambda e: (e.project_id, e.cursor, e.event_type,
                                               e.expires_at, e.body)),
            )
        for project_id, trim_below in trims.items():
            conn.execute(
                "DELETE FROM events WHERE project_id = %s AND cursor < %s::bigint",
                (project_id, trim_below),
            )
        if keys:
            # An expired key not yet purged is reused: the new write takes it over. A live one
            # was written by another process since this one looked (the same process answers a
            # repeat from the key instead of writing): the write is refused (KeyTaken), and its
            # retry is answered from the key.
            conn.execute(
                "WITH put AS (INSERT INTO idempotency (project_id, sub, key, fingerprint, answer,"
                " expires_at) SELECT * FROM unnest(%s::text[], %s::bytea[], %s::bytea[],"
                " %s::bytea[], %s::bytea[], %s::float8[]) ON CONFLICT (project_id, sub, key)"
                " DO UPDATE SET fingerprint = excluded.fingerprint, answer = excluded.answer,"
                " expires_at = excluded.expires_at"
                " WHERE idempotency.expires_at <= extract(epoch FROM statement_timestamp())"
                " RETURNING 1)"
                " SELECT orchestra_keys_put((SELECT count(*) FROM put), %s::bigint)",
                [*_columns(list(keys.items()), 6, lambda kv: (
                    kv[0][0], kv[1].sub.encode(), kv[1].key.encode(), kv[1].fingerprint,
                    kv[1].answer, kv[1].expires_at)), len(keys)],
            )

    def _write_group(self, conn: psycopg.Connection[Any], writes: list[Any]) -> None:
        """Every write of a group commit, merged where that changes nothing: the appends'
        rows one statement per table, wait positions one statement (the highest of each),
        each project's high-water once (the highest, checked against its lowest event)."""
        results: list[ResultRow] = []
        events: list[EventRow] = []
        trims: dict[str, int] = {}
        keys: dict[tuple[str, str, str], IdempotencyRow] = {}
        projects: dict[str, tuple[int, int | None]] = {}
        waits: dict[tuple[str, str, str], int] = {}
        for write in writes:
            if type(write) is AppendBatch:
                results.extend(write.results)
                events.extend(write.events)
                if write.trim_below:
                    trims[write.project_id] = max(trims.get(write.project_id, 0), write.trim_below)
                for k in write.keys:  # the later write takes a key over, as one by one
                    keys[(write.project_id, k.sub, k.key)] = k
                last, lowest = projects.get(write.project_id, (write.last_cursor, None))
                mine = min((e.cursor for e in write.events), default=None)
                projects[write.project_id] = (
                    max(last, write.last_cursor),
                    mine if lowest is None else lowest if mine is None else min(lowest, mine),
                )
            elif isinstance(write, SaveWaitCursor):
                position = (write.project_id, write.sub, write.wait_key)
                waits[position] = max(waits.get(position, write.cursor), write.cursor)
            else:
                self._write(conn, write)
        # Each project's lock first, in one order for every transaction (no deadlock between
        # group commits, nor with an append that inserts the events it locked), then the rows.
        for project_id in sorted(projects):
            self._take_project_at(conn, project_id, *projects[project_id])
        self._insert(conn, results, events, trims, keys)
        if waits:
            conn.execute(
                "INSERT INTO wait_cursors (project_id, sub, wait_key, cursor)"
                " SELECT * FROM unnest(%s::text[], %s::bytea[], %s::bytea[], %s::bigint[])"
                " ON CONFLICT (project_id, sub, wait_key)"
                " DO UPDATE SET cursor = greatest(wait_cursors.cursor, excluded.cursor)",
                _columns(list(waits.items()), 4, lambda pc: (
                    pc[0][0], pc[0][1].encode(), pc[0][2].encode(), pc[1])),
            )

    def _take_project(self, conn: psycopg.Connection[Any], project_id: str, last_cursor: int,
                      events: tuple[EventRow, ...]) -> None:
        """Record the high-water cursor, locking the project's row until COMMIT; refuse events
        at or below the one recorded (another writer's): the server raises, as it must
        within a pipeline."""
        self._take_project_at(conn, project_id, last_cursor,
                              min((e.cursor for e in events), default=None))

    def _take_project_at(self, conn: psycopg.Connection[Any], project_id: str, last_cursor: int,
                         lowest: int | None) -> None:
        conn.execute(
            "SELECT orchestra_take_project(%s, %s::bigint, %s::bigint)",
            (project_id, last_cursor, lowest),
        )

    def _append_allocated(self, conn: psycopg.Connection[Any], write: AllocatedAppend) -> int:
        # Lock first: the cursors are the ones after the high-water as this transaction sees it.
        conn.execute(
            "INSERT INTO projects (project_id, last_cursor) VALUES (%s, 0)"
            " ON CONFLICT (project_id) DO NOTHING", (write.project_id,),
        )
        row = conn.execute(
            "SELECT last_cursor FROM projects WHERE project_id = %s FOR UPDATE",
            (write.project_id,),
        ).fetchone()
        assert row is not None
        first: int = row[0] + 1
        ordered = sorted(write.events, key=lambda e: e.cursor)
        events = tuple(
            EventRow(e.project_id, first + i, e.event_type, e.expires_at, _with_cursor(e.body, first + i))
            for i, e in enumerate(ordered)
        )
        taken = {encode_cursor(e.cursor): encode_cursor(first + i) for i, e in enumerate(ordered)}
        keys = tuple(dataclasses.replace(k, answer=_recursored(k.answer, taken)) for k in write.keys)
        self._append(conn, dataclasses.replace(write, keys=keys), events)
        if events:
            last = first + len(events) - 1
            conn.execute(
                "UPDATE projects SET last_cursor = %s::bigint WHERE project_id = %s",
                (last, write.project_id),
            )
            conn.execute("SELECT pg_notify(%s || current_schema(), %s)",
                         (NOTIFY_PREFIX, f"{write.project_id}:{last}"))
        return first

    # -- reads --

    def _read(self, conn: psycopg.Connection[Any], read: Any) -> Any:
        if isinstance(read, GetResult):
            row = conn.execute(
                "SELECT body FROM results WHERE id = %s AND project_id = %s",
                (read.result_id, read.project_id),
            ).fetchone()
            return bytes(row[0]) if row else None
        if isinstance(read, QueryResults):
            return self._query(conn, read)
        if isinstance(read, LoadProject):
            return self._load(conn, read)
        if isinstance(read, LookupKeys):
            subs = [sub.encode() for sub, _ in read.scopes]
            keys = [key.encode() for _, key in read.scopes]
            rows = conn.execute(
                "SELECT i.sub, i.key, i.fingerprint, i.answer, i.expires_at FROM idempotency i"
                " JOIN unnest(%s::bytea[], %s::bytea[]) AS s(sub, key)"
                " ON i.sub = s.sub AND i.key = s.key"
                " WHERE i.project_id = %s AND i.expires_at > %s",
                (subs, keys, read.project_id, read.now),
            ).fetchall()
            found: dict[tuple[str, str], IdempotencyRow] = {}
            for sub, key, fingerprint, answer, expires_at in rows:
                scope = (bytes(sub).decode(), bytes(key).decode())
                found[scope] = IdempotencyRow(*scope, bytes(fingerprint), bytes(answer), expires_at)
            return found
        if isinstance(read, EventsAfter):
            rows = conn.execute(
                "SELECT body FROM events WHERE project_id = %s AND cursor > %s::bigint"
                " AND (%s::bigint IS NULL OR cursor < %s::bigint) ORDER BY cursor LIMIT %s::bigint",
                (read.project_id, read.cursor, read.before, read.before, read.limit),
            ).fetchall()
            return [bytes(r[0]) for r in rows]
        if isinstance(read, HighWater):
            row = conn.execute(
                "SELECT last_cursor FROM projects WHERE project_id = %s", (read.project_id,)
            ).fetchone()
            return row[0] if row else 0
        if isinstance(read, StoreCounts):
            row = conn.execute(
                "SELECT (SELECT count(*) FROM results), (SELECT count(*) FROM events),"
                " (SELECT count(*) FROM projects)"
            ).fetchone()
            assert row is not None
            return {"results": row[0], "events": row[1], "projects": row[2]}
        if isinstance(read, GetAgent | ListAgents | LiveAgents | FindSpawn | AgentSeq):
            return self._agents(conn, read)
        if isinstance(read, _LEASE_OPS):
            with conn.transaction():
                return self._lease(conn, read)
        raise TypeError(f"not a store read: {read!r}")

    # -- leases --

    def _lease(self, conn: psycopg.Connection[Any], op: Any) -> Any:
        if isinstance(op, RegisterProcess):
            me = op.process
            conn.execute(
                "INSERT INTO processes (process_id, host, pid, boot_id, start_ticks, started_at,"
                f" last_beat) VALUES (%s, %s, %s, %s, %s::bigint, %s, {_NOW})"
                " ON CONFLICT (process_id) DO UPDATE SET state = 'alive', last_beat ="
                " excluded.last_beat, ended_at = NULL, reason = NULL, reaped = false",
                (me.process_id, me.host, me.pid, me.boot_id, me.start_ticks, me.started_at),
            )
            return None
        if isinstance(op, Beat):
            cur = conn.execute(
                f"UPDATE processes SET last_beat = {_NOW} WHERE process_id = %s AND state = 'alive'",
                (op.process_id,),
            )
            return cur.rowcount == 1
        if isinstance(op, EndProcess):
            conn.execute(
                f"UPDATE processes SET state = 'stopped', ended_at = {_NOW}, reason = 'stopped',"
                " reaped = true WHERE process_id = %s AND state = 'alive'",
                (op.process_id,),
            )
            return None
        if isinstance(op, ClaimExpired):
            return self._claim_expired(conn, op)
        if isinstance(op, HostLeftovers):
            procs = conn.execute(
                f"SELECT {_PROCESS_COLUMNS}, {_NOW} FROM processes WHERE host = %s"
                " AND process_id <> %s AND NOT reaped ORDER BY started_at LIMIT %s::bigint",
                (op.host, op.process_id, op.limit),
            ).fetchall()
            out = []
            for p in procs:
                rows = conn.execute(
                    f"SELECT {self._AGENT_COLUMNS} FROM agents WHERE owner = %s"
                    " AND (state = ANY(%s) OR orphaned) ORDER BY seq LIMIT %s::bigint",
                    (p[0], list(LIVE_AGENT_STATES), op.limit),
                ).fetchall()
                out.append((ProcessRow(*p), [_agent(r) for r in rows]))
            return out
        if isinstance(op, Reap):
            taken = conn.execute(
                "UPDATE processes SET reaped = true, state = CASE WHEN state = 'alive' THEN 'lost'"
                f" ELSE state END, ended_at = coalesce(ended_at, {_NOW}), reason = coalesce(reason,"
                " 'gone (found by its host)') WHERE process_id = %s AND NOT reaped RETURNING 1",
                (op.process_id,),
            ).fetchone()
            if taken is None:
                return []
            rows = conn.execute(
                f"SELECT {self._AGENT_COLUMNS} FROM agents WHERE owner = %s AND state = ANY(%s)"
                " ORDER BY seq FOR UPDATE",
                (op.process_id, list(LIVE_AGENT_STATES)),
            ).fetchall()
            return self._fail_agents(conn, [(_agent(r), op.reason) for r in rows])
        if isinstance(op, ListProcesses):
            rows = conn.execute(
                f"SELECT {_PROCESS_COLUMNS}, {_NOW} FROM processes"
                " ORDER BY state = 'alive' DESC, last_beat DESC LIMIT %s::bigint",
                (op.limit,),
            ).fetchall()
            return [ProcessRow(*r) for r in rows]
        raise TypeError(f"not a lease operation: {op!r}")

    def _claim_expired(self, conn: psycopg.Connection[Any], op: ClaimExpired) -> list[AgentRow]:
        conn.execute(
            f"UPDATE processes SET state = 'lost', ended_at = {_NOW}, reason = %s"
            f" WHERE state = 'alive' AND process_id <> %s AND last_beat < {_NOW} - %s",
            (f"no heartbeat for {op.expiry:g} s (seen by {op.process_id})", op.process_id,
             op.expiry),
        )
        conn.execute(
            f"DELETE FROM processes WHERE state <> 'alive' AND ended_at < {_NOW} - %s",
            (PROCESS_ROWS_KEPT,),
        )
        rows = conn.execute(
            f"SELECT {', '.join('a.' + c for c in self._AGENT_COLUMNS.split(', '))}, a.owner, p.state"
            " FROM agents a JOIN processes p ON p.process_id = a.owner"
            " WHERE a.state = ANY(%s) AND (p.state = 'lost'"
            f" OR (p.state = 'stopped' AND p.ended_at < {_NOW} - %s))"
            " ORDER BY a.seq LIMIT %s::bigint FOR UPDATE OF a",
            (list(LIVE_AGENT_STATES), op.expiry, op.limit),
        ).fetchall()
        return self._fail_agents(conn, [
            (_agent(r[:-2]), f"owner process {r[-2]} "
             + ("lost its lease" if r[-1] == "lost" else "stopped without ending it"))
            for r in rows
        ])

    def _fail_agents(self, conn: psycopg.Connection[Any],
                     found: list[tuple[AgentRow, str]]) -> list[AgentRow]:
        """Record each agent ``failed`` with its reason, marked failed for its owner."""
        now = time.time()
        out = []
        for row, reason in found:
            record = orjson.loads(row.body)
            record.update(state="failed", reason=reason, ended_at=iso_time(now))
            out.append(dataclasses.replace(row, state="failed", updated_at=iso_time(now),
                                           body=orjson.dumps(record)))
        if out:
            conn.execute(
                "UPDATE agents a SET state = 'failed', body = u.body, updated_at = u.at,"
                " orphaned = true FROM unnest(%s::text[], %s::bytea[], %s::text[]) AS u(id, body, at)"
                " WHERE a.agent_id = u.id",
                _columns(out, 3, lambda r: (r.agent_id, r.body, r.updated_at)),
            )
        return out

    def _load(self, conn: psycopg.Connection[Any], read: LoadProject) -> ProjectSnapshot:
        row = conn.execute(
            "SELECT last_cursor FROM projects WHERE project_id = %s", (read.project_id,)
        ).fetchone()
        events = conn.execute(
            "SELECT body FROM (SELECT cursor, body FROM events"
            " WHERE project_id = %s AND expires_at > %s ORDER BY cursor DESC LIMIT %s::bigint) e"
            " ORDER BY cursor",
            (read.project_id, read.now, _limit(read.max_events)),
        ).fetchall()
        waits = conn.execute(
            "SELECT sub, wait_key, cursor FROM wait_cursors WHERE project_id = %s",
            (read.project_id,),
        ).fetchall()
        return ProjectSnapshot(
            last_cursor=row[0] if row else 0,
            events=[bytes(e[0]) for e in events],
            wait_cursors={(bytes(s).decode(), bytes(k).decode()): c for s, k, c in waits},
        )

    _AGENT_COLUMNS = "agent_id, project_id, state, seq, updated_at, body, spawn_key, answer"

    def _agents(self, conn: psycopg.Connection[Any], read: Any) -> Any:
        cols = self._AGENT_COLUMNS
        if isinstance(read, AgentSeq):
            row = conn.execute("SELECT coalesce(max(seq), 0) FROM agents").fetchone()
            assert row is not None
            return row[0]
        if isinstance(read, GetAgent):
            row = conn.execute(
                f"SELECT {cols} FROM agents WHERE agent_id = %s AND project_id = %s",
                (read.agent_id, read.project_id),
            ).fetchone()
            return _agent(row) if row else None
        if isinstance(read, FindSpawn):
            row = conn.execute(
                f"SELECT {cols} FROM agents WHERE project_id = %s AND spawn_key = %s",
                (read.project_id, read.spawn_key.encode()),
            ).fetchone()
            return _agent(row) if row else None
        if isinstance(read, ListAgents):
            rows = conn.execute(
                f"SELECT {cols} FROM agents WHERE project_id = %s"
                " AND (%s::text IS NULL OR state = %s) ORDER BY seq DESC LIMIT %s::bigint",
                (read.project_id, read.state, read.state, _limit(read.limit)),
            ).fetchall()
            return [_agent(r) for r in rows]
        rows = conn.execute(
            f"SELECT {cols} FROM agents WHERE state = ANY(%s) ORDER BY seq LIMIT %s::bigint",
            (list(LIVE_AGENT_STATES), _limit(read.limit)),
        ).fetchall()
        return [_agent(r) for r in rows]

    def _query(self, conn: psycopg.Connection[Any], read: QueryResults) -> list[tuple[int, bytes]]:
        # ASCII-only lowering, as SQLite's lower() (bodies are UTF-8 JSON)
        where, args = result_filters(
            read, "%s", "strpos(translate(convert_from(body, 'UTF8'),"
            " 'ABCDEFGHIJKLMNOPQRSTUVWXYZ', 'abcdefghijklmnopqrstuvwxyz'), %s) > 0",
            seq_mark="%s::bigint",
        )
        args.append(_limit(read.limit))
        rows = conn.execute(
            f"SELECT seq, body FROM results{where} ORDER BY seq DESC LIMIT %s::bigint", args
        ).fetchall()
        return [(seq, bytes(body)) for seq, body in rows]


def _agent(row: Any) -> AgentRow:
    agent_id, project_id, state, seq, updated_at, body, spawn_key, answer = row
    return AgentRow(agent_id, project_id, state, seq, updated_at, bytes(body),
                    None if spawn_key is None else bytes(spawn_key).decode(),
                    None if answer is None else bytes(answer))


#: the states of an agent that has ended (store.LIVE_AGENT_STATES are the others)
TERMINAL_AGENT_STATES = ("exited", "failed", "stopped")


def _owner(body: bytes) -> str | None:
    """The ``owner`` of an agent record (None for a record without one, or not an object)."""
    try:
        record = orjson.loads(body)
    except orjson.JSONDecodeError:
        return None
    owner = record.get("owner") if isinstance(record, dict) else None
    return owner if isinstance(owner, str) else None


def _utf8(text: str | None) -> bytes | None:
    return None if text is None else text.encode()


def _columns(rows: list[T], width: int, values: Callable[[T], tuple[Any, ...]]) -> list[list[Any]]:
    """Rows as ``width`` column lists, to bind as arrays (one statement, any number of rows)."""
    columns: list[list[Any]] = [[] for _ in range(width)]
    for row in rows:
        for column, value in zip(columns, values(row), strict=True):
            column.append(value)
    return columns


def _limit(n: int) -> int | None:
    """A negative limit is none, as SQLite's LIMIT -1 (PostgreSQL: LIMIT NULL)."""
    return None if n < 0 else n


def _with_cursor(body: bytes, cursor: int) -> bytes:
    """An event body (a JSON object) with its ``cursor`` field set to ``cursor``."""
    event = orjson.loads(body)
    event["cursor"] = encode_cursor(cursor)
    return orjson.dumps(event)


def _recursored(answer: bytes, taken: dict[str, str]) -> bytes:
    """A write's answer (a JSON object) with the cursors it names (``cursor``, ``event_cursor``,
    at any depth) replaced as ``taken`` maps them: an idempotency key's copy of the answer
    names the cursors the store took."""
    def walk(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: taken.get(v, v) if k in ("cursor", "event_cursor") and isinstance(v, str)
                    else walk(v) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        return value
    return orjson.dumps(walk(orjson.loads(answer))) if taken else answer


def _rejected(exc: Exception) -> WriteRejected:
    """A write's error as its answer; another writer's cursors are a :class:`CursorConflict`."""
    if isinstance(exc, psycopg.Error) and exc.sqlstate == _CURSOR_TAKEN:
        detail = exc.diag.message_detail or ""
        return CursorConflict(f"write rejected: {exc.diag.message_primary}",
                              int(detail) if detail.isdigit() else None)
    if isinstance(exc, psycopg.Error) and exc.sqlstate == _KEY_TAKEN:
        return KeyTaken(f"write rejected: {exc.diag.message_primary}; retry with the same key "
                        "for the original answer")
    if isinstance(exc, psycopg.errors.UniqueViolation) and exc.diag.constraint_name == "events_pkey":
        return CursorConflict(f"write rejected: {_why(exc)} (another writer took that cursor)", None)
    return WriteRejected(f"write rejected: {_why(exc)}", transient=_transient(exc))


def _why(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _transient(exc: BaseException) -> bool:
    """Errors of the database's state (connection, serialization, timeouts, resources), not
    of the request."""
    return psycopg is not None and isinstance(exc, psycopg.OperationalError)
