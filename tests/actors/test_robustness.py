"""No request can crash a shared actor: the store answers each failing write or read with its
own error and serves on, and a StoreError answer to a write always means *not stored*.

Backend tests call ``SQLiteBackend.apply`` directly on a real SQLite file (synchronous, no
clock); actor tests run the StoreActor on its worker thread in real time, bounded by
``trio.fail_after``.
"""

from __future__ import annotations

import base64
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import trio
import trio.testing
from orchestra.actors.errors import DomainError, Unavailable
from orchestra.actors.runtime import ActorRef, ChildSpec, ReplyError, Supervisor
from orchestra.actors.store import (
    AppendBatch,
    CommitFailed,
    EventRow,
    GetResult,
    QueryResults,
    ReadFailed,
    ResultRow,
    SQLiteBackend,
    StoreActor,
    StoreCounts,
    StoreError,
    WriteRejected,
)

from tests.actors.conftest import batch_outcomes
from tests.conftest import result_body

TOO_BIG = 2**63  # no SQLite integer holds it: the driver raises OverflowError, not sqlite3.Error


def row(rid: str, project: str = "p1") -> ResultRow:
    return ResultRow(rid, project, "iss-1", "python-specialist", "a1", "success", "2026-01-01T00:00:00Z",
                     b'{"id":"%s"}' % rid.encode())


def append(rid: str, project: str = "p1", cursor: int = 1) -> AppendBatch:
    event = EventRow(project, cursor, "agent_completed", 9e9, b"{}")
    return AppendBatch(project, cursor, (row(rid, project),), (event,))


class Poison:
    """A write or read the fake backend fails on, after doing part of its work."""

    def __init__(self, error: BaseException, project: str = "p1") -> None:
        self.error = error
        self.project = project


class FaultyBackend(SQLiteBackend):
    """The real SQLite backend, plus writes and reads that raise arbitrary exceptions and a
    write whose violation only shows at COMMIT (a deferred foreign key)."""

    def open(self) -> None:
        super().open()
        assert self.db is not None
        self.db.execute("CREATE TABLE IF NOT EXISTS parent (id INTEGER PRIMARY KEY)")
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS child (parent_id INTEGER"
            " REFERENCES parent (id) DEFERRABLE INITIALLY DEFERRED)"
        )

    def _write(self, db: sqlite3.Connection, write: Any) -> None:
        if isinstance(write, Poison):
            super()._write(db, append("half-done", write.project, cursor=99))  # rolled back
            raise write.error
        if write == "orphan":
            db.execute("INSERT INTO child (parent_id) VALUES (42)")
            return
        super()._write(db, write)

    def _read(self, db: sqlite3.Connection, read: Any) -> Any:
        if isinstance(read, Poison):
            raise read.error
        return super()._read(db, read)


ARBITRARY = [
    OverflowError("int too big"),
    KeyError("k"),
    RuntimeError("bug"),
    ZeroDivisionError("division by zero"),
    UnicodeEncodeError("utf-8", "\ud800", 0, 1, "surrogates not allowed"),
    sqlite3.IntegrityError("constraint"),
    RecursionError("deep"),
]


@pytest.fixture
def backend(tmp_path: Path):
    b = FaultyBackend(tmp_path / "orchestra.db")
    b.open()
    yield b
    b.close()


def stored_ids(b: SQLiteBackend) -> set[str]:
    assert b.db is not None
    return {r[0] for r in b.db.execute("SELECT id FROM results")}


def test_the_store_errors_are_answers_of_one_family():
    for cls in (WriteRejected, CommitFailed, ReadFailed):
        assert issubclass(cls, StoreError) and issubclass(cls, DomainError) and issubclass(cls, ReplyError)


def test_a_write_the_driver_cannot_bind_fails_alone_and_the_others_commit(backend):
    forged = AppendBatch("p1", TOO_BIG, (row("r-forged"),))
    outcomes, _ = backend.apply([append("r1", cursor=1), forged, append("r2", cursor=2)], [])
    assert outcomes[0] is None and outcomes[2] is None
    assert isinstance(outcomes[1], WriteRejected) and "OverflowError" in str(outcomes[1])
    assert not outcomes[1].transient
    assert stored_ids(backend) == {"r1", "r2"}  # the forged write's result row was rolled back too


@pytest.mark.parametrize("error", ARBITRARY, ids=lambda e: type(e).__name__)
def test_any_exception_of_one_write_is_that_writes_error_and_it_is_rolled_back(backend, error):
    outcomes, _ = backend.apply([append("r1", cursor=1), Poison(error), append("r2", cursor=2)], [])
    assert outcomes[0] is None and outcomes[2] is None
    assert isinstance(outcomes[1], WriteRejected) and type(error).__name__ in str(outcomes[1])
    assert stored_ids(backend) == {"r1", "r2"}  # "half-done", written before the raise, is not


@pytest.mark.parametrize("error", ARBITRARY, ids=lambda e: type(e).__name__)
def test_any_exception_of_one_read_is_that_reads_error(backend, error):
    backend.apply([append("r1")], [])
    reads = [GetResult("p1", "r1"), Poison(error), QueryResults("p1", before_seq=TOO_BIG),
             QueryResults("p1", q="\ud800"), StoreCounts()]
    _, outcomes = backend.apply([], reads)
    assert outcomes[0] == b'{"id":"r1"}'
    assert all(isinstance(o, ReadFailed) for o in outcomes[1:4])
    assert outcomes[4]["results"] == 1


def test_a_failing_commit_fails_every_write_of_the_transaction_and_stores_none(backend):
    outcomes, _ = backend.apply([append("r1", cursor=1), Poison(KeyError("x")), "orphan"], [])
    assert isinstance(outcomes[0], CommitFailed) and isinstance(outcomes[2], CommitFailed)
    assert isinstance(outcomes[1], WriteRejected)  # rejected before the commit: not stored either
    assert "FOREIGN KEY" in str(outcomes[0])
    assert stored_ids(backend) == set()
    assert backend.db is not None and not backend.db.in_transaction
    outcomes, _ = backend.apply([append("r2", cursor=2)], [])  # the connection serves on
    assert outcomes == [None] and stored_ids(backend) == {"r2"}


def test_a_database_that_is_busy_answers_transient_errors(tmp_path):
    path = tmp_path / "orchestra.db"
    b = SQLiteBackend(path)
    b.open()
    other = sqlite3.connect(path, isolation_level=None)
    try:
        assert b.db is not None
        b.db.execute("PRAGMA busy_timeout=0")
        other.execute("BEGIN IMMEDIATE")  # another writer holds the lock
        outcomes, _ = b.apply([append("r1"), append("r2", cursor=2)], [])
        assert all(isinstance(o, CommitFailed) and o.transient for o in outcomes)
        other.execute("ROLLBACK")
        assert b.apply([append("r3", cursor=3)], [])[0] == [None]
        assert stored_ids(b) == {"r3"}
    finally:
        other.close()
        b.close()


# -- the store actor --


async def _start_store(nursery: trio.Nursery, path: Path) -> tuple[ActorRef, Supervisor]:
    ref = ActorRef("store")
    sup = Supervisor("root", [ChildSpec.actor("store", ref, lambda: StoreActor(FaultyBackend(path)))],
                     max_restarts=3)
    await nursery.start(sup.run)
    return ref, sup


async def test_the_store_actor_answers_each_failing_request_and_serves_on(tmp_path):
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            ref, sup = await _start_store(nursery, tmp_path / "orchestra.db")
            assert await ref.call(append("r1")) is None
            for n in range(25):  # past any restart intensity: none of them may crash it
                with pytest.raises(ReadFailed):
                    await ref.call(QueryResults("p1", before_seq=TOO_BIG))
                with pytest.raises(WriteRejected):
                    await ref.call(AppendBatch("p1", TOO_BIG, (row(f"bad{n}"),)))
                with pytest.raises(ReadFailed):  # not a write message: the actor reads it
                    await ref.call(Poison(ZeroDivisionError("bug")))
            assert await ref.call(append("r2", cursor=2)) is None
            assert [r[1] for r in await ref.call(QueryResults("p1"))] == [b'{"id":"r2"}', b'{"id":"r1"}']
            assert ref.incarnation == 1 and sup.total_crashes() == 0
            nursery.cancel_scope.cancel()


async def test_failing_requests_in_one_group_commit_fail_alone(tmp_path):
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            ref, sup = await _start_store(nursery, tmp_path / "orchestra.db")
            outcomes = await batch_outcomes(ref, {  # one group commit
                "ok1": append("r1", cursor=1),
                "bad": AppendBatch("p1", TOO_BIG, (row("x"),)),
                "poison": Poison(KeyError("k")),  # a read
                "ok2": append("r2", cursor=2),
                "read": QueryResults("p1", before_seq=TOO_BIG),
                "count": StoreCounts(),
            }, stall_ms=200, names=True)
            assert outcomes == {"ok1": None, "bad": "WriteRejected", "poison": "ReadFailed",
                                "ok2": None, "read": "ReadFailed", "count": {"results": 2, "events": 2, "projects": 1}}
            assert ref.incarnation == 1 and sup.total_crashes() == 0
            nursery.cancel_scope.cancel()


# -- end to end: the forged page cursor of issue 9 --


def _forged_cursor(seq: int) -> str:
    return base64.urlsafe_b64encode(f"r1:{seq}".encode()).decode().rstrip("=")


async def test_forged_page_cursors_never_take_the_store_down(server):
    tok = server.token()
    admin = server.token("*", agent_type="ops", admin=True, sub="ops")
    await server.request("POST", "/api/results", tok, result_body())
    cursor = _forged_cursor(TOO_BIG)
    for token in (tok, admin):  # through the project actor, and the admin's straight to the store
        for _ in range(25):  # more than the root supervisor's intensity (20 in 60 s)
            r = await server.request("GET", f"/api/results?cursor={cursor}", token)
            assert r.status in (400, 500, 503), r.body  # 400 once the edge refuses it first
            assert r.json()["request_id"] and r.json()["code"]
    assert (await server.request("GET", "/health")).json()["status"] == "healthy"
    status = (await server.request("GET", "/status")).json()
    assert status["actors"]["crashes"] == 0 and status["actors"]["restarts"] == 0
    r = await server.request("GET", "/api/results", tok)
    assert r.status == 200 and len(r.json()["results"]) == 1


# -- a StoreError is an answer wherever it surfaces --


async def test_a_project_whose_state_cannot_be_read_is_answered_and_the_broker_serves_on(autojump_clock):
    from orchestra.actors.broker import BrokerActor, EnsureProject
    from orchestra.actors.runtime import Actor

    class Unloadable(Actor):
        async def on_start(self) -> None:
            raise ReadFailed("read failed: OverflowError: int too big")

    class Fine(Actor):
        async def handle(self, msg: Any) -> Any:
            return "ok"

    projects = Supervisor("projects")
    broker = ActorRef("broker")
    root = Supervisor("root", [
        ChildSpec("projects", lambda: projects),
        ChildSpec.actor("broker", broker, lambda: BrokerActor(projects, lambda pid: Unloadable() if pid == "bad" else Fine())),
    ])
    async with trio.open_nursery() as nursery:
        await nursery.start(root.run)
        for _ in range(25):
            with pytest.raises(Unavailable):  # the broker answers for the project that cannot start
                await broker.call(EnsureProject("bad"))
        ref = await broker.call(EnsureProject("good"))
        assert await ref.call("x") == "ok"
        assert broker.incarnation == 1 and root.total_restarts() == 0
        assert root.total_crashes() == 25  # each failed start of the project counted
        nursery.cancel_scope.cancel()
