"""Request ids, trace context, access lines and log formats (issue 15, "Logs and traces")."""

from __future__ import annotations

import io
import logging
import signal

import orjson
import pytest
import trio
from orchestra.transport.observability import (
    ACCESS_LOGGER,
    JsonFormatter,
    RequestScope,
    ScopeFilter,
    TextFormatter,
    TraceParent,
    configure_logging,
    incoming_request_id,
    request_scope,
)

from tests.conftest import result_body

TRACE = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"


@pytest.fixture
def logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    caplog.set_level(logging.INFO)
    caplog.handler.addFilter(ScopeFilter())
    return caplog


def _access(caplog: pytest.LogCaptureFixture) -> list[dict]:
    return [r.access for r in caplog.records if r.name == ACCESS_LOGGER]


# -- pure parts --


@pytest.mark.parametrize("value, usable", [
    ("abc-123", True), ("x" * 256, True), ("a/b:c=d", True),
    ("x" * 257, False), ("", False), ("a b", False), ("a\x00b", False), ("caf\xe9", False), (None, False),
])
def test_an_incoming_request_id_is_used_only_if_short_and_printable(value, usable):
    assert (incoming_request_id(value) is not None and incoming_request_id(value) == value) is usable
    if value is not None:
        assert (incoming_request_id(value.encode("latin-1")) == value) is usable


@pytest.mark.parametrize("value, valid", [
    (TRACE, True),
    ("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra", True),  # a later version
    (TRACE + "-extra", False),  # version 00 has exactly four fields
    ("ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01", False),
    ("00-00000000000000000000000000000000-00f067aa0ba902b7-01", False),
    ("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01", False),
    (TRACE.upper(), False), ("00-4bf92f35-00f067aa0ba902b7-01", False), ("", False), (None, False),
    ("00-" + "a" * 5000, False),
])
def test_traceparent_is_validated_as_w3c_says(value, valid):
    parsed = TraceParent.parse(value)
    assert (parsed is not None) is valid
    if valid and value == TRACE:
        assert parsed.trace_id == "4bf92f3577b34da6a3ce929d0e0e4736" and parsed.header() == TRACE


def _record(msg: str = "hello %s", *args: object, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord("orchestra", logging.INFO, __file__, 1, msg, args or ("world",), None)
    for key, value in extra.items():
        setattr(record, key, value)
    return record


def test_json_lines_are_one_object_each_with_utc_time_and_the_request_ids():
    record = _record()
    with request_scope(RequestScope("req-9", TraceParent.parse(TRACE))):
        ScopeFilter().filter(record)
    line = JsonFormatter().format(record)
    assert "\n" not in line
    obj = orjson.loads(line)
    assert obj["message"] == "hello world" and obj["level"] == "INFO" and obj["logger"] == "orchestra"
    assert obj["time"].endswith("Z") and obj["request_id"] == "req-9"
    assert obj["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736" and obj["parent_id"] == "00f067aa0ba902b7"


def test_text_lines_carry_utc_time_and_the_request_id():
    record = _record()
    with request_scope(RequestScope("req-9")):
        ScopeFilter().filter(record)
    line = TextFormatter().format(record)
    assert line.split(" ", 1)[0].endswith("Z") and line.endswith("hello world request_id=req-9")


def test_a_record_outside_a_request_has_no_request_id():
    record = _record()
    ScopeFilter().filter(record)
    assert not hasattr(record, "request_id")


def test_configure_logging_off_turns_access_lines_off():
    out = io.StringIO()
    try:
        configure_logging("INFO", "json", access_log=False, stream=out)
        logging.getLogger(ACCESS_LOGGER).info("x", extra={"access": {}})
        logging.getLogger("orchestra").info("kept")
        assert [orjson.loads(line)["message"] for line in out.getvalue().splitlines()] == ["kept"]
    finally:
        logging.getLogger(ACCESS_LOGGER).disabled = False
        logging.getLogger().handlers.clear()


# -- over a real server --


async def test_x_request_id_round_trip_and_access_line(server, logs):
    tok = server.token()
    r = await server.request("POST", "/api/results", tok, result_body(), headers=[("x-request-id", "trace-me-1")])
    assert r.status == 200 and r.headers["x-request-id"] == "trace-me-1"
    [line] = [a for a in _access(logs) if a["request_id"] == "trace-me-1"]
    assert line["method"] == "POST" and line["path"] == "/api/results" and line["status"] == 200
    assert line["op"] == "result.store" and line["agent"] == "agent-1" and line["project"] == "p1"
    assert line["duration_ms"] >= 0 and line["transport"] == "http"


async def test_an_error_answer_carries_the_incoming_request_id_in_body_header_and_logs(server, logs):
    r = await server.request("GET", "/api/results/nope", server.token(), headers=[("x-request-id", "rid-404")])
    assert r.status == 404 and r.json()["request_id"] == "rid-404" == r.headers["x-request-id"]
    r = await server.request("POST", "/api/results", server.token(), raw=b"{bad", headers=[("x-request-id", "rid-400")])
    assert r.status == 400 and r.json()["request_id"] == "rid-400"
    # every line written while serving it carries the id: the error line and the access line
    mine = [rec for rec in logs.records if getattr(rec, "request_id", None) == "rid-400"]
    assert {rec.name for rec in mine} == {"orchestra", ACCESS_LOGGER}
    assert all("rid-400" in rec.getMessage() or rec.name == ACCESS_LOGGER for rec in mine)


async def test_an_unusable_request_id_is_replaced_by_a_new_one(server, logs):
    r = await server.request("GET", "/health", headers=[("x-request-id", "x" * 257)])
    assert r.status == 200 and r.headers["x-request-id"].startswith("req-")
    r2 = await server.request("GET", "/health")
    assert r2.headers["x-request-id"] != r.headers["x-request-id"]
    assert {a["request_id"] for a in _access(logs)} >= {r.headers["x-request-id"], r2.headers["x-request-id"]}


async def test_a_hostile_path_cannot_forge_an_access_line(server, logs):
    r = await server.request("GET", "/nope%0aFAKE")
    assert r.status == 404
    out = io.StringIO()
    handler = logging.StreamHandler(out)
    handler.setFormatter(TextFormatter())
    [record] = [rec for rec in logs.records if rec.name == ACCESS_LOGGER and "nope" in rec.access["path"]]
    handler.emit(record)
    assert out.getvalue().count("\n") == 1


async def test_traceparent_over_http_reaches_the_event_and_the_access_line(server, logs):
    tok = server.token()
    r = await server.request("POST", "/api/events/build.done", tok, {"data": {"n": 1}},
                             headers=[("traceparent", TRACE), ("x-request-id", "rid-trace")])
    assert r.status == 200
    w = await server.request("GET", "/api/events/wait/build.done?timeout=0", tok)
    [event] = w.json()["events"]
    assert event["traceparent"] == TRACE
    [line] = [a for a in _access(logs) if a["request_id"] == "rid-trace"]
    assert line["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    # an invalid one is ignored (as the specification says), the event has none
    r = await server.request("POST", "/api/events/build.done", tok, {}, headers=[("traceparent", "garbage")])
    assert r.status == 200
    [event] = (await server.request("GET", "/api/events/wait/build.done?timeout=0", tok)).json()["events"]
    assert "traceparent" not in event


async def test_websocket_ops_log_agent_project_and_trace(server, logs):
    tok = server.token(sub="ws-agent")
    other = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    async with server.ws(tok) as ws:
        reply = await ws.call("event.publish", event_type="ws.done", data={}, traceparent=other)
        assert reply["ok"], reply
        reply = await ws.call("result.get", result_id="missing")
        assert not reply["ok"]
        rid = reply["error"]["request_id"]
    lines = [a for a in _access(logs) if a["transport"] == "ws"]
    published = [a for a in lines if a["op"] == "event.publish"]
    assert published and published[0]["agent"] == "ws-agent" and published[0]["project"] == "p1"
    assert published[0]["trace_id"] == "0af7651916cd43dd8448eb211c80319c" and published[0]["status"] == 200
    [failed] = [a for a in lines if a["request_id"] == rid]
    assert failed["status"] == 404 and failed["op"] == "result.get" and failed["agent"] == "ws-agent"
    w = await server.request("GET", "/api/events/wait/ws.done?timeout=0", tok)
    assert w.json()["events"][0]["traceparent"] == other


async def test_the_upgrade_requests_traceparent_is_the_default_of_its_ops(server, logs):
    import trio_websocket

    tok = server.token(sub="ws-up")
    async with trio_websocket.open_websocket(
        "127.0.0.1", server.port, "/ws", use_ssl=False,
        extra_headers=[("authorization", f"Bearer {tok}"), ("traceparent", TRACE)],
    ) as ws:
        await ws.send_message(orjson.dumps({"id": 1, "op": "event.publish", "event_type": "up.done"}).decode())
        assert orjson.loads(await ws.get_message())["ok"]
    w = await server.request("GET", "/api/events/wait/up.done?timeout=0", tok)
    assert w.json()["events"][0]["traceparent"] == TRACE


@pytest.mark.parametrize("extra", [["--log-format", "json"], ["--no-access-log"]])
async def test_serve_writes_json_lines_or_no_access_lines(tmp_path, extra):
    from tests.e2e.test_process import Proc, client

    proc = Proc(tmp_path, *extra)
    try:
        port = await proc.ready()
        r = await client(port).request("GET", "/health", headers=[("x-request-id", "from-test")])
        assert r.status == 200
        proc.p.send_signal(signal.SIGTERM)
        await trio.to_thread.run_sync(proc.wait)
        await trio.to_thread.run_sync(proc.stderr)  # every line, once it ended
    finally:
        if proc.p.poll() is None:
            proc.p.kill()
            proc.p.wait()
    lines = [line for line in proc.stderr().splitlines() if line.strip()]
    if "--log-format" in extra:
        objs = [orjson.loads(line) for line in lines]  # every line one JSON object
        [access] = [o for o in objs if o["logger"] == ACCESS_LOGGER]
        assert access["request_id"] == "from-test" and access["status"] == 200 and access["path"] == "/health"
        assert all(o["time"].endswith("Z") for o in objs)
    else:
        assert lines and not [line for line in lines if "from-test" in line or ACCESS_LOGGER in line]


# -- OpenTelemetry (the otel extra) --


async def test_otel_spans_continue_the_clients_trace(server):
    pytest.importorskip("opentelemetry.sdk")
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from orchestra.transport.tracing import OtelTracing

    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    server.api.tracing = OtelTracing("test", provider)
    tok = server.token()
    r = await server.request("POST", "/api/results", tok, result_body(), headers=[("traceparent", TRACE)])
    assert r.status == 200
    async with server.ws(tok) as ws:
        assert (await ws.call("ping"))["ok"]
    assert (await server.request("GET", "/nope/x")).status == 404
    spans = {span.name: span for span in exporter.get_finished_spans()}
    stored = spans["result.store"]
    assert stored.context.trace_id == int("4bf92f3577b34da6a3ce929d0e0e4736", 16)
    assert stored.parent is not None and stored.parent.span_id == int("00f067aa0ba902b7", 16)
    assert stored.attributes["http.response.status_code"] == 200
    assert stored.attributes["enduser.id"] == "agent-1" and stored.attributes["orchestra.project"] == "p1"
    assert stored.attributes["orchestra.request_id"] == r.headers["x-request-id"]
    assert spans["ping"].attributes["orchestra.transport"] == "ws" and spans["ping"].parent is None
    assert "GET" in spans  # an unknown path does not name a span


def test_tracing_off_never_imports_opentelemetry(tmp_path):
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "from orchestra.actors.profiles import Profiles\n"
        "from orchestra.actors.system import ActorSystem, SystemConfig\n"
        "from orchestra.transport.api import Api, ApiConfig\n"
        "from orchestra.transport.auth import Auth\n"
        "from orchestra.transport.server import Server, ServerConfig\n"
        f"system = ActorSystem(SystemConfig(data_dir=Path({str(tmp_path)!r}), profiles=Profiles()))\n"
        "Server(Api(system, Auth(b'x' * 32, Profiles()), ApiConfig()), ServerConfig())\n"
        "assert not [m for m in sys.modules if m.startswith('opentelemetry')], 'imported'\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


async def test_a_websocket_connection_has_its_own_line_and_request_id(server, logs):
    import trio_websocket

    tok = server.token(sub="ws-conn")
    async with trio_websocket.open_websocket(
        "127.0.0.1", server.port, "/ws", use_ssl=False,
        extra_headers=[("authorization", f"Bearer {tok}"), ("x-request-id", "conn-1")],
    ) as ws:
        assert dict(ws.handshake_headers)[b"x-request-id"] == b"conn-1"
        await ws.send_message('{"id":1,"op":"ping"}')
        await ws.get_message()
    with trio.fail_after(10):  # the line is written once the server saw the close
        while True:
            if [a for a in _access(logs) if a["request_id"] == "conn-1"]:
                break
            await trio.sleep(0.01)
    [line] = [a for a in _access(logs) if a["request_id"] == "conn-1"]
    assert line["method"] == "GET" and line["path"] == "/ws" and line["status"] == 101
    assert line["agent"] == "ws-conn" and line["project"] == "p1" and line["transport"] == "http"
    # the ops of the connection have ids of their own
    [ping] = [a for a in _access(logs) if a["op"] == "ping" and a["agent"] == "ws-conn"]
    assert ping["request_id"] != "conn-1"
