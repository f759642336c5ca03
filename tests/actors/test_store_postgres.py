"""What the PostgreSQL backend promises beyond the shared contract (test_store_backends.py):
several writers on one database, cursors allocated under the project's lock, connection loss,
a commit in doubt, migrations. A real server, each test in a fresh schema; skipped with one
line when there is none."""

from __future__ import annotations

import threading
from typing import Any

import orjson
import pytest
import trio
from orchestra.actors.events import encode_cursor
from orchestra.actors.runtime import ActorCrashed, ActorRef, ChildSpec, Supervisor
from orchestra.actors.store import (
    AppendBatch,
    CommitFailed,
    EventRow,
    GetResult,
    HighWater,
    IdempotencyRow,
    LoadProject,
    LookupKeys,
    ReadFailed,
    ResultRow,
    SaveWaitCursor,
    StoreActor,
    StoreError,
)

from tests.actors.conftest import Sink
from tests.postgres import fresh_schema, opened_backend

psycopg = pytest.importorskip("psycopg", reason="PostgreSQL tests skipped: psycopg is not installed")

from orchestra.actors.events import EventFilter  # noqa: E402
from orchestra.actors.pg_notify import NotifyListener, parse_announcements  # noqa: E402
from orchestra.actors.project import ProjectConfig, ProjectStats, Publish, Subscribe, Wait  # noqa: E402
from orchestra.actors.store_postgres import (  # noqa: E402
    SCHEMA_VERSION,
    AllocatedAppend,
    CommitInDoubt,
    CursorConflict,
    PostgresBackend,
    redact_url,
)
from orchestra.actors.system import ActorSystem, SystemConfig  # noqa: E402


@pytest.fixture
def url():
    with fresh_schema() as url:
        yield url


def _event(cursor: int, project: str = "p1") -> EventRow:
    body = orjson.dumps({"cursor": encode_cursor(cursor), "project_id": project, "n": cursor})
    return EventRow(project, cursor, "tick", 1e12, body)


def _result(rid: str) -> ResultRow:
    return ResultRow(rid, "p1", "ISS-1", "python-specialist", "a1", "success", "t", b'{"id":"%s"}' % rid.encode())


def _stored(b: PostgresBackend, project: str = "p1") -> list[tuple[int, dict]]:
    """(cursor column, decoded body) of the project's stored events, in cursor order."""
    assert b.conn is not None
    rows = b.conn.execute(
        "SELECT cursor, body FROM events WHERE project_id = %s ORDER BY cursor", (project,)
    ).fetchall()
    return [(c, orjson.loads(body)) for c, body in rows]


def test_an_append_at_or_below_another_writers_high_water_is_refused_and_stores_nothing(url):
    a, b = opened_backend(url), opened_backend(url)
    try:
        assert a.apply([AppendBatch("p1", 3, (), (_event(1), _event(2), _event(3)))], [])[0] == [None]
        (taken,), _ = b.apply([AppendBatch("p1", 4, (_result("r9"),), (_event(3), _event(4)))], [])
        assert isinstance(taken, CursorConflict) and taken.transient
        a.apply([AppendBatch("p1", 6, (), (_event(6),))], [])
        (below,), _ = b.apply([AppendBatch("p1", 5, (_result("r9"),), (_event(5),))], [])
        assert isinstance(below, CursorConflict) and below.transient and below.high_water == 6
        _, (found,) = b.apply([], [GetResult("p1", "r9")])
        assert found is None and [c for c, _ in _stored(b)] == [1, 2, 3, 6]
        assert b.apply([AppendBatch("p1", 7, (), (_event(7),))], [])[0] == [None]
    finally:
        a.close()
        b.close()


def test_allocated_appends_take_the_cursors_after_the_high_water_and_rewrite_the_bodies(url):
    b = opened_backend(url)
    try:
        b.apply([AppendBatch("p1", 7, (), (_event(7),))], [])
        (first,), (high,) = b.apply(
            [AllocatedAppend("p1", 0, (_result("r1"),), (_event(900), _event(500)))], [HighWater("p1")]
        )
        assert first == 8 and high == 9
        assert [(c, body["cursor"], body["n"]) for c, body in _stored(b)] == [
            (7, encode_cursor(7), 7), (8, encode_cursor(8), 500), (9, encode_cursor(9), 900)]
        (nothing,), _ = b.apply([AllocatedAppend("p2", 0)], [])
        assert nothing == 1 and b.apply([], [HighWater("p2")])[1] == [0]
    finally:
        b.close()


def test_writers_on_one_project_from_several_connections_never_reuse_or_skip_a_cursor(url):
    writers, rounds = 4, 25
    errors: list[BaseException] = []

    def write(n: int) -> None:
        b = opened_backend(url)
        try:
            for _ in range(rounds):
                (outcome,), _ = b.apply([AllocatedAppend("p1", 0, (), (_event(1), _event(2)))], [])
                assert isinstance(outcome, int), outcome
        except BaseException as exc:  # handed to the test's thread
            errors.append(exc)
        finally:
            b.close()

    threads = [threading.Thread(target=write, args=(n,)) for n in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    b = opened_backend(url)
    try:
        stored = _stored(b)
        assert [c for c, _ in stored] == list(range(1, writers * rounds * 2 + 1))
        assert all(body["cursor"] == encode_cursor(c) for c, body in stored)
        assert b.apply([], [HighWater("p1")])[1] == [writers * rounds * 2]
    finally:
        b.close()


def test_rejected_writes_again_and_again_leave_the_connection_serving(url):
    # each rejection aborts the pipeline of its group commit: statements the driver would have
    # prepared in it must not be taken as prepared afterwards
    b = opened_backend(url)
    try:
        for i in range(1, 13):
            good, dup = _result(f"r{i}"), _result("r1")
            outcomes, (high,) = b.apply([AppendBatch("p1", 2 * i, (good,), (_event(2 * i - 1),)),
                                         AppendBatch("p1", 2 * i, (dup,), (_event(2 * i),))],
                                        [HighWater("p1")])
            assert outcomes[0] is None and isinstance(outcomes[1], StoreError), (i, outcomes)
            assert high == 2 * i - 1 or high == 2 * i
            assert b.apply([SaveWaitCursor("p1", "a", "k", i)], [])[0] == [None]
    finally:
        b.close()


def test_writers_allocating_from_stale_views_are_refused_never_stored_twice(url):
    writers, appends = 4, 15
    conflicts: list[int] = []
    errors: list[BaseException] = []

    def write() -> None:
        b = opened_backend(url)
        try:
            done = 0
            while done < appends:  # each append from its own view of the project, as a process
                (high,) = b.apply([], [HighWater("p1")])[1]
                assert isinstance(high, int), high
                (outcome,), _ = b.apply([AppendBatch("p1", high + 1, (), (_event(high + 1),))], [])
                if isinstance(outcome, CursorConflict):
                    conflicts.append(1)
                else:
                    assert outcome is None, outcome
                    done += 1
        except BaseException as exc:  # handed to the test's thread
            errors.append(exc)
        finally:
            b.close()

    threads = [threading.Thread(target=write) for _ in range(writers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    assert errors == []
    b = opened_backend(url)
    try:
        assert [c for c, _ in _stored(b)] == list(range(1, writers * appends + 1))
    finally:
        b.close()


def test_an_allocating_writer_waits_for_the_project_lock_held_by_another_transaction(url):
    b = opened_backend(url)
    b.apply([AppendBatch("p1", 1, (), (_event(1),))], [])
    done = threading.Event()
    outcome: list[object] = []

    def write() -> None:
        outcome.extend(b.apply([AllocatedAppend("p1", 0, (), (_event(1),))], [])[0])
        done.set()

    with psycopg.connect(url) as other:  # another process's open append to p1
        other.execute("UPDATE projects SET last_cursor = 2 WHERE project_id = 'p1'")
        other.execute("INSERT INTO events VALUES ('p1', 2, 'tick', 1e12, '\\x7b7d')")
        t = threading.Thread(target=write)
        t.start()
        assert not done.wait(0.3)  # blocked on p1's row until the other commits
        other.commit()
    t.join(timeout=30)
    try:
        assert outcome == [3]  # after the other's cursor 2: commit order is cursor order
    finally:
        b.close()


def _terminate(b: PostgresBackend) -> None:
    assert b.conn is not None
    pid = b.conn.info.backend_pid
    with psycopg.connect(b.url, autocommit=True) as admin:
        admin.execute("SELECT pg_terminate_backend(%s)", (pid,))


def test_a_lost_idle_connection_is_replaced_without_failing_the_next_request(url):
    b = opened_backend(url)
    try:
        _terminate(b)
        writes, reads = b.apply([SaveWaitCursor("p1", "a", "k", 1)], [LoadProject("p1", 0.0, 10)])
        assert writes == [None] and reads[0].wait_cursors == {("a", "k"): 1}
        _terminate(b)
        assert b.apply([], [HighWater("p1")])[1] == [0]
        assert b.connects == 3
    finally:
        b.close()


def test_an_unreachable_server_fails_every_request_transient_until_it_is_back(url):
    b = opened_backend(url)
    try:
        good = b.url
        _terminate(b)
        b.url = "postgresql://127.0.0.1:1/test"  # nothing listens there
        writes, reads = b.apply([SaveWaitCursor("p1", "a", "k", 1)], [HighWater("p1")])
        assert isinstance(writes[0], CommitFailed) and writes[0].transient
        assert isinstance(reads[0], ReadFailed) and reads[0].transient
        b.url = good
        assert b.apply([SaveWaitCursor("p1", "a", "k", 1)], [])[0] == [None]
    finally:
        b.close()


def test_a_connection_lost_during_commit_raises_commit_in_doubt(url):
    b = opened_backend(url)
    try:
        # a deferred trigger that ends the session at COMMIT: the answer to COMMIT never comes
        assert b.conn is not None
        b.conn.execute(
            "CREATE FUNCTION die() RETURNS trigger LANGUAGE plpgsql AS"
            " $$ BEGIN PERFORM pg_terminate_backend(pg_backend_pid()); RETURN NULL; END $$;"
            " CREATE CONSTRAINT TRIGGER die AFTER INSERT ON wait_cursors"
            " DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION die()"
        )
        with pytest.raises(CommitInDoubt):
            b.apply([SaveWaitCursor("p1", "a", "k", 1)], [])
        assert b.conn.broken
    finally:
        b.close()


def test_migrations_run_once_and_a_newer_schema_is_refused(url):
    opened_backend(url).close()
    b = opened_backend(url)
    try:
        assert b.conn is not None
        assert b.conn.execute("SELECT max(version), count(*) FROM schema_version").fetchone() == (SCHEMA_VERSION, SCHEMA_VERSION)
        b.conn.execute("INSERT INTO schema_version VALUES (99)")
    finally:
        b.close()
    with pytest.raises(StoreError, match="schema version 99"):
        opened_backend(url)


def test_processes_opening_a_new_database_at_once_migrate_it_once(url):
    backends = [PostgresBackend(url) for _ in range(4)]
    errors: list[BaseException] = []

    def open_one(b: PostgresBackend) -> None:
        try:
            b.open()
        except BaseException as exc:  # handed to the test's thread
            errors.append(exc)

    threads = [threading.Thread(target=open_one, args=(b,)) for b in backends]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    try:
        assert errors == []
        assert backends[0].conn is not None
        assert backends[0].conn.execute("SELECT version FROM schema_version ORDER BY version").fetchall() == [
            (v,) for v in range(1, SCHEMA_VERSION + 1)]
    finally:
        for b in backends:
            b.close()


def test_the_url_shown_has_no_password():
    assert redact_url("postgresql://u:secret@db.example:5433/orch?sslmode=require") == (
        "postgresql://db.example:5433/orch")


async def test_the_store_actor_answers_an_allocated_append_with_its_first_cursor(url):
    ref = ActorRef("store")
    backend = PostgresBackend(url)
    sup = Supervisor("root", [ChildSpec.actor("store", ref, lambda: StoreActor(backend))])
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            assert await ref.call(AllocatedAppend("p1", 0, (), (_event(1), _event(2)))) == 1
            assert await ref.call(AllocatedAppend("p1", 0, (), (_event(1),))) == 3
            with pytest.raises(StoreError):  # a rejected write is still an error
                await ref.call(AppendBatch("p1", 3, (), (_event(3),)))
            nursery.cancel_scope.cancel()



async def test_a_commit_in_doubt_crashes_the_store_which_comes_back_and_answers_what_was_stored(url):
    ref = ActorRef("store")
    backend = PostgresBackend(url)
    sup = Supervisor("root", [ChildSpec.actor("store", ref, lambda: StoreActor(backend))])
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            await ref.call(AppendBatch("p1", 1, (), (_event(1),)))
            assert backend.conn is not None
            backend.conn.execute(  # the session ends at the next COMMIT holding a wait position
                "CREATE FUNCTION die() RETURNS trigger LANGUAGE plpgsql AS"
                " $$ BEGIN PERFORM pg_terminate_backend(pg_backend_pid()); RETURN NULL; END $$;"
                " CREATE CONSTRAINT TRIGGER die AFTER INSERT ON wait_cursors"
                " DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION die()"
            )
            with pytest.raises(ActorCrashed):  # outcome unknown to the caller
                await ref.call(SaveWaitCursor("p1", "a", "k", 1))
            assert await ref.call(HighWater("p1")) == 1  # a new incarnation, a new connection
            assert backend.connects == 2
            nursery.cancel_scope.cancel()


def test_after_the_first_connection_an_open_that_cannot_connect_leaves_the_backend_waiting(url):
    b = opened_backend(url)
    good, b.url = b.url, "postgresql://127.0.0.1:1/test"
    b.open()  # a restarted store: not fatal
    _, (high,) = b.apply([], [HighWater("p1")])
    assert isinstance(high, ReadFailed) and high.transient
    b.url = good
    assert b.apply([], [HighWater("p1")])[1] == [0]
    b.close()
    with pytest.raises(psycopg.OperationalError):  # a first open that cannot connect raises
        PostgresBackend("postgresql://127.0.0.1:1/test").open()


# -- several processes on one database: two actor systems in one test, each its own tree --


def _system(tmp_path, url: str, name: str, *, listen: bool = True, **project: Any) -> ActorSystem:
    system = ActorSystem(SystemConfig(data_dir=tmp_path / name, store_url=url,
                                      project=ProjectConfig(**project)))
    if not listen:
        system.listener = None  # a process whose announcements never arrive
    return system


def _publish(n: int, who: str) -> Publish:
    return Publish("tick", {"topic": "t", "data": {"n": n, "who": who}, "ttl_seconds": 3600}, who, None)


async def _subscribed(system: ActorSystem, sink: Sink, since: int | None = None) -> ActorRef:
    ref = await system.project("p1")
    await ref.call(Subscribe(sink, None, None, EventFilter.parse(None), since))
    return ref


async def test_two_processes_appending_to_one_project_share_one_cursor_order_and_see_every_event(tmp_path, url):
    a, b = _system(tmp_path, url, "a"), _system(tmp_path, url, "b")
    sinks = [Sink("s-a#1"), Sink("s-b#1")]
    acked: dict[int, str] = {}
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(a.run)
            await nursery.start(b.run)
            refs = [await _subscribed(a, sinks[0]), await _subscribed(b, sinks[1])]

            async def writer(ref: ActorRef, who: str) -> None:
                for n in range(60):
                    reply = await ref.call(_publish(n, who), timeout=30)
                    assert int(reply["cursor"]) not in acked  # never a cursor twice
                    acked[int(reply["cursor"])] = who

            async with trio.open_nursery() as writers:
                for i in range(2):
                    writers.start_soon(writer, refs[0], f"a{i}")
                    writers.start_soon(writer, refs[1], f"b{i}")
            seen: list[list[int]] = [[], []]
            with trio.move_on_after(15):
                for i, sink in enumerate(sinks):
                    while len(seen[i]) < len(acked):
                        seen[i] += await sink.drain()
            for s in seen:  # each process's subscriber: every event, in cursor order, once
                assert s == sorted(acked)
            stats = [await r.call(ProjectStats()) for r in refs]
            assert all(st["remote_events"] > 0 for st in stats)
            # a subscriber of one process resumes by cursor on the other
            late = Sink("late#1")
            middle = sorted(acked)[len(acked) // 2]
            await _subscribed(b, late, since=middle)
            assert await late.drain() == [c for c in sorted(acked) if c > middle]
            nursery.cancel_scope.cancel()


async def test_a_process_that_missed_the_announcements_takes_the_cursors_after_the_others(tmp_path, url):
    a = _system(tmp_path, url, "a")
    b = _system(tmp_path, url, "b", listen=False, remote_poll=3600.0)
    sink = Sink("s-b#1")
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(a.run)
            await nursery.start(b.run)
            ref_b = await _subscribed(b, sink)  # loaded now: knows nothing of what follows
            ref_a = await a.project("p1")
            first = [int((await ref_a.call(_publish(n, "a")))["cursor"]) for n in range(3)]
            reply = await ref_b.call(_publish(9, "b"))  # its cursor was taken: reads, takes the next
            assert int(reply["cursor"]) == first[-1] + 1
            assert await sink.drain() == [*first, first[-1] + 1]  # the others' first, in order
            assert (await ref_b.call(ProjectStats()))["cursor_conflicts"] == 1
            stored = await ref_b.call(Wait("s", "tick", EventFilter.parse(None), 0, 100, 0))
            events = orjson.loads(stored.reply)["events"]
            assert [e["data"]["who"] for e in events] == ["a", "a", "a", "b"]
            assert events[-1]["cursor"] == reply["cursor"]
            nursery.cancel_scope.cancel()


async def test_a_wait_or_subscription_on_one_process_sees_what_another_acknowledged_before(tmp_path, url):
    a = _system(tmp_path, url, "a")
    b = _system(tmp_path, url, "b", listen=False, remote_poll=3600.0)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(a.run)
            await nursery.start(b.run)
            ref_b = await b.project("p1")  # loaded now: knows nothing of what follows
            ref_a = await a.project("p1")
            acked = [int((await ref_a.call(_publish(n, "a")))["cursor"]) for n in range(3)]
            answer = await ref_b.call(Wait("s", "tick", EventFilter.parse(None), 0, 100, 0))
            assert [int(e["cursor"]) for e in orjson.loads(answer.reply)["events"]] == acked
            acked.append(int((await ref_a.call(_publish(3, "a")))["cursor"]))
            sink = Sink("late#1")
            await _subscribed(b, sink, since=acked[0])
            assert await sink.drain() == acked[1:]
            nursery.cancel_scope.cancel()


async def test_a_store_crash_after_the_commit_is_settled_by_the_event_stored_at_the_batchs_cursor(tmp_path, url):
    a = _system(tmp_path, url, "a")
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(a.run)
            ref = await a.project("p1")
            first = await ref.call(_publish(0, "a"))
            a.store.arm_crash("next_write")  # committed, then the store crashes before answering
            reply = await ref.call(_publish(1, "a"), timeout=30)  # settled: it is ours, stored
            assert int(reply["cursor"]) == int(first["cursor"]) + 1
            nursery.cancel_scope.cancel()


async def test_a_batch_whose_cursor_another_process_stored_is_settled_not_stored(tmp_path, url):
    from orchestra.actors.errors import NotStored
    from orchestra.actors.profiles import Profiles
    from orchestra.actors.project import ProjectActor

    a, b = _system(tmp_path, url, "a"), _system(tmp_path, url, "b")
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(a.run)
            await nursery.start(b.run)
            taken = int((await (await b.project("p1")).call(_publish(0, "b")))["cursor"])
            # a process that appended at the same cursor and whose store stopped before answering:
            # the high-water reached its cursor, but the event stored there is not its own
            mine = AppendBatch("p1", taken, (), (EventRow("p1", taken, "tick", 1e12, b'{"mine":1}'),))
            for shared, settled in ((True, NotStored), (False, type(None))):
                actor = ProjectActor("p1", a.store, Profiles(), ProjectConfig(shared_store=shared))
                outcome = await actor._settle(mine, ActorCrashed("store", "test"))
                assert isinstance(outcome, settled)  # one process alone would take it as stored
            nursery.cancel_scope.cancel()


async def test_the_listener_hands_over_each_append_as_project_and_cursor(url):
    heard: list[dict[str, int] | None] = []
    listener = NotifyListener(url, heard.append, poll=0.1)
    b = opened_backend(url)
    try:
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                await nursery.start(listener.run)
                assert heard == [None]  # connected: look at everything once
                b.apply([AppendBatch("p1", 2, (), (_event(1), _event(2))),
                         AppendBatch("p:2", 1, (), (_event(1, "p:2"),))], [])
                b.apply([AppendBatch("p1", 2, (), (_event(2),))], [])  # refused: announces nothing
                b.apply([AllocatedAppend("p1", 0, (), (_event(1),))], [])
                with trio.move_on_after(10):
                    while sum(len(h or {}) for h in heard) < 3:  # noqa: ASYNC110 (another thread's)
                        await trio.sleep(0.02)
                await trio.sleep(0.3)  # and nothing more
                merged: dict[str, list[int]] = {}
                for h in heard[1:]:
                    assert h is not None
                    for project, cursor in h.items():
                        merged.setdefault(project, []).append(cursor)
                assert merged == {"p1": [2, 3], "p:2": [1]}
                nursery.cancel_scope.cancel()
    finally:
        b.close()


def test_an_allocated_append_stores_its_keys_answers_with_the_cursors_taken(url):
    b = opened_backend(url)
    try:
        b.apply([AppendBatch("p1", 7, (), (_event(7),))], [])
        answer = orjson.dumps({"cursor": encode_cursor(1), "results": [{"event_cursor": encode_cursor(2)}],
                               "other": encode_cursor(1)})
        key = IdempotencyRow("s", "k", b"f", answer, 1e12)
        (first,), _ = b.apply([AllocatedAppend("p1", 0, (), (_event(1), _event(2)), 0, (key,))], [])
        assert first == 8
        _, (found,) = b.apply([], [LookupKeys("p1", (("s", "k"),), 0)])
        assert orjson.loads(found[("s", "k")].answer) == {
            "cursor": encode_cursor(8), "results": [{"event_cursor": encode_cursor(9)}],
            "other": encode_cursor(1)}
    finally:
        b.close()


async def test_a_listener_whose_connection_is_lost_listens_again_and_says_to_look_at_everything(url):
    heard: list[dict[str, int] | None] = []
    listener = NotifyListener(url, heard.append, poll=0.1, retry=0.1)
    b = opened_backend(url)
    try:
        with trio.fail_after(30):
            async with trio.open_nursery() as nursery:
                await nursery.start(listener.run)
                assert b.conn is not None
                killed = b.conn.execute(  # this test's listener only (its schema's channel)
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
                    " WHERE query = format('LISTEN %I', 'orchestra_events:' || current_schema())"
                    " AND pid <> pg_backend_pid()").fetchall()
                assert killed
                with trio.move_on_after(10):
                    while listener.connects < 2:  # noqa: ASYNC110 (another thread's)
                        await trio.sleep(0.02)
                assert listener.connects == 2 and heard.count(None) == 2  # look again: maybe missed
                b.apply([AppendBatch("p1", 1, (), (_event(1),))], [])
                with trio.move_on_after(10):
                    while {"p1": 1} not in heard:  # noqa: ASYNC110 (another thread's)
                        await trio.sleep(0.02)
                assert {"p1": 1} in heard
                nursery.cancel_scope.cancel()
    finally:
        b.close()


def test_a_live_key_another_writer_stored_refuses_the_write_an_expired_one_is_taken_over(url):
    import time

    from orchestra.actors.store_postgres import KeyTaken

    a, b = opened_backend(url), opened_backend(url)
    try:
        live = IdempotencyRow("s", "k", b"f", b'{"first":1}', time.time() + 3600)
        assert a.apply([AppendBatch("p1", 1, (_result("r1"),), (_event(1),), 0, (live,))], [])[0] == [None]
        # another process that looked before that commit: its write of the same key is refused
        mine = IdempotencyRow("s", "k", b"f", b'{"second":1}', time.time() + 3600)
        (refused,), _ = b.apply([AppendBatch("p1", 2, (_result("r2"),), (_event(2),), 0, (mine,))], [])
        assert isinstance(refused, KeyTaken) and refused.transient
        _, (found, stored) = b.apply([], [LookupKeys("p1", (("s", "k"),), 0), GetResult("p1", "r2")])
        assert found[("s", "k")].answer == b'{"first":1}' and stored is None
        assert [c for c, _ in _stored(b)] == [1]
        # the same through the allocating path
        (refused,), _ = b.apply([AllocatedAppend("p1", 0, (_result("r2"),), (_event(2),), 0, (mine,))], [])
        assert isinstance(refused, KeyTaken)
        # an expired key (by the database's clock) is taken over
        old = IdempotencyRow("s", "old", b"f", b"{}", time.time() - 1)
        a.apply([AppendBatch("p1", 3, (), (_event(3),), 0, (old,))], [])
        new = IdempotencyRow("s", "old", b"g", b'{"new":1}', time.time() + 3600)
        assert b.apply([AppendBatch("p1", 4, (), (_event(4),), 0, (new,))], [])[0] == [None]
    finally:
        a.close()
        b.close()


async def test_a_keyed_write_repeated_on_another_process_gets_the_original_answer(tmp_path, url):
    from orchestra.actors.idempotency import IdemKey

    a, b = _system(tmp_path, url, "a"), _system(tmp_path, url, "b")
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(a.run)
            await nursery.start(b.run)
            body = {"topic": "t", "data": {"n": 1}, "ttl_seconds": 3600}
            idem = IdemKey("s", "k", b"fp")
            first = await (await a.project("p1")).call(Publish("tick", body, "s", None, idem))
            again = await (await b.project("p1")).call(Publish("tick", body, "s", None, idem))
            assert orjson.loads(again)["cursor"] == first["cursor"]  # the original, not stored again
            nursery.cancel_scope.cancel()


def test_announcements_are_parsed_to_each_projects_highest_cursor():
    assert parse_announcements(["p:1:5", "p:1:3", "q:7", "junk", "r:x"]) == {"p:1": 5, "q": 7}
