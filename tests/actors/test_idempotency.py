"""Idempotency keys: the pure table, and the project actor's keyed writes against an in-memory store.

The project actor runs under a supervisor with a store actor that answers the store's
messages from dicts (so MockClock(autojump_threshold=0) drives time) and can reject, crash
before or after committing, or fail to answer, on demand.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass, field
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
from orchestra.actors.profiles import Profiles
from orchestra.actors.project import (
    ProjectActor,
    ProjectConfig,
    Publish,
    StoreResult,
    StoreResults,
    Wait,
)
from orchestra.actors.runtime import Actor, ActorRef, Call, ChildSpec, Supervisor
from orchestra.actors.store import (
    MIGRATIONS,
    AppendBatch,
    HighWater,
    IdempotencyRow,
    LoadProject,
    LookupKeys,
    ProjectSnapshot,
    PurgeExpired,
    SQLiteBackend,
    StoreError,
)

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
class MemoryState:
    """The durable state; outlives store restarts. The counters inject one fault each."""

    results: dict[str, bytes] = field(default_factory=dict)
    events: dict[int, bytes] = field(default_factory=dict)
    last_cursor: int = 0
    keys: dict[tuple[str, str], IdempotencyRow] = field(default_factory=dict)
    reject: int = 0  # appends answered StoreError (rolled back)
    crash_before: int = 0  # appends that crash the store before committing
    crash_after: int = 0  # appends that crash the store after committing
    high_water_fails: int = 0  # HighWater reads answered StoreError
    lookup_fails: int = 0  # LookupKeys reads answered StoreError
    lookups: int = 0


class StoreBug(Exception):
    pass


class MemoryStore(Actor):
    max_batch = 64

    def __init__(self, state: MemoryState) -> None:
        self.s = state

    async def handle_batch(self, calls: list[Call]) -> None:
        for call in calls:
            self._one(call)

    def _one(self, call: Call) -> None:
        s, msg = self.s, call.msg
        if isinstance(msg, LoadProject):
            call.reply(ProjectSnapshot(s.last_cursor, [s.events[c] for c in sorted(s.events)]))
        elif isinstance(msg, AppendBatch):
            if s.reject:
                s.reject -= 1
                call.fail(StoreError("commit failed: disk I/O error"))
                return
            if s.crash_before:
                s.crash_before -= 1
                raise StoreBug("before the commit")
            for r in msg.results:
                s.results[r.id] = r.body
            for e in msg.events:
                s.events[e.cursor] = e.body
            for k in msg.keys:
                s.keys[(k.sub, k.key)] = k
            s.last_cursor = max(s.last_cursor, msg.last_cursor)
            if s.crash_after:
                s.crash_after -= 1
                raise StoreBug("after the commit")
            call.reply(None)
        elif isinstance(msg, LookupKeys):
            s.lookups += 1
            if s.lookup_fails:
                s.lookup_fails -= 1
                call.fail(StoreError("read failed"))
                return
            call.reply({sc: s.keys[sc] for sc in msg.scopes if sc in s.keys and s.keys[sc].expires_at > msg.now})
        elif isinstance(msg, HighWater):
            if s.high_water_fails:
                s.high_water_fails -= 1
                call.fail(StoreError("read failed"))
                return
            call.reply(s.last_cursor)
        else:
            call.reply(None)  # wait positions: not kept here


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@dataclass
class Rig:
    state: MemoryState
    project: ActorRef
    store: ActorRef
    clock: Clock
    sup: Supervisor

    async def store_result(self, key: str | None = "k1", sub: str = "a1", **extra: Any) -> Any:
        body = {"agent_id": sub, "agent_type": "python-specialist", "issue_id": "i1",
                "result": {"status": "success", **extra}}
        idem = IdemKey(sub, key, fingerprint("result.store", body)) if key is not None else None
        return await self.project.call(StoreResult(body, idem), timeout=30)


async def start_rig(nursery: trio.Nursery, **config: Any) -> Rig:
    state, clock = MemoryState(), Clock()
    store = ActorRef("store", 256)
    project = ActorRef("project:p1", 256)
    cfg = ProjectConfig(**config)
    sup = Supervisor("root", [
        ChildSpec.actor("store", store, lambda: MemoryStore(state)),
        ChildSpec.actor("project:p1", project,
                        lambda: ProjectActor("p1", store, Profiles(), cfg, wall_clock=clock)),
    ], max_restarts=100)
    await nursery.start(sup.run)
    return Rig(state, project, store, clock, sup)


def answer(reply: Any) -> dict[str, Any]:
    """A first answer is a dict, a repeat the original answer encoded."""
    return orjson.loads(reply) if isinstance(reply, bytes) else reply


async def test_a_repeat_answers_the_original_answer_and_stores_nothing_twice(nursery, autojump_clock):
    rig = await start_rig(nursery)
    first = await rig.store_result()
    again = await rig.store_result()
    assert isinstance(again, bytes) and answer(again) == first
    assert len(rig.state.results) == 1 and len(rig.state.events) == 1
    assert rig.state.lookups == 1  # the second was answered from memory
    other = await rig.store_result(key="k2")
    assert other["id"] != first["id"] and len(rig.state.results) == 2


async def test_a_key_belongs_to_one_sub(nursery, autojump_clock):
    rig = await start_rig(nursery)
    a = await rig.store_result(sub="a1")
    b = await rig.store_result(sub="b2")
    assert a["id"] != b["id"] and len(rig.state.results) == 2


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
    assert len(rig.state.results) == 1 and len(rig.state.events) == 1


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
    assert len(rig.state.results) == 1 and rig.state.lookups == 1


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
    assert len(rig.state.results) == 3 and len(rig.state.events) == 4


async def test_after_the_window_a_key_is_new_again(nursery, autojump_clock):
    rig = await start_rig(nursery, idempotency_window=60.0)
    first = await rig.store_result()
    rig.clock.now += 59
    assert answer(await rig.store_result())["id"] == first["id"]
    rig.clock.now += 1
    later = await rig.store_result()
    assert isinstance(later, dict) and later["id"] != first["id"]
    assert len(rig.state.results) == 2


async def test_a_repeat_after_a_project_restart_is_answered_from_the_store(nursery, autojump_clock):
    rig = await start_rig(nursery, idempotency_window=60.0)
    first = await rig.store_result()
    rig.project.inject_fault("crash")
    await trio.testing.wait_all_tasks_blocked()
    assert rig.project.incarnation == 2
    again = await rig.store_result()
    assert answer(again) == first and rig.state.lookups == 2
    assert len(rig.state.results) == 1
    rig.clock.now += 61  # the store's copy expires with the window too
    rig.project.inject_fault("crash")
    await trio.testing.wait_all_tasks_blocked()
    assert answer(await rig.store_result())["id"] != first["id"]


async def test_a_rolled_back_write_says_not_stored_and_does_not_record_its_key(nursery, autojump_clock):
    rig = await start_rig(nursery)
    rig.state.reject = 1
    with pytest.raises(NotStored) as info:
        await rig.store_result()
    assert info.value.details["outcome"] == "not_stored" and "not stored" in info.value.message
    assert rig.state.results == {} and rig.state.keys == {}
    stored = await rig.store_result()
    assert isinstance(stored, dict) and len(rig.state.results) == 1


async def test_a_store_crash_before_the_commit_is_settled_as_not_stored(nursery, autojump_clock):
    rig = await start_rig(nursery)
    rig.state.crash_before = 1
    with pytest.raises(NotStored):
        await rig.store_result()
    assert rig.state.results == {}
    assert isinstance(await rig.store_result(), dict) and len(rig.state.results) == 1


async def test_a_store_crash_after_the_commit_is_settled_as_stored(nursery, autojump_clock):
    rig = await start_rig(nursery)
    rig.state.crash_after = 1
    reply = await rig.store_result(key=None)  # committed: the truth is "stored", keyed or not
    assert reply["stored"] is True and list(rig.state.results) == [reply["id"]]
    answer = await rig.project.call(Wait("w", "agent_completed", EventFilter.parse(None), 0, 10, 0), timeout=5)
    found = orjson.loads(answer.reply)
    assert [e["data"]["result_id"] for e in found["events"]] == [reply["id"]]  # and delivered


async def test_an_unknown_outcome_says_so_and_a_retry_with_the_key_answers_the_original(nursery, autojump_clock):
    rig = await start_rig(nursery)
    rig.state.crash_after = 1
    rig.state.high_water_fails = 1
    with pytest.raises(OutcomeUnknown) as info:
        await rig.store_result()
    assert info.value.details["outcome"] == "unknown" and "same idempotency key" in info.value.message
    assert len(rig.state.results) == 1  # it was in fact stored
    again = await rig.store_result()
    assert answer(again)["id"] == next(iter(rig.state.results)) and len(rig.state.results) == 1


async def test_a_key_that_cannot_be_checked_stores_nothing(nursery, autojump_clock):
    rig = await start_rig(nursery)
    rig.state.lookup_fails = 1
    with pytest.raises(NotStored):
        await rig.store_result()
    assert rig.state.results == {}
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
