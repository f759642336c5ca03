"""The access line's fast path (no LogRecord) writes what the logging path writes (issue 16)."""

from __future__ import annotations

import io
import logging
import re

import orjson
import pytest
from orchestra.transport.observability import (
    ACCESS_LOGGER,
    AccessLog,
    RequestScope,
    TraceParent,
    configure_logging,
)

TRACE = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.fixture
def configured():
    def configure(fmt: str) -> io.StringIO:
        out = io.StringIO()
        configure_logging("INFO", fmt, stream=out)  # type: ignore[arg-type]
        return out
    yield configure
    logging.getLogger().handlers.clear()
    logging.getLogger().setLevel(logging.WARNING)


def _scope(trace: str | None, agent: str | None) -> RequestScope:
    scope = RequestScope("req-7", TraceParent.parse(trace), "ws")
    scope.op, scope.agent, scope.project, scope.status = "result.store", agent, "p1", 200
    return scope


def _both(out: io.StringIO, scope: RequestScope, path: str) -> tuple[str, str]:
    """The line of the fast path, then the line of the logging path, for the same request."""
    access = AccessLog()
    assert access._direct() is not None  # configure_logging's set-up takes the fast path
    access.write(scope, "WS", path)
    slow = logging.Filter()  # a filter on the logger: the line must go through logging
    access.log.addFilter(slow)
    try:
        assert access._direct() is None
        access.write(scope, "WS", path)
    finally:
        access.log.removeFilter(slow)
    fast_line, slow_line = out.getvalue().splitlines()
    return fast_line, slow_line


@pytest.mark.parametrize("trace", [None, TRACE])
@pytest.mark.parametrize("agent", [None, "agent-1"])
@pytest.mark.parametrize("path", ["/ws", "/a\nb\x1b" + "x" * 300])
def test_fast_text_line_is_the_logging_paths_line(configured, trace, agent, path):
    fast, slow = _both(configured("text"), _scope(trace, agent), path)
    mask = re.compile(r"^\S+Z|\d+\.\d{3}ms")
    assert mask.sub("", fast) == mask.sub("", slow)
    assert "\n" not in fast and "\\n" in fast or path == "/ws"
    assert fast.split(" ", 1)[0].endswith("Z") and f" {ACCESS_LOGGER}: WS " in fast


@pytest.mark.parametrize("trace", [None, TRACE])
@pytest.mark.parametrize("agent", [None, "agent-1"])
@pytest.mark.parametrize("path", ["/ws", "/a\nb" + "x" * 300])
def test_fast_json_line_is_the_logging_paths_line(configured, trace, agent, path):
    fast, slow = (orjson.loads(line) for line in _both(configured("json"), _scope(trace, agent), path))
    assert list(fast) == list(slow)  # the same fields, in the same order
    for line in (fast, slow):
        del line["time"], line["duration_ms"]
    assert fast == slow and fast["request_id"] == "req-7" and fast["agent"] == agent


def test_another_handler_takes_the_logging_path(configured):
    configured("text")
    logging.getLogger().addHandler(logging.NullHandler())
    assert AccessLog()._direct() is None


def test_access_lines_off_write_nothing_on_the_fast_path(configured):
    out = configured("text")
    logging.getLogger(ACCESS_LOGGER).disabled = True
    try:
        AccessLog().write(_scope(None, None), "WS", "/ws")
    finally:
        logging.getLogger(ACCESS_LOGGER).disabled = False
    assert out.getvalue() == ""
