"""The store backends' contract: one suite, every backend (SQLite in a file, memory)."""

from __future__ import annotations

import pytest
from orchestra.actors.store import (
    AppendBatch,
    EventRow,
    GetResult,
    LoadProject,
    PurgeExpired,
    QueryResults,
    ResultRow,
    SaveWaitCursor,
    SQLiteBackend,
    StoreCounts,
    StoreError,
)
from orchestra.actors.store_memory import MemoryBackend


@pytest.fixture(params=["sqlite", "memory"])
def backend(request, tmp_path):
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


def _read(backend, request):
    _, (outcome,) = backend.apply([], [request])
    if isinstance(outcome, Exception):
        raise outcome
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


def test_trimming_and_purging_drop_events_but_never_the_last_cursor(backend):
    _one(backend, AppendBatch("p1", 3, (), (_event(1, expires_at=5.0), _event(2), _event(3))))
    _one(backend, AppendBatch("p1", 4, (), (_event(4),), trim_below=3))
    assert _read(backend, LoadProject("p1", 0.0, 100)).events == [b'{"cursor":"3"}', b'{"cursor":"4"}']
    _one(backend, PurgeExpired(1e13))
    snap = _read(backend, LoadProject("p1", 0.0, 100))
    assert snap.events == [] and snap.last_cursor == 4
