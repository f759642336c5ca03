"""The log lines' UTC time stamp, cached by second and by millisecond, is the time it names."""

from __future__ import annotations

import datetime as dt

from hypothesis import given
from hypothesis import strategies as st
from orchestra.transport.observability import _utc

SECONDS = st.floats(min_value=0, max_value=253_402_300_799, allow_nan=False, allow_infinity=False)


def _expected(created: float) -> str:
    ms = int(created * 1000)
    moment = dt.datetime.fromtimestamp(ms // 1000, dt.UTC) + dt.timedelta(milliseconds=ms % 1000)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


@given(st.lists(SECONDS, min_size=1, max_size=8))
def test_each_stamp_names_its_own_millisecond_whatever_came_before(times):
    for created in times + times[::-1]:  # cached neighbours, then the same ones again
        assert _utc(created) == _expected(created)


def test_stamps_within_one_second_and_across_its_end():
    base = 1_764_500_000.0
    for created in (base + 0.1234, base + 0.1236, base + 0.9995, base + 1.0001, base + 0.5):
        assert _utc(created) == _expected(created)
    assert _utc(base + 0.9995) == "2025-11-30T10:53:20.999Z"
