"""The dashboard's model and renderer: pure tests (no terminal), and snapshots of what a person
sees against a real in-process server with a known workload, through rich's recording console."""

from __future__ import annotations

from typing import Any

import trio
from hypothesis import given, settings
from hypothesis import strategies as st
from orchestra.transport.dashboard.app import poll_once, snapshot
from orchestra.transport.dashboard.model import DashboardModel, ModelBounds, replay_since
from orchestra.transport.dashboard.render import render, sparkline
from rich.console import Console

from orchestra import client as sdk
from tests.conftest import Harness, result_body, start_server
from tests.waiting import until


def screen(model: DashboardModel, width: int = 80, height: int = 24, **kw: Any) -> str:
    console = Console(record=True, width=width, height=height, color_system=None)
    console.print(render(model, width, height, **kw))
    return console.export_text()


def _tree(restarts: int, crash: str | None = None) -> dict[str, Any]:
    return {"name": "root", "children": [
        {"id": "store", "state": "running", "restarts": 0, "crashes": 0, "last_crash": None},
        {"id": "projects", "state": "running", "restarts": 0, "crashes": 0, "last_crash": None,
         "supervisor": {"name": "projects", "children": [
             {"id": "project:alpha", "state": "running", "restarts": restarts, "crashes": restarts,
              "last_crash": crash}]}},
    ]}


def _status(requests: int, events: int, restarts: int = 0, **extra: Any) -> dict[str, Any]:
    return {"version": "9.9", "uptime_seconds": 75, "agents": {"by_type": {"a": 2}, "spawned_running": 1},
            "projects": {"detail": {"alpha": {"results_stored": 7, "events_published": events,
                                              "last_cursor": "00000000000000000041"}}},
            "performance": {"result.store": {"count": requests, "p50_ms": 1.5, "p99_ms": 9.0}},
            "events": {"total_published": events}, "requests": {"rate_limited": 3},
            "context_cache": {"hit_rate": 0.5},
            "actors": {"restarts": restarts, "crashes": restarts, "tree": _tree(restarts)}, **extra}


def test_rates_come_from_the_difference_of_two_snapshots_and_never_go_negative():
    m = DashboardModel(url="u")
    m.apply_status(_status(10, 5), now=100.0)
    assert not m.requests_per_s
    m.apply_status(_status(30, 9), now=102.0)
    assert list(m.requests_per_s) == [10.0] and list(m.events_per_s) == [2.0]
    m.apply_status(_status(1, 0), now=103.0)  # the server restarted: counts start over
    assert m.requests_per_s[-1] == 0 and m.events_per_s[-1] == 0


def test_a_restart_is_highlighted_for_a_while_then_not():
    m = DashboardModel(url="u", bounds=ModelBounds(highlight_seconds=5))
    m.apply_status(_status(1, 1, restarts=0), now=0.0)
    m.apply_status(_status(1, 1, restarts=1), now=1.0)
    row = next(r for r in m.actors if r.path == "/projects/project:alpha")
    assert row.highlighted and row.restarts == 1
    m.apply_status(_status(1, 1, restarts=1), now=3.0)
    assert next(r for r in m.actors if r.path == "/projects/project:alpha").highlighted
    m.apply_status(_status(1, 1, restarts=1), now=7.0)
    assert not any(r.highlighted for r in m.actors)


def test_the_tail_and_the_series_are_bounded():
    m = DashboardModel(url="u", bounds=ModelBounds(tail=5, series=3))
    for i in range(50):
        m.apply_event({"event_type": f"e{i}", "project_id": "p"}, now_wall=float(i))
        m.apply_status(_status(i, i), now=float(i))
    assert [e.event_type for e in m.tail] == [f"e{i}" for i in range(45, 50)]
    assert len(m.requests_per_s) == 3 and m.events_seen == 50


def test_replay_starts_a_few_events_back_per_project():
    since = replay_since({"a": {"last_cursor": "00000000000000000041"}, "b": {"last_cursor": "0005"},
                          "c": {"last_cursor": "opaque"}, "d": {}}, 20)
    assert since == {"a": "00000000000000000021", "b": "0000"}


def test_sparkline_scales_to_its_maximum():
    assert sparkline([0, 5, 10], 3) == "▁▅█"
    assert sparkline([0, 0], 5) == "▁▁" and sparkline([1, 2, 3], 2) == "▆█"


def _busy_model() -> DashboardModel:
    m = DashboardModel(url="http://127.0.0.1:3001", filter="status:success")
    m.set_connection("connected")
    status = _status(100, 50, restarts=2)
    status["projects"]["detail"] = {f"proj-{i}": {"results_stored": i, "events_published": i} for i in range(30)}
    m.apply_status(_status(10, 5), now=0.0)
    m.apply_status(status, now=1.0)
    m.apply_agents("proj-1", [{"agent_id": f"ag-{i}", "agent_type": f"a-rather-long-agent-type-{i}", "project_id": "proj-1",
                               "state": ["running", "stalled", "failed", "exited"][i % 4], "pid": 100 + i,
                               "exit_code": 1 if i % 4 == 3 else None, "restarts": i} for i in range(40)])
    for i in range(100):
        m.apply_event({"event_type": f"ev{i}", "project_id": "proj-1", "publisher": "x"}, now_wall=1.0)
    return m


def test_a_busy_fleet_fits_80x24_and_collapses_by_priority():
    text = screen(_busy_model(), now=1.0, now_wall=2.0)
    lines = text.rstrip("\n").split("\n")
    assert len(lines) <= 24 and max(len(line) for line in lines) <= 80
    assert "Orchestra http://127.0.0.1:3001  v9.9  up 1m15s  connected" in text
    assert "failed 10" in text and "stalled 10" in text  # in the header, whatever else collapses
    for panel in ("Agents", "Projects", "Supervision", "Events"):
        assert f"── {panel}" in text
    # failing agents come first in their panel
    agents = text[text.index("── Agents"):text.index("── Projects")]
    assert "failed" in agents.split("\n")[2]


def test_a_taller_wider_terminal_shows_more():
    small, big = screen(_busy_model(), now=1.0, now_wall=2.0), screen(_busy_model(), 160, 70, now=1.0, now_wall=2.0)
    assert len(big.split("\n")) > len(small.split("\n"))
    assert "── Throughput" in big and "rate-limited 3" in big and "context cache hits 50%" in big
    assert "result.store" in big and "ev99" in big


@settings(max_examples=200, deadline=None)
@given(st.recursive(st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=5),
                    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
                    max_leaves=20),
       st.sampled_from(["agents", "projects", "performance", "actors", "events", "requests", "context_cache",
                        "deployment"]))
def test_odd_status_and_events_never_break_the_view(value, key):
    m = DashboardModel(url="u")
    for status in ({key: value}, _status(1, 1) | {key: value}):
        m.apply_status(status, now=1.0)
        m.apply_event({"event_type": value, "project_id": value, "round": value}, now_wall=1.0)
        screen(m)


# -- against a real server --

def _admin(h: Harness) -> str:
    return h.token("*", agent_type="dashboard", sub="dash", admin=True)


async def _workload(h: Harness) -> None:
    for project, n in (("alpha", 3), ("beta", 2)):
        token = h.token(project)
        for i in range(n):
            r = await h.request("POST", "/api/results", token, result_body(issue=f"{project}-{i}"))
            assert r.status == 200, r.body
    r = await h.request("POST", "/api/events/build_finished", h.token("beta"),
                        {"data": {"ok": True}, "correlation_id": "corr-7", "round": 2})
    assert r.status in (200, 201), r.body


async def test_a_snapshot_of_a_known_workload(server: Harness):
    await _workload(server)
    model = await snapshot(f"http://127.0.0.1:{server.port}", _admin(server))
    text = screen(model, now=model.status_at)
    assert f"http://127.0.0.1:{server.port}" in text and "connected" in text
    projects = text[text.index("── Projects"):text.index("── Supervision")]
    assert "2 running" in projects
    alpha = next(line for line in projects.split("\n") if line.startswith("alpha"))
    beta = next(line for line in projects.split("\n") if line.startswith("beta"))
    assert alpha.split()[1:4] == ["0", "3", "3"]  # agents, results, events (agent_completed each)
    assert beta.split()[1:4] == ["0", "2", "3"]
    events = text[text.index("── Events"):]
    row = next(line for line in events.split("\n") if line.startswith("build_finished"))
    assert row.split()[:5] == ["build_finished", "agent-1", "beta", "corr-7", "2"]
    assert "agent_completed" in events


async def test_the_filter_reaches_the_subscription(server: Harness):
    await _workload(server)
    model = await snapshot(f"http://127.0.0.1:{server.port}", _admin(server), event_filter="event_type:build_finished")
    assert [e.event_type for e in model.tail] == ["build_finished"]
    assert "filter event_type:build_finished" in screen(model, now=model.status_at)


async def test_a_restart_appears_and_is_highlighted_after_a_crash_is_injected(server: Harness):
    await _workload(server)
    admin = _admin(server)
    model = DashboardModel(url="u")
    async with sdk.connect(f"http://127.0.0.1:{server.port}", admin) as client:
        await poll_once(client, model)
        assert "projects/project:alpha" in screen(model)
        r = await server.request("POST", "/api/admin/faults", admin, {"target": "project:alpha", "kind": "crash"})
        assert r.status == 200
        with trio.fail_after(10):
            while not any(a.restarts for a in model.actors):
                await trio.sleep(0.05)
                await poll_once(client, model)
    text = screen(model)
    sup = text[text.index("── Supervision"):]
    assert "restarts 1 crashes 1" in sup
    row = sup.split("\n")[2]  # the fresh restart comes first
    assert row.split()[:4] == ["projects/project:alpha", "running", "1", "1"] and "InjectedCrash" in row
    assert next(r for r in model.actors if r.path == "/projects/project:alpha").highlighted


async def test_status_counts_rate_limit_rejections(nursery, tmp_path, monkeypatch):
    h = await start_server(nursery, tmp_path / "d", rate_limits=True)
    # the limiter's clock stands still (as in test_http_api.test_rate_limits): on a loaded
    # machine sending 45 requests took long enough to refill the bucket, and none was limited
    take = h.api.limiter.take
    monkeypatch.setattr(h.api.limiter, "take", lambda key, rate, burst, now: take(key, rate, burst, 1000.0))
    tok = h.token(agent_type="some-new-type")  # default profile: burst 40
    limited = [(await h.request("GET", "/api/results", tok)).status for _ in range(45)].count(429)
    assert limited == 5
    status = (await h.request("GET", "/status")).json()
    assert status["requests"]["rate_limited"] == limited


async def test_an_all_projects_admin_lists_the_agents_of_one_project_through_the_sdk(server: Harness):
    async with sdk.connect(f"http://127.0.0.1:{server.port}", _admin(server)) as client:
        assert await client.list_agents(project_id="alpha") == {"agents": []}


def test_reconnecting_is_shown_in_the_header_with_the_last_figures():
    m = DashboardModel(url="http://h:1")
    m.apply_status(_status(1, 1), now=0.0)
    m.set_connection("reconnecting", "no answer")
    text = screen(m)
    assert "reconnecting (no answer)" in text.split("\n")[0] and "alpha" in text


async def test_the_poller_shows_a_reconnect_after_its_session_crashed(server: Harness):
    from orchestra.transport.dashboard.app import _poller

    admin = _admin(server)
    model = DashboardModel(url="u")
    async with sdk.connect(f"http://127.0.0.1:{server.port}", admin) as client, trio.open_nursery() as nursery:
        nursery.start_soon(_poller, client, model, 0.05)
        await until(lambda: model.connection == "connected", "the first poll", timeout=10)
        r = await server.request("POST", "/api/admin/faults", admin, {"target": "session:dash", "kind": "crash"})
        assert r.status == 200, r.body
        await until(lambda: model.connection_detail == "reconnected 1x", "a reconnect shown", timeout=10)
        nursery.cancel_scope.cancel()
    assert "connected (reconnected 1x)" in screen(model).split("\n")[0]


def test_the_chain_of_an_issue_is_bounded_and_follows_the_selection():
    m = DashboardModel(url="u", bounds=ModelBounds(chains=2, chain_steps=2))

    def done(issue: str, agent: str, nxt: list[str]) -> None:
        m.apply_event({"event_type": "agent_completed", "project_id": "p", "data": {
            "issue_id": issue, "agent_id": agent, "agent_type": "t", "status": "success", "next_agents": nxt}},
            now_wall=1.0)

    done("i1", "a1", ["x"])
    done("i2", "b1", [])
    done("i1", "a2", ["y", "z"])
    done("i1", "a3", [])
    chain = m.chain()
    assert chain is not None and chain[0] == "i1" and [s.agent_id for s in chain[1]] == ["a2", "a3"]
    done("i3", "c1", [])  # three issues: the least recently active (i2) goes
    assert list(m.chains) == ["i1", "i3"]
    m.issue = "i1"
    assert "a2 (t) success → y, z" in screen(m, 100, 60)


async def test_a_taller_snapshot_shows_the_chain_of_the_latest_issue(server: Harness):
    await _workload(server)
    model = await snapshot(f"http://127.0.0.1:{server.port}", _admin(server), issue="alpha-1")
    text = screen(model, 120, 60, now=model.status_at)
    assert "── Chain issue alpha-1" in text
    assert "agent-1 (python-specialist) success → test-engineer, code-reviewer" in text


async def test_the_poller_shows_a_server_refusing_with_503_and_carries_on(server: Harness):
    from orchestra.transport.dashboard.app import _poller

    model = DashboardModel(url="u")
    config = sdk.ClientConfig(unavailable_retries=0)
    async with sdk.connect(f"http://127.0.0.1:{server.port}", _admin(server), config=config) as client, \
            trio.open_nursery() as nursery:
        nursery.start_soon(_poller, client, model, 0.05)
        await until(lambda: model.connection == "connected", "the first poll", timeout=10)
        server.api.shutting_down = True  # every operation answers 503 UNAVAILABLE
        await until(lambda: model.connection == "reconnecting", "the refusal shown", timeout=10)
        assert "reconnecting (Unavailable: UNAVAILABLE)" in screen(model).split("\n")[0]
        server.api.shutting_down = False
        await until(lambda: model.connection == "connected", "back", timeout=10)
        nursery.cancel_scope.cancel()


def _deployment(*states: str) -> dict[str, Any]:
    return {"process_id": "h1:11:aa", "processes_alive": states.count("alive"),
            "processes_lost": states.count("lost"),
            "processes": [{"process_id": f"h{i}:{10 + i}:aa", "host": f"h{i}", "pid": 10 + i,
                           "started_at": "2026-01-01T00:00:00.000Z", "last_beat": "2026-01-01T00:00:01.000Z",
                           "state": s, "reason": None} for i, s in enumerate(states, 1)]}


def test_several_processes_are_each_shown_lost_ones_first_one_is_not():
    m = DashboardModel(url="u")
    m.apply_status(_status(1, 1, deployment=_deployment("alive", "lost", "stopped")), now=0.0)
    text = screen(m, 100, 40)
    lines = [line for line in text.splitlines() if line.startswith("h")]
    assert [line.split()[0] for line in lines] == ["h2:12:aa", "h1:11:aa", "h3:13:aa"], text
    assert "alive 1  lost 1  stopped 1" in text and "h1:11:aa *" in text
    m.apply_status(_status(1, 1, deployment=_deployment("alive")), now=1.0)
    assert "Processes" not in screen(m, 100, 40)  # one process: nothing to tell apart


async def test_status_names_this_process_and_the_agents_their_owner_with_sqlite(server: Harness):
    admin = _admin(server)
    body = (await server.request("GET", "/status", admin)).json()["deployment"]
    assert body["processes_alive"] == 1 and body["processes_lost"] == 0
    [me] = body["processes"]
    assert me["process_id"] == body["process_id"] and me["state"] == "alive" and me["pid"] > 0
    anonymous = (await server.request("GET", "/status")).json()["deployment"]
    assert anonymous == {"processes_alive": 1, "processes_lost": 0}  # no host or pid without admin


@settings(max_examples=50, deadline=None)
@given(st.lists(st.dictionaries(st.sampled_from(["process_id", "host", "pid", "state", "started_at", "last_beat"]),
                                st.none() | st.integers() | st.text(max_size=5) | st.floats()), max_size=4))
def test_odd_process_entries_never_break_the_view(entries):
    m = DashboardModel(url="u")
    m.apply_status(_status(1, 1, deployment={"process_id": "x", "processes": [*entries, "odd", 3]}), now=1.0)
    screen(m, 100, 40)
