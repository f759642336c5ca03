"""Idempotency keys: the pure table, and the project actor's keyed writes against the store.

The project actor runs under a supervisor with the real store actor over the in-memory
backend (tests/actors/conftest.py), so MockClock(autojump_threshold=0) drives time; the
backend's fault hooks reject, crash before or after committing, or fail to answer, on demand.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Any

import orjson
import pytest
import trio
import trio.testing
from hypothesis import given
from hypothesis import strategies as st
from orchestra.actors.errors import IdempotencyConflict, InvalidRequest, NotStored, OutcomeUnknown
from orchestra.actors.events import EventFilter
from orchestra.actors.idempotency import (
    IdemKey,
    IdempotencyEntry,
    IdempotencyTable,
    fingerprint,
    validate_key,
)
from orchestra.actors.project import (
    ProjectConfig,
    Publish,
    StoreResult,
    StoreResults,
    Wait,
)
from orchestra.actors.runtime import ActorRef, Supervisor
from orchestra.actors.store import (
    MIGRATIONS,
    AppendBatch,
    HighWater,
    IdempotencyRow,
    LookupKeys,
    PurgeExpired,
    SQLiteBackend,
)
from orchestra.actors.store_memory import MemoryBackend

from tests.actors.conftest import WallClock, start_domain

# -- the pure table --


def entry(answer: bytes = b"{}", fp: bytes = b"f", expires_at: float = 100.0) -> IdempotencyEntry:
    return IdempotencyEntry(fp, answer, expires_at)


def test_the_table_drops_the_least_recently_used_past_its_count():
    table = IdempotencyTable(max_entries=2)
    table.put(("a", "1"), entry(b"1"))
    table.put(("a", "2"), entry(b"2"))
    assert table.get(("a", "1"), 0) is not None  # now the most recent
    table.put(("a", "3"), entry(b"3"))
    assert table.get(("a", "2"), 0) is None
    assert [table.get(("a", k), 0).answer for k in "13"] == [b"1", b"3"]
    assert len(table) == 2


def test_the_table_is_bounded_by_bytes_and_keeps_no_entry_larger_than_its_bound():
    table = IdempotencyTable(max_entries=1000, max_bytes=2000)
    for i in range(10):
        table.put(("a", str(i)), entry(b"x" * 500))
    assert table.bytes <= 2000 and len(table) == 2
    assert table.get(("a", "9"), 0) is not None
    table.put(("a", "big"), entry(b"x" * 5000))
    assert table.get(("a", "big"), 0) is None and table.bytes <= 2000
    table.put(("a", "9"), entry(b"y"))  # replacing an entry accounts for the old one
    assert table.get(("a", "9"), 0).answer == b"y"
    assert table.bytes == sum(table._size(s, e) for s, e in table._entries.items())


def test_an_expired_entry_is_never_returned():
    table = IdempotencyTable()
    table.put(("a", "k"), entry(expires_at=10.0))
    assert table.get(("a", "k"), 9.9) is not None
    assert table.get(("a", "k"), 10.0) is None
    assert len(table) == 0 and table.bytes == 0


@given(st.text(max_size=300))
def test_a_key_is_a_printable_string_of_1_to_256_characters(text):
    ok = 1 <= len(text) <= 256 and text.isprintable()
    if ok:
        assert validate_key(text) == text
    else:
        with pytest.raises(InvalidRequest) as info:
            validate_key(text)
        assert info.value.field == "idempotency_key"


@pytest.mark.parametrize("bad", [None, 5, b"k", ["k"], "", "k" * 257, "a\x00b", "tab\there", "line\n"])
def test_bad_keys_are_refused(bad):
    with pytest.raises(InvalidRequest):
        validate_key(bad)


def test_the_fingerprint_ignores_key_order_but_not_the_operation_or_a_value():
    a = {"x": 1, "y": {"b": [1, 2], "a": "s"}}
    b = {"y": {"a": "s", "b": [1, 2]}, "x": 1}
    assert fingerprint("result.store", a) == fingerprint("result.store", b)
    assert fingerprint("result.store", a) != fingerprint("event.publish", a)
    assert fingerprint("result.store", a) != fingerprint("result.store", {**a, "x": 2})


# -- the project actor against an in-memory store --


@dataclass
class Rig:
    backend: MemoryBackend
    project: ActorRef
    store: ActorRef
    clock: WallClock
    sup: Supervisor

    async def store_result(self, key: str | None = "k1", sub: str = "a1", **extra: Any) -> Any:
        body = {"agent_id": sub, "agent_type": "python-specialist", "issue_id": "i1",
                "result": {"status": "success", **extra}}
        idem = IdemKey(sub, key, fingerprint("result.store", body)) if key is not None else None
        return await self.project.call(StoreResult(body, idem), timeout=30)

    def results(self) -> list[str]:
        return self.backend.result_ids()

    def events(self) -> list[tuple[int, bytes]]:
        return self.backend.events_of("p1")

    @property
    def lookups(self) -> int:
        return self.backend.seen[LookupKeys]


async def start_rig(nursery: trio.Nursery, **config: Any) -> Rig:
    d = await start_domain(nursery, ProjectConfig(**config))
    return Rig(d.backend, d.project, d.store, d.clock, d.sup)


def answer(reply: Any) -> dict[str, Any]:
    """A first answer is a dict, a repeat the original answer encoded."""
    return orjson.loads(reply) if isinstance(reply, bytes) else reply


async def test_a_repeat_answers_the_original_answer_and_stores_nothing_twice(nursery, autojump_clock):
    rig = await start_rig(nursery)
    first = await rig.store_result()
    again = await rig.store_result()
    assert isinstance(again, bytes) and answer(again) == first
    assert len(rig.results()) == 1 and len(rig.events()) == 1
    assert rig.lookups == 1  # the second was answered from memory
    other = await rig.store_result(key="k2")
    assert other["id"] != first["id"] and len(rig.results()) == 2


async def test_a_key_belongs_to_one_sub(nursery, autojump_clock):
    rig = await start_rig(nursery)
    a = await rig.store_result(sub="a1")
    b = await rig.store_result(sub="b2")
    assert a["id"] != b["id"] and len(rig.results()) == 2


async def test_a_repeat_of_another_request_is_a_conflict_and_stores_nothing(nursery, autojump_clock):
    rig = await start_rig(nursery)
    await rig.store_result(n=1)
    with pytest.raises(IdempotencyConflict) as info:
        await rig.store_result(n=2)
    assert info.value.details == {"field": "idempotency_key"}
    body = {"topic": "t", "data": {}, "ttl_seconds": 60}
    with pytest.raises(IdempotencyConflict):  # the same key on another operation
        await rig.project.call(Publish("e", body, "a1", "python-specialist",
                                       IdemKey("a1", "k1", fingerprint("event.publish", body))))
    assert len(rig.results()) == 1 and len(rig.events()) == 1


async def test_duplicates_in_one_batch_share_the_first_answer(nursery, autojump_clock):
    rig = await start_rig(nursery)
    replies: list[Any] = []
    conflicts: list[Exception] = []

    async def send(n: int) -> None:
        try:
            replies.append(await rig.store_result(n=n))
        except IdempotencyConflict as exc:
            conflicts.append(exc)

    assert rig.project.inject_fault("delay", 100)  # the writes below queue up: one batch
    async with trio.open_nursery() as n:
        for _ in range(5):
            n.start_soon(send, 1)
        n.start_soon(send, 2)
    # whichever body came first is stored; the other one's requests are conflicts
    assert {len(replies), len(conflicts)} == {1, 5}
    assert all(answer(r) == answer(replies[0]) for r in replies)
    assert len(rig.results()) == 1 and rig.lookups == 1


async def test_a_batch_of_results_and_a_publish_are_repeated_whole(nursery, autojump_clock):
    rig = await start_rig(nursery)
    bodies = tuple({"agent_id": "a1", "agent_type": "python-specialist", "issue_id": "i1",
                    "result": {"status": "success", "n": i}} for i in range(3))
    idem = IdemKey("a1", "b", fingerprint("result.store_batch", list(bodies)))
    first = await rig.project.call(StoreResults(bodies, idem), timeout=30)
    assert answer(await rig.project.call(StoreResults(bodies, idem), timeout=30)) == first
    body = {"topic": "t", "data": {"x": 1}, "ttl_seconds": 60}
    pidem = IdemKey("a1", "p", fingerprint("event.publish", body))
    published = await rig.project.call(Publish("e", body, "a1", None, pidem), timeout=30)
    assert answer(await rig.project.call(Publish("e", body, "a1", None, pidem), timeout=30)) == published
    assert len(rig.results()) == 3 and len(rig.events()) == 4


async def test_after_the_window_a_key_is_new_again(nursery, autojump_clock):
    rig = await start_rig(nursery, idempotency_window=60.0)
    first = await rig.store_result()
    rig.clock.now += 59
    assert answer(await rig.store_result())["id"] == first["id"]
    rig.clock.now += 1
    later = await rig.store_result()
    assert isinstance(later, dict) and later["id"] != first["id"]
    assert len(rig.results()) == 2


async def test_a_repeat_after_a_project_restart_is_answered_from_the_store(nursery, autojump_clock):
    rig = await start_rig(nursery, idempotency_window=60.0)
    first = await rig.store_result()
    rig.project.inject_fault("crash")
    await trio.testing.wait_all_tasks_blocked()
    assert rig.project.incarnation == 2
    again = await rig.store_result()
    assert answer(again) == first and rig.lookups == 2
    assert len(rig.results()) == 1
    rig.clock.now += 61  # the store's copy expires with the window too
    rig.project.inject_fault("crash")
    await trio.testing.wait_all_tasks_blocked()
    assert answer(await rig.store_result())["id"] != first["id"]


async def test_a_rolled_back_write_says_not_stored_and_does_not_record_its_key(nursery, autojump_clock):
    rig = await start_rig(nursery)
    rig.backend.fail_writes(AppendBatch)
    with pytest.raises(NotStored) as info:
        await rig.store_result()
    assert info.value.details["outcome"] == "not_stored" and "not stored" in info.value.message
    assert rig.results() == [] and rig.backend.keys_of("p1") == {}
    stored = await rig.store_result()
    assert isinstance(stored, dict) and len(rig.results()) == 1


async def test_a_store_crash_before_the_commit_is_settled_as_not_stored(nursery, autojump_clock):
    rig = await start_rig(nursery)
    rig.backend.crash(AppendBatch)
    with pytest.raises(NotStored):
        await rig.store_result()
    assert rig.results() == []
    assert isinstance(await rig.store_result(), dict) and len(rig.results()) == 1


async def test_a_store_crash_after_the_commit_is_settled_as_stored(nursery, autojump_clock):
    rig = await start_rig(nursery)
    rig.backend.crash(AppendBatch, after_commit=True)
    reply = await rig.store_result(key=None)  # committed: the truth is "stored", keyed or not
    assert reply["stored"] is True and rig.results() == [reply["id"]]
    answer = await rig.project.call(Wait("w", "agent_completed", EventFilter.parse(None), 0, 10, 0), timeout=5)
    found = orjson.loads(answer.reply)
    assert [e["data"]["result_id"] for e in found["events"]] == [reply["id"]]  # and delivered


async def test_an_unknown_outcome_says_so_and_a_retry_with_the_key_answers_the_original(nursery, autojump_clock):
    rig = await start_rig(nursery)
    rig.backend.crash(AppendBatch, after_commit=True)
    rig.backend.fail_reads(HighWater)
    with pytest.raises(OutcomeUnknown) as info:
        await rig.store_result()
    assert info.value.details["outcome"] == "unknown" and "same idempotency key" in info.value.message
    assert len(rig.results()) == 1  # it was in fact stored
    again = await rig.store_result()
    assert answer(again)["id"] == rig.results()[0] and len(rig.results()) == 1


async def test_a_key_that_cannot_be_checked_stores_nothing(nursery, autojump_clock):
    rig = await start_rig(nursery)
    rig.backend.fail_reads(LookupKeys)
    with pytest.raises(NotStored):
        await rig.store_result()
    assert rig.results() == []
    assert isinstance(await rig.store_result(), dict)


# -- the SQLite table --


def test_keys_are_committed_with_their_write_looked_up_and_purged_after_their_window(tmp_path):
    path = tmp_path / "o.db"
    old = sqlite3.connect(path)  # a store of the previous schema version is migrated
    old.executescript(MIGRATIONS[0] + "; PRAGMA user_version=1;")
    old.close()
    backend = SQLiteBackend(path)
    backend.open()
    try:
        row = IdempotencyRow("a1", "k", b"fp", b'{"id":"x"}', 100.0)
        outcomes, _ = backend.apply([AppendBatch("p1", 1, keys=(row,))], [])
        assert outcomes == [None]
        _, (found, other, gone) = backend.apply([], [
            LookupKeys("p1", (("a1", "k"), ("a1", "nope")), 50.0),
            LookupKeys("p2", (("a1", "k"),), 50.0),
            LookupKeys("p1", (("a1", "k"),), 100.0),
        ])
        assert found == {("a1", "k"): row} and other == {} and gone == {}
        _, (high,) = backend.apply([], [HighWater("p1")])
        assert high == 1
        backend.apply([PurgeExpired(100.0)], [])
        assert backend.db.execute("SELECT count(*) FROM idempotency").fetchone()[0] == 0
    finally:
        backend.close()
