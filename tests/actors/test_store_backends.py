"""The store backends' contract: one suite, every backend (SQLite in a file, memory, PostgreSQL
in a fresh schema; the PostgreSQL cases skip with one line when no server is there)."""

from __future__ import annotations

import pytest
from orchestra.actors.store import (
    AgentRow,
    AgentSeq,
    AppendBatch,
    CommitFailed,
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
    PurgeExpired,
    QueryResults,
    ReadFailed,
    ResultRow,
    SaveAgent,
    SaveWaitCursor,
    SQLiteBackend,
    StoreCounts,
    StoreError,
    WriteRejected,
)
from orchestra.actors.store_memory import BackendCrash, MemoryBackend

from tests.actors.conftest import read_one as _read
from tests.postgres import fresh_schema


@pytest.fixture(params=["sqlite", "memory", "postgres"])
def backend(request, tmp_path):
    if request.param == "postgres":
        from orchestra.actors.store_postgres import PostgresBackend

        with fresh_schema() as url:
            b = PostgresBackend(url)
            b.open()
            yield b
            b.close()
        return
    b = SQLiteBackend(tmp_path / "o.db") if request.param == "sqlite" else MemoryBackend()
    b.open()
    yield b
    b.close()


def _result(rid: str, project: str = "p1", issue: str = "ISS-1", status: str = "success",
            at: str = "2026-01-01T00:00:00.000000Z") -> ResultRow:
    body = b'{"id":"%s","issue_id":"%s","result":{"status":"%s"}}' % (rid.encode(), issue.encode(), status.encode())
    return ResultRow(rid, project, issue, "python-specialist", "a1", status, at, body)


def _event(cursor: int, project: str = "p1", expires_at: float = 1e12) -> EventRow:
    return EventRow(project, cursor, "tick", expires_at, b'{"cursor":"%d"}' % cursor)


def _one(backend, request):
    (outcome,), _ = backend.apply([request], [])
    return outcome


def test_an_appended_batch_is_readable_in_the_same_call(backend):
    writes, reads = backend.apply(
        [AppendBatch("p1", 2, (_result("r1"),), (_event(1), _event(2)))],
        [GetResult("p1", "r1"), StoreCounts()],
    )
    assert writes == [None]
    assert reads[0].startswith(b'{"id":"r1"') and reads[1] == {"results": 1, "events": 2, "projects": 1}


def test_another_projects_result_is_not_found(backend):
    _one(backend, AppendBatch("p1", 0, (_result("r1"),)))
    assert _read(backend, GetResult("p2", "r1")) is None


def test_a_failing_write_fails_alone(backend):
    _one(backend, AppendBatch("p1", 1, (_result("r1"),), (_event(1),)))
    outcomes, _ = backend.apply(
        [AppendBatch("p1", 2, (_result("r1"),), (_event(2),)),  # duplicate result id
         AppendBatch("p1", 3, (_result("r3"),), (_event(3),))],
        [],
    )
    assert isinstance(outcomes[0], StoreError) and outcomes[1] is None
    snap = _read(backend, LoadProject("p1", 0.0, 100))
    assert [b for b in snap.events] == [b'{"cursor":"1"}', b'{"cursor":"3"}']  # nothing of the failed one
    assert _read(backend, GetResult("p1", "r3")) is not None


def test_queries_are_newest_first_filtered_and_paged(backend):
    rows = tuple(_result(f"r{i}", issue="ISS-1" if i % 2 else "ISS-2", at=f"2026-01-0{i}T00:00:00.000000Z")
                 for i in range(1, 6))
    _one(backend, AppendBatch("p1", 0, rows))
    page = _read(backend, QueryResults("p1", issue_id="ISS-1", limit=2))
    assert [b[1].split(b'"')[3] for b in page] == [b"r5", b"r3"]
    rest = _read(backend, QueryResults("p1", issue_id="ISS-1", limit=2, before_seq=page[-1][0]))
    assert [b[1].split(b'"')[3] for b in rest] == [b"r1"]
    since = _read(backend, QueryResults("p1", since="2026-01-04T00:00:00.000000Z"))
    assert len(since) == 2
    assert len(_read(backend, QueryResults("p1", q="R2"))) == 1  # case-insensitive substring
    assert _read(backend, QueryResults("p2")) == []


def test_a_project_loads_its_last_cursor_retained_events_and_wait_positions(backend):
    _one(backend, AppendBatch("p1", 7, (), (_event(5, expires_at=10.0), _event(6), _event(7))))
    _one(backend, SaveWaitCursor("p1", "a1", "tick", 6))
    _one(backend, SaveWaitCursor("p1", "a1", "tick", 5))  # never moves back
    snap = _read(backend, LoadProject("p1", 20.0, 1))
    assert snap.last_cursor == 7 and snap.events == [b'{"cursor":"7"}']
    assert snap.wait_cursors == {("a1", "tick"): 6}
    assert _read(backend, LoadProject("p1", 20.0, 10)).events == [b'{"cursor":"6"}', b'{"cursor":"7"}']
    assert _read(backend, LoadProject("p1", 20.0, 0)).events == []
    assert len(_read(backend, LoadProject("p1", 20.0, -1)).events) == 2  # no bound, as SQLite's LIMIT -1


def test_trimming_and_purging_drop_events_but_never_the_last_cursor(backend):
    _one(backend, AppendBatch("p1", 3, (), (_event(1, expires_at=5.0), _event(2), _event(3))))
    _one(backend, AppendBatch("p1", 4, (), (_event(4),), trim_below=3))
    assert _read(backend, LoadProject("p1", 0.0, 100)).events == [b'{"cursor":"3"}', b'{"cursor":"4"}']
    _one(backend, PurgeExpired(1e13))
    snap = _read(backend, LoadProject("p1", 0.0, 100))
    assert snap.events == [] and snap.last_cursor == 4


def _key(sub: str = "a1", key: str = "k", expires_at: float = 100.0, answer: bytes = b'{"id":"x"}') -> IdempotencyRow:
    return IdempotencyRow(sub, key, b"fp", answer, expires_at)


def test_keys_commit_with_their_batch_are_looked_up_per_project_until_they_expire(backend):
    row = _key()
    assert _one(backend, AppendBatch("p1", 1, keys=(row,))) is None
    _, (found, other, gone) = backend.apply([], [
        LookupKeys("p1", (("a1", "k"), ("a1", "nope")), 50.0),
        LookupKeys("p2", (("a1", "k"),), 50.0),
        LookupKeys("p1", (("a1", "k"),), 100.0),  # expired at its instant
    ])
    assert found == {("a1", "k"): row} and other == {} and gone == {}


def test_a_key_of_a_rejected_batch_is_not_recorded(backend):
    _one(backend, AppendBatch("p1", 1, (_result("r1"),)))
    outcome = _one(backend, AppendBatch("p1", 2, (_result("r1"),), keys=(_key(),)))  # duplicate id
    assert isinstance(outcome, StoreError)
    assert _read(backend, LookupKeys("p1", (("a1", "k"),), 0.0)) == {}


def test_an_expired_key_is_taken_over_by_a_new_write(backend):
    _one(backend, AppendBatch("p1", 1, keys=(_key(expires_at=10.0, answer=b"old"),)))
    _one(backend, AppendBatch("p1", 2, keys=(_key(expires_at=200.0, answer=b"new"),)))
    assert _read(backend, LookupKeys("p1", (("a1", "k"),), 50.0))[("a1", "k")].answer == b"new"


def test_the_high_water_cursor_only_grows_and_is_zero_for_an_unknown_project(backend):
    assert _read(backend, HighWater("p1")) == 0
    _one(backend, AppendBatch("p1", 5))
    _one(backend, AppendBatch("p1", 3))  # an older batch never moves it back
    assert _read(backend, HighWater("p1")) == 5 and _read(backend, HighWater("p2")) == 0


def test_purging_drops_expired_keys_and_events_and_keeps_the_live_ones(backend):
    _one(backend, AppendBatch("p1", 2, (), (_event(1, expires_at=10.0), _event(2, expires_at=30.0)),
                              keys=(_key("a1", "old", 10.0), _key("a1", "new", 30.0))))
    _one(backend, PurgeExpired(10.0))
    found = _read(backend, LookupKeys("p1", (("a1", "old"), ("a1", "new")), 0.0))
    assert list(found) == [("a1", "new")]
    assert _read(backend, LoadProject("p1", 0.0, 100)).events == [b'{"cursor":"2"}']
    assert _read(backend, StoreCounts())["events"] == 1


def test_values_sqlite_cannot_bind_fail_alone(backend):
    outcomes, reads = backend.apply(
        [AppendBatch("p1", 2**63), AppendBatch("p1", 1)],
        [QueryResults("p1", before_seq=2**63), QueryResults("p1", q="\ud800"), HighWater("p1")],
    )
    assert isinstance(outcomes[0], StoreError) and outcomes[1] is None
    assert isinstance(reads[0], StoreError) and isinstance(reads[1], StoreError) and reads[2] == 1


def test_a_query_limit_bounds_the_page(backend):
    _one(backend, AppendBatch("p1", 0, tuple(_result(f"r{i}") for i in range(3))))
    assert len(_read(backend, QueryResults("p1", limit=2))) == 2
    assert _read(backend, QueryResults("p1", limit=0)) == []


# -- the memory backend's fault hooks --


def test_an_armed_write_fault_fails_the_next_write_of_its_type_alone():
    b = MemoryBackend()
    b.open()
    b.fail_writes(AppendBatch)
    outcomes, _ = b.apply([SaveWaitCursor("p1", "a", "k", 1), AppendBatch("p1", 1, (_result("r1"),)),
                           AppendBatch("p1", 2, (_result("r2"),))], [])
    assert outcomes[0] is None and isinstance(outcomes[1], WriteRejected) and outcomes[2] is None
    assert b.result_ids() == ["r2"]


def test_an_armed_read_fault_fails_reads_of_its_type_until_disarmed():
    b = MemoryBackend()
    b.open()
    b.fail_reads(HighWater, times=None)
    for _ in range(3):
        _, (high, counts) = b.apply([], [HighWater("p1"), StoreCounts()])
        assert isinstance(high, ReadFailed) and high.transient and counts["projects"] == 0
    b.disarm()
    assert b.apply([], [HighWater("p1")])[1] == [0]
    assert b.seen[HighWater] == 4


def test_a_failed_commit_applies_none_of_its_writes():
    b = MemoryBackend()
    b.open()
    b.fail_commit(AppendBatch)
    outcomes, (counts,) = b.apply([AppendBatch("p1", 1, (_result("r1"),)), SaveWaitCursor("p1", "a", "k", 1)],
                                  [StoreCounts()])
    assert all(isinstance(o, CommitFailed) for o in outcomes)
    assert counts == {"results": 0, "events": 0, "projects": 0} and b.wait_cursors_of("p1") == {}


@pytest.mark.parametrize("after_commit", [False, True])
def test_a_crash_raises_out_of_apply_before_or_after_the_commit(after_commit):
    b = MemoryBackend()
    b.open()
    b.crash(AppendBatch, after_commit=after_commit)
    b.apply([SaveWaitCursor("p1", "a", "k", 1)], [])  # not armed for this one
    with pytest.raises(BackendCrash):
        b.apply([AppendBatch("p1", 1, (_result("r1"),))], [])
    assert b.result_ids() == (["r1"] if after_commit else [])
    assert b.apply([AppendBatch("p1", 2)], [])[0] == [None]  # fired once


# -- spawned agents' records, and keys holding a NUL (a wait key is type NUL filter) --


def _agent(agent_id: str, state: str = "running", seq: int = 1, project: str = "p1", **kw) -> AgentRow:
    return AgentRow(agent_id, project, state, seq, "t", b'{"agent_id":"%s"}' % agent_id.encode(), **kw)


def test_agent_records_are_found_by_id_state_and_spawn_key_and_keep_their_first_key(backend):
    assert backend.apply([SaveAgent(_agent("a1", "starting", 1, spawn_key="s\x00k")),
                          SaveAgent(_agent("a2", "exited", 2)),
                          SaveAgent(_agent("b1", "stalled", 3, project="p2"))], [])[0] == [None] * 3
    _one(backend, SaveAgent(_agent("a1", "running", 1, answer=b'{"agent_id":"a1"}')))
    _one(backend, SaveAgent(_agent("a1", "running", 1, spawn_key="other", answer=b"{}")))
    a1 = _read(backend, GetAgent("p1", "a1"))
    assert (a1.state, a1.spawn_key, a1.answer) == ("running", "s\x00k", b'{"agent_id":"a1"}')
    assert _read(backend, GetAgent("p2", "a1")) is None
    assert [r.agent_id for r in _read(backend, ListAgents("p1"))] == ["a2", "a1"]
    assert [r.agent_id for r in _read(backend, ListAgents("p1", state="exited"))] == ["a2"]
    assert [r.agent_id for r in _read(backend, LiveAgents())] == ["a1", "b1"]
    assert _read(backend, FindSpawn("p1", "s\x00k")).agent_id == "a1"
    assert _read(backend, FindSpawn("p2", "s\x00k")) is None
    assert _read(backend, AgentSeq()) == 3
    clash = _one(backend, SaveAgent(_agent("a3", seq=4, spawn_key="s\x00k")))
    assert isinstance(clash, StoreError) and _read(backend, GetAgent("p1", "a3")) is None


def test_a_spawn_key_and_answer_once_set_are_kept(backend):
    backend.apply([SaveAgent(_agent("a1", "starting", spawn_key="s\x00k"))], [])
    backend.apply([SaveAgent(_agent("a1", "running", answer=b'{"agent_id":"a1"}'))], [])
    backend.apply([SaveAgent(_agent("a1", "exited", answer=b'{"other":1}'))], [])
    row = _read(backend, GetAgent("p1", "a1"))
    assert (row.state, row.spawn_key, row.answer) == ("exited", "s\x00k", b'{"agent_id":"a1"}')
    assert _read(backend, LiveAgents()) == []


def test_a_spawn_key_belongs_to_one_agent_per_project(backend):
    backend.apply([SaveAgent(_agent("a1", spawn_key="s\x00k"))], [])
    (outcome,), _ = backend.apply([SaveAgent(_agent("a2", seq=2, spawn_key="s\x00k"))], [])
    assert isinstance(outcome, StoreError)
    assert _read(backend, GetAgent("p1", "a2")) is None
    (outcome,), _ = backend.apply([SaveAgent(_agent("b1", seq=3, project="p2", spawn_key="s\x00k"))], [])
    assert outcome is None


def test_wait_positions_and_idempotency_scopes_may_hold_a_nul(backend):
    _one(backend, SaveWaitCursor("p1", "a\x001", "tick\x00x > 1", 4))
    _one(backend, AppendBatch("p1", 1, keys=(_key("a\x001", "k\x00"),)))
    assert _read(backend, LoadProject("p1", 0.0, 10)).wait_cursors == {("a\x001", "tick\x00x > 1"): 4}
    assert list(_read(backend, LookupKeys("p1", (("a\x001", "k\x00"),), 0.0))) == [("a\x001", "k\x00")]


def test_a_group_of_mixed_writes_stores_what_they_store_one_by_one(backend):
    outcomes, (snap, found, high, counts) = backend.apply(
        [AppendBatch("p1", 2, (_result("r1"),), (_event(1), _event(2)), keys=(_key(answer=b"first"),)),
         SaveWaitCursor("p1", "a1", "tick", 2),
         AppendBatch("p2", 1, (_result("r2", project="p2"),), (_event(1, project="p2"),)),
         AppendBatch("p1", 4, (_result("r3"),), (_event(3), _event(4)), trim_below=2,
                     keys=(_key(answer=b"second"),)),
         SaveWaitCursor("p1", "a1", "tick", 1),
         SaveAgent(_agent("x1", "starting", 1)),
         SaveAgent(_agent("x1", "running", 1))],
        [LoadProject("p1", 0.0, 100), LookupKeys("p1", (("a1", "k"),), 0.0), HighWater("p2"), StoreCounts()],
    )
    assert outcomes == [None] * 7
    assert snap.last_cursor == 4 and snap.events == [b'{"cursor":"%d"}' % c for c in (2, 3, 4)]
    assert snap.wait_cursors == {("a1", "tick"): 2} and found[("a1", "k")].answer == b"second"
    assert high == 1 and counts == {"results": 3, "events": 4, "projects": 2}
    assert [r[1].split(b'"')[3] for r in _read(backend, QueryResults(None))] == [b"r3", b"r2", b"r1"]
    assert _read(backend, GetAgent("p1", "x1")).state == "running"


def test_a_large_append_is_stored_whole_in_order_and_a_bad_row_in_it_fails_it_whole(backend):
    # SQLite inserts rows 64 to a statement: a batch of 150 spans two full statements and a rest
    rows = tuple(_result(f"r{i:03d}") for i in range(150))
    events = tuple(_event(c) for c in range(1, 151))
    assert _one(backend, AppendBatch("p1", 150, rows, events)) is None
    assert [seq_body[1].split(b'"')[3] for seq_body in _read(backend, QueryResults("p1", limit=200))] == [
        f"r{i:03d}".encode() for i in reversed(range(150))]
    assert _read(backend, LoadProject("p1", 0.0, 1000)).events == [e.body for e in events]
    again = tuple(_result(f"s{i:03d}") for i in range(100)) + (_result("r070"),)  # a duplicate, last
    outcomes, _ = backend.apply(
        [AppendBatch("p1", 250, again, tuple(_event(c) for c in range(151, 251))),
         AppendBatch("p1", 251, (_result("t1"),), (_event(251),))],
        [],
    )
    assert isinstance(outcomes[0], StoreError) and outcomes[1] is None
    assert _read(backend, StoreCounts()) == {"results": 151, "events": 151, "projects": 1}
