"""The filter grammar, cursors and times: pure functions, no server."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st
from orchestra.actors.errors import InvalidFilter
from orchestra.actors.events import CURSOR_WIDTH, EventFilter, decode_cursor, encode_cursor
from orchestra.actors.records import iso_time

EVENT = {
    "event_type": "agent_completed",
    "topic": "coordination",
    "publisher": "orchestra",
    "agent_type": "python-specialist",
    "correlation_id": "iss-12",
    "data": {"score": 95, "issue_id": "iss-12", "nested": {"level": "deep"}, "text": "a, b", "ok": True,
             "agent_type": "overridden-in-data"},
}


@pytest.mark.parametrize(
    "expr, expected",
    [
        ("score:95", True),
        ("score:>90", True),
        ("score:>=95", True),
        ("score:<95", False),
        ("score:<=95.0", True),
        ("issue_id:iss-*", True),
        ("issue_id:iss-?2", True),
        ("issue_id:other-*", False),
        ("!topic:coordination", False),
        ("!topic:other", True),
        ("topic:other|nested.level:deep", True),
        ("topic:other|publisher:nobody", False),
        ('text:"a, b"', True),
        ("ok:true", True),
        ("event_type:agent_completed, score:>90", True),
        ("event_type:agent_completed,score:>99", False),
        ("agent_type:overridden-in-data", True),  # data first, then the event's own fields
        ("correlation_id:iss-12", True),
        ("missing:x", False),
        ("!missing:x", True),
        ("nested:x", False),  # an object is never equal to a value
        ("", True),
    ],
)
def test_filter_matches(expr, expected):
    assert EventFilter.parse(expr).matches(EVENT) is expected


@pytest.mark.parametrize(
    "expr, position, expected",
    [
        ("score", 5, "':'"),
        ("score:>abc", 7, "number"),
        (":x", 0, "field name"),
        ("a:x,", 4, "field name"),
        ('a:"x', 4, "closing"),
        ('a:b"c', 3, "quote the whole value"),
        ("a:", 2, "value"),
        ("a:x||b:y", 4, "field name"),
        ("a.:x", 2, "field name"),
        ("a:<", 3, "number"),
    ],
)
def test_filter_errors_name_position_and_expectation(expr, position, expected):
    with pytest.raises(InvalidFilter) as info:
        EventFilter.parse(expr)
    assert info.value.position == position
    assert expected in info.value.expected
    assert f"position {position}" in info.value.message


@given(st.text(max_size=40))
def test_filter_parser_never_crashes(text):
    try:
        EventFilter.parse(text).matches(EVENT)
    except InvalidFilter:
        pass


@given(st.integers(min_value=0, max_value=10**19), st.integers(min_value=0, max_value=10**19))
def test_cursors_sort_as_strings_like_numbers(a, b):
    assert (encode_cursor(a) < encode_cursor(b)) == (a < b)
    assert decode_cursor(encode_cursor(a)) == a
    assert len(encode_cursor(a)) == CURSOR_WIDTH


@pytest.mark.parametrize("bad", ["", "abc", "-1", "1" * 21, "１２"])
def test_bad_cursors_are_refused(bad):
    with pytest.raises(ValueError):
        decode_cursor(bad)


@given(st.floats(min_value=0, max_value=4_000_000_000, allow_nan=False))
def test_iso_time_matches_datetime(epoch):
    expected = datetime.fromtimestamp(round(epoch, 6), UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    assert iso_time(epoch) == expected


def test_iso_time_orders_like_time():
    t = 1_764_000_000.25  # fixed: at this magnitude a float carries ~0.2 us, so steps are exact
    assert iso_time(t) < iso_time(t + 0.001) < iso_time(t + 1) < iso_time(t + 86_400)
    assert iso_time(time.time()).endswith("Z")
