"""The pure event log: cursors, floor, trimming by count and by bytes, expiry."""

from __future__ import annotations

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st
from orchestra.actors.eventlog import Entry, EventLog
from orchestra.actors.events import encode_cursor


def entry(cursor: int, size: int = 10, expires_at: float = 100.0, event_type: str = "e") -> Entry:
    event = {"cursor": encode_cursor(cursor), "event_type": event_type, "topic": "t",
             "data": {"pad": "x" * size}}
    return Entry.of(event, orjson.dumps(event), expires_at)


def cursors(log: EventLog) -> list[int]:
    return [e.cursor for e in log]


def test_trims_the_oldest_by_count_and_moves_the_floor():
    log = EventLog(max_events=3, max_bytes=1 << 20)
    log.append(entry(c) for c in range(1, 6))
    assert cursors(log) == [3, 4, 5]
    assert log.floor == 2
    assert [e.cursor for e in log.after(3)] == [4, 5]
    assert [e.cursor for e in log.after(0)] == [3, 4, 5]


def test_trims_the_oldest_by_bytes_and_always_keeps_the_newest():
    one = len(entry(1, 100).body)
    log = EventLog(max_events=100, max_bytes=one * 2)
    log.append([entry(1, 100), entry(2, 100), entry(3, 100)])
    assert cursors(log) == [2, 3] and log.bytes == 2 * one and log.floor == 1
    log.append([entry(4, 10_000)])  # larger than the bound alone: kept, alone
    assert cursors(log) == [4] and log.floor == 3


def test_trim_below_announces_exactly_what_append_trims():
    log = EventLog(max_events=4, max_bytes=1 << 20)
    log.append(entry(c) for c in range(1, 4))
    new = [entry(c) for c in range(4, 7)]
    below = log.trim_below(new)
    assert cursors(log) == [1, 2, 3]  # unchanged
    log.append(new)
    assert below == cursors(log)[0] == 3
    assert log.trim_below([]) == 0


def test_expired_events_are_skipped_and_dropped_without_moving_the_floor():
    log = EventLog(max_events=10, max_bytes=1 << 20, floor=0)
    log.append([entry(1, expires_at=5), entry(2, expires_at=50), entry(3, expires_at=5)])
    assert [e.cursor for e in log.after(0, now=10)] == [2]
    assert log.drop_expired(10) == 2
    assert cursors(log) == [2] and log.floor == 0 and log.bytes == len(next(iter(log)).body)


def test_entries_keep_only_bytes_and_decode_on_demand():
    e = entry(7, 5)
    assert e.event_type == "e" and e.topic == "t"
    assert e.decoded()["data"] == {"pad": "xxxxx"}
    assert not hasattr(e, "__dict__")


def test_bounds_must_be_positive():
    with pytest.raises(ValueError):
        EventLog(0, 10)


@given(
    st.integers(1, 20), st.integers(50, 5000),
    st.lists(st.lists(st.integers(0, 300), max_size=8), max_size=12),
)
def test_the_bounds_hold_after_every_append(max_events, max_bytes, batches):
    log = EventLog(max_events, max_bytes)
    cursor = 0
    for sizes in batches:
        new = []
        for size in sizes:
            cursor += 1
            new.append(entry(cursor, size))
        below = log.trim_below(new)
        log.append(new)
        kept = cursors(log)
        assert kept == sorted(kept) and (not kept or kept[-1] == cursor)
        assert len(log) <= max_events
        assert log.bytes == sum(len(e.body) for e in log)
        assert log.bytes <= max_bytes or len(log) == 1
        if below:
            assert kept[0] == below and log.floor == below - 1
        if kept:
            assert log.floor < kept[0]
