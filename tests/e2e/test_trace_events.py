"""The W3C trace context of a request reaches what the server does on its behalf (issue 15, "Logs
and traces"): the ``agent_completed`` event of a stored result, the ``agent_*`` events of a
spawned agent's life, and the spawned process's own ``TRACEPARENT`` (a child continues the
trace). Over HTTP (the header) and WebSocket (the frame's field, else the upgrade's header)."""

from __future__ import annotations

from typing import Any

import orjson
import pytest
import trio
import trio_websocket

from tests.agents_harness import profiles, script
from tests.conftest import Harness, result_body, small_code_base, start_server
from tests.waiting import until

TRACE = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
OTHER = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
#: An agent that writes its trace context where the test can read it, then exits.
#: (the dot: the line is complete, a log's tail may end within a line still being written)
TELLS = "import os; print('traceparent', os.environ.get('TRACEPARENT', '-'), '.', flush=True)"


@pytest.fixture
async def h(nursery, tmp_path) -> Harness:
    return await start_server(nursery, tmp_path / "data", profiles=profiles(script(TELLS)),
                              root=small_code_base(tmp_path / "code"))


async def _events(h: Harness, token: str, event_type: str, n: int = 1) -> list[dict[str, Any]]:
    """The project's events of ``event_type`` from its first on, once there are ``n``."""
    found: list[dict[str, Any]] = []

    async def arrived() -> bool:
        r = await h.request("GET", f"/api/events/wait/{event_type}?timeout=0&limit=100&since={'0' * 20}", token)
        found[:] = r.json()["events"]
        return len(found) >= n

    await until(arrived, timeout=15, what=f"{n} {event_type} event(s)")
    return found


async def _agent_lines(h: Harness, token: str, agent_id: str) -> list[str]:
    lines: list[str] = []

    async def told() -> bool:
        r = await h.request("GET", f"/api/agents/{agent_id}/logs?tail=10", token)
        lines[:] = r.json()["lines"]
        return any(line.startswith("traceparent ") and line.endswith(" .") for line in lines)

    await until(told, timeout=15, what=f"{agent_id} to print its TRACEPARENT")
    return lines


def _spawner(h: Harness) -> str:
    return h.token(agent_type="chief-architect", sub="arch")


# -- results --


async def test_a_stored_results_event_carries_the_requests_trace_over_http(h):
    tok = h.token()
    r = await h.request("POST", "/api/results", tok, result_body(issue="one"), headers=[("traceparent", TRACE)])
    assert r.status == 200, r.body
    r = await h.request("POST", "/api/results/batch", tok,
                        {"results": [result_body(issue="two"), result_body(issue="three")]},
                        headers=[("traceparent", OTHER)])
    assert r.status == 200, r.body
    r = await h.request("POST", "/api/results", tok, result_body(issue="four"))  # none sent: none kept
    assert r.status == 200, r.body
    events = await _events(h, tok, "agent_completed", 4)
    by_issue = {e["data"]["issue_id"]: e for e in events}
    assert by_issue["one"]["traceparent"] == TRACE
    assert by_issue["two"]["traceparent"] == OTHER and by_issue["three"]["traceparent"] == OTHER
    assert "traceparent" not in by_issue["four"]
    assert {e["publisher"] for e in events} == {"orchestra"}


async def test_a_stored_results_event_carries_the_trace_of_a_websocket_op(h):
    tok = h.token()
    async with h.ws(tok) as ws:
        reply = await ws.call("result.store", traceparent=OTHER, **result_body(issue="framed"))
        assert reply["ok"], reply
        reply = await ws.call("result.store_batch", traceparent=OTHER, results=[result_body(issue="batched")])
        assert reply["ok"], reply
    async with trio_websocket.open_websocket(
        "127.0.0.1", h.port, "/ws", use_ssl=False,
        extra_headers=[("authorization", f"Bearer {tok}"), ("traceparent", TRACE)],
    ) as ws2:  # no field in the frame: the upgrade request's trace
        frame = {"id": 1, "op": "result.store", **result_body(issue="upgraded")}
        await ws2.send_message(orjson.dumps(frame).decode())
        assert orjson.loads(await ws2.get_message())["ok"]
    by_issue = {e["data"]["issue_id"]: e for e in await _events(h, tok, "agent_completed", 3)}
    assert by_issue["framed"]["traceparent"] == OTHER and by_issue["batched"]["traceparent"] == OTHER
    assert by_issue["upgraded"]["traceparent"] == TRACE


# -- spawned agents --


async def test_a_spawned_agent_and_its_events_continue_the_spawning_http_requests_trace(h):
    arch = _spawner(h)
    r = await h.request("POST", "/api/agents/spawn", arch, {"agent_type": "worker", "issue_id": "iss-t"},
                        headers=[("traceparent", TRACE)])
    assert r.status == 201, r.body
    agent_id = r.json()["agent_id"]
    assert f"traceparent {TRACE} ." in await _agent_lines(h, arch, agent_id)
    [spawned] = await _events(h, arch, "agent_spawned")
    [exited] = await _events(h, arch, "agent_exited")
    assert spawned["data"]["agent_id"] == exited["data"]["agent_id"] == agent_id
    assert spawned["traceparent"] == exited["traceparent"] == TRACE
    # a spawn that sent none: no trace in the agent's events nor in its environment
    r = await h.request("POST", "/api/agents/spawn", arch, {"agent_type": "worker", "issue_id": "iss-u"})
    assert r.status == 201, r.body
    untraced = r.json()["agent_id"]
    assert "traceparent - ." in await _agent_lines(h, arch, untraced)
    events = [e for e in await _events(h, arch, "agent_exited", 2) if e["data"]["agent_id"] == untraced]
    assert events and "traceparent" not in events[0]


async def test_a_spawned_agent_continues_the_trace_of_a_websocket_op(h):
    arch = _spawner(h)
    async with h.ws(arch) as ws:
        reply = await ws.call("agent.spawn", traceparent=OTHER, agent_type="worker", issue_id="iss-w")
        assert reply["ok"], reply
    agent_id = reply["result"]["agent_id"]
    assert f"traceparent {OTHER} ." in await _agent_lines(h, arch, agent_id)
    [exited] = await _events(h, arch, "agent_exited")
    assert exited["traceparent"] == OTHER


async def test_a_spawns_own_environment_may_name_the_trace_and_wins(h):
    """The request's ``environment`` is the client's word for the child: it may set
    TRACEPARENT itself (e.g. to a span of its own); the events still carry the request's."""
    arch = _spawner(h)
    r = await h.request("POST", "/api/agents/spawn", arch,
                        {"agent_type": "worker", "issue_id": "iss-e", "environment": {"TRACEPARENT": OTHER}},
                        headers=[("traceparent", TRACE)])
    assert r.status == 201, r.body
    assert f"traceparent {OTHER} ." in await _agent_lines(h, arch, r.json()["agent_id"])
    [spawned] = await _events(h, arch, "agent_spawned")
    assert spawned["traceparent"] == TRACE


async def test_an_agent_failed_by_a_crash_keeps_its_spawns_trace(tmp_path):
    """The trace is kept with the agent's durable record, so the ``agent_failed`` that a
    restarted server publishes for an agent a crash left behind carries it too."""
    from orchestra.actors.store import AgentRow, GetAgent, SaveAgent, SQLiteBackend

    sleeper = profiles(script("import time; print('ready', flush=True); time.sleep(1000)"))
    data = tmp_path / "data"
    with trio.fail_after(60):
        async with trio.open_nursery() as first:
            h1 = await start_server(first, data, profiles=sleeper, root=small_code_base(tmp_path / "code"))
            arch = _spawner(h1)
            r = await h1.request("POST", "/api/agents/spawn", arch, {"agent_type": "worker", "issue_id": "iss-c"},
                                 headers=[("traceparent", TRACE)])
            assert r.status == 201, r.body
            agent_id = r.json()["agent_id"]
            first.cancel_scope.cancel()  # the server stops (its agent with it)
        # what a crash leaves: the record still says running, for a process that is gone
        backend = SQLiteBackend(data / "orchestra.db")
        backend.open()
        try:
            _, [row] = backend.apply([], [GetAgent("p1", agent_id)])
            record = orjson.loads(row.body)
            assert record["_traceparent"] == TRACE
            record.update(state="running", pid=2**22 + 1, _identity=None)
            backend.apply([SaveAgent(AgentRow(agent_id, "p1", "running", row.seq, row.updated_at,
                                              orjson.dumps(record)))], [])
        finally:
            backend.close()
        async with trio.open_nursery() as second:
            h2 = await start_server(second, data, profiles=sleeper, root=tmp_path / "code")
            failed = [e for e in await _events(h2, arch, "agent_failed") if e["data"]["agent_id"] == agent_id]
            assert failed and failed[0]["data"]["reason"].startswith("server restarted")
            assert failed[0]["traceparent"] == TRACE
            second.cancel_scope.cancel()
