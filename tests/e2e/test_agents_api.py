"""Spawned agents over the request edge: HTTP routes and WebSocket ops of a real in-process
server (port 0, real JWTs, real SQLite), whose agents are real processes (small Python
scripts) that talk back to the server with ``ORCHESTRA_URL`` / ``ORCHESTRA_TOKEN``."""

from __future__ import annotations

import os
import signal
import textwrap
from typing import Any

import jwt
import pytest
import trio
from orchestra.actors.agents import STATES
from orchestra.actors.profiles import Profiles

from tests.agents_harness import alive, gone, profiles, script
from tests.conftest import SECRET, Harness, small_code_base, start_server
from tests.waiting import until

#: An agent that reports what it was given by storing a result through the HTTP API.
REPORTER = textwrap.dedent("""
    import json, os, urllib.request
    env = {k: v for k, v in os.environ.items() if k.startswith("ORCHESTRA_") or k == "EXTRA"}
    body = {"agent_id": env["ORCHESTRA_AGENT_ID"], "agent_type": "worker",
            "issue_id": env["ORCHESTRA_ISSUE_ID"],
            "result": {"status": "success", "env": env,
                       "context": json.load(open(env["ORCHESTRA_CONTEXT_FILE"]))["issue_id"]}}
    request = urllib.request.Request(env["ORCHESTRA_URL"] + "/api/results", data=json.dumps(body).encode(),
                                     headers={"authorization": "Bearer " + env["ORCHESTRA_TOKEN"],
                                              "content-type": "application/json"})
    print("stored", urllib.request.urlopen(request).status, flush=True)
""")
SLEEPER = "import time; print('ready', flush=True); time.sleep(1000)"
SPAWN_ANSWER = {"agent_id", "spawned", "process_id", "context_injected", "jwt_token", "webhook_url"}
RECORD = {"agent_id", "agent_type", "issue_id", "state", "pid", "exit_code", "restarts", "started_at",
          "ended_at", "last_activity", "log_path"}


def fleet() -> Profiles:
    return profiles(
        script(REPORTER),
        script(SLEEPER, agent_type="sleeper"),
        script(SLEEPER, agent_type="staller", stall_timeout=0.5),
        script(SLEEPER, agent_type="single", max_running=1),
        script("import sys; sys.exit(3)", agent_type="failing"),
    )


async def agents_server(nursery: trio.Nursery, tmp_path: Any, **kw: Any) -> Harness:
    return await start_server(nursery, tmp_path / "data", profiles=kw.pop("profiles", None) or fleet(),
                              root=small_code_base(tmp_path / "code"), **kw)


def spawner(h: Harness, project: str = "p1", sub: str = "arch") -> str:
    return h.token(project=project, agent_type="chief-architect", sub=sub)


async def record_until(h: Harness, token: str, agent_id: str, predicate: Any, timeout: float = 10) -> dict[str, Any]:
    """The agent's record (GET status) once ``predicate`` holds."""
    with trio.fail_after(timeout):
        while True:
            r = await h.request("GET", f"/api/agents/{agent_id}/status", token)
            assert r.status == 200, r.body
            if predicate(r.json()):
                return r.json()  # type: ignore[no-any-return]
            await trio.sleep(0.02)


@pytest.fixture
async def h(nursery, tmp_path):
    return await agents_server(nursery, tmp_path)  # its shutdown ends every agent


async def test_spawn_over_http_starts_the_profile_command_which_talks_back(h):
    arch = spawner(h)
    async with h.ws(arch) as watcher:
        sub = await watcher.call("event.subscribe", event_types=["agent_spawned", "agent_exited"])
        assert sub["ok"], sub
        r = await h.request("POST", "/api/agents/spawn", arch,
                            {"agent_type": "worker", "issue_id": "iss-7", "task": "fix it",
                             "environment": {"EXTRA": "1"}})
        assert r.status == 201, r.body
        answer = r.json()
        assert set(answer) >= SPAWN_ANSWER
        agent_id = answer["agent_id"]
        assert answer["spawned"] is True and answer["process_id"] > 0 and answer["context_injected"] is True
        claims = jwt.decode(answer["jwt_token"], SECRET, algorithms=["HS256"])
        assert (claims["sub"], claims["project_id"], claims["agent_type"]) == (agent_id, "p1", "worker")
        with trio.fail_after(10):
            spawned = await watcher.next_event()
            exited = await watcher.next_event()
        assert (spawned["event"]["event_type"], spawned["event"]["data"]["agent_id"]) == ("agent_spawned", agent_id)
        assert spawned["event"]["publisher"] == "orchestra"
        assert exited["event"]["event_type"] == "agent_exited" and exited["event"]["data"]["exit_code"] == 0
    record = await record_until(h, arch, agent_id, lambda r: r["state"] == "exited")
    assert set(record) >= RECORD and record["exit_code"] == 0 and record["pid"] == answer["process_id"]
    stored = (await h.request("GET", f"/api/results?agent_id={agent_id}", arch)).json()["results"]
    assert len(stored) == 1
    env = stored[0]["result"]["env"]
    assert env == {
        "ORCHESTRA_URL": f"http://127.0.0.1:{h.port}", "ORCHESTRA_TOKEN": answer["jwt_token"],
        "ORCHESTRA_AGENT_ID": agent_id, "ORCHESTRA_PROJECT_ID": "p1", "ORCHESTRA_ISSUE_ID": "iss-7",
        "ORCHESTRA_TASK": "fix it", "EXTRA": "1",
        "ORCHESTRA_CONTEXT_FILE": str(h.data_dir / "contexts" / "p1" / f"{agent_id}.json"),
    }
    assert stored[0]["result"]["context"] == "iss-7"  # the issue's context, prepared before the start
    logs = await h.request("GET", f"/api/agents/{agent_id}/logs?tail=5", arch)
    assert logs.status == 200 and logs.json() == {
        "agent_id": agent_id, "lines": ["stored 200"], "log_path": record["log_path"]}
    listed = (await h.request("GET", "/api/agents", arch)).json()
    assert [a["agent_id"] for a in listed["agents"]] == [agent_id]
    assert not any(k.startswith("_") for k in listed["agents"][0])


async def test_agent_operations_over_websocket(h):
    arch = spawner(h)
    async with h.ws(arch) as ws:
        first = await ws.call("agent.spawn", agent_type="sleeper", issue_id="iss-1", idempotency_key="k-1")
        assert first["ok"], first
        agent_id = first["result"]["agent_id"]
        again = await ws.call("agent.spawn", agent_type="sleeper", issue_id="iss-1", idempotency_key="k-1")
        assert again["result"] == first["result"]  # the original answer: nothing started
        other = await ws.call("agent.spawn", agent_type="sleeper", issue_id="iss-2", idempotency_key="k-1")
        assert other["error"]["code"] == "IDEM_001"
        quick = (await ws.call("agent.spawn", agent_type="failing", issue_id="iss-2"))["result"]["agent_id"]
        await until(_state(h, quick, "exited"), "the failing agent exited")
        listed = await ws.call("agent.list")
        assert [a["agent_id"] for a in listed["result"]["agents"]] == [quick, agent_id]
        running = await ws.call("agent.list", state="running", agent_type="sleeper")
        assert [a["agent_id"] for a in running["result"]["agents"]] == [agent_id]
        by_issue = await ws.call("agent.list", issue_id="iss-2")
        assert [a["agent_id"] for a in by_issue["result"]["agents"]] == [quick]
        status = await ws.call("agent.status", agent_id=quick)
        assert status["result"]["state"] == "exited" and status["result"]["exit_code"] == 3
        await until(_logged(h, agent_id, "ready"), "the sleeper is ready")
        logs = await ws.call("agent.logs", agent_id=agent_id, tail=1)
        assert logs["result"]["lines"] == ["ready"]
        stopped = await ws.call("agent.stop", agent_id=agent_id, grace_seconds=1)
        assert stopped["ok"], stopped
        assert stopped["result"]["state"] == "stopped" and stopped["result"]["agent_id"] == agent_id
        await gone(first["result"]["process_id"])
        again = await ws.call("agent.stop", agent_id=agent_id)  # an ended agent: its record
        assert again["result"]["state"] == "stopped"


def _state(h: Harness, agent_id: str, state: str) -> Any:
    async def check() -> bool:
        return (await h.system.agents.status("p1", agent_id))["state"] == state
    return check


def _logged(h: Harness, agent_id: str, needle: str) -> Any:
    async def check() -> bool:
        return needle in (await h.system.agents.logs("p1", agent_id, 100))["lines"]
    return check


async def test_stop_over_http_answers_the_ended_record(h):
    arch = spawner(h)
    answer = (await h.request("POST", "/api/agents/spawn", arch, {"agent_type": "sleeper", "issue_id": "i"})).json()
    r = await h.request("POST", f"/api/agents/{answer['agent_id']}/stop", arch, {"grace_seconds": 0.5})
    assert r.status == 200 and r.json()["state"] == "stopped", r.body
    await gone(answer["process_id"])
    # the body is optional
    answer = (await h.request("POST", "/api/agents/spawn", arch, {"agent_type": "sleeper", "issue_id": "i"})).json()
    r = await h.request("POST", f"/api/agents/{answer['agent_id']}/stop", arch)
    assert r.status == 200 and r.json()["state"] == "stopped", r.body


async def test_a_retried_http_spawn_with_the_same_key_starts_one_process(h):
    arch = spawner(h)
    key = [("idempotency-key", "spawn-1")]
    body = {"agent_type": "sleeper", "issue_id": "iss-1"}
    answers = []

    async def spawn() -> None:
        answers.append(await h.request("POST", "/api/agents/spawn", arch, body, headers=key))

    async with trio.open_nursery() as nursery:
        for _ in range(3):
            nursery.start_soon(spawn)
    assert [r.status for r in answers] == [201] * 3
    assert len({r.json()["agent_id"] for r in answers}) == 1
    agents = (await h.request("GET", "/api/agents", arch)).json()["agents"]
    assert len(agents) == 1
    r = await h.request("POST", "/api/agents/spawn", arch, {**body, "task": "other"}, headers=key)
    assert r.status == 409 and r.json()["code"] == "IDEM_001"
    # the key is the caller's: another sub with the same key spawns its own
    r = await h.request("POST", "/api/agents/spawn", spawner(h, sub="arch-2"), body, headers=key)
    assert r.status == 201 and r.json()["agent_id"] != answers[0].json()["agent_id"]


async def test_refusals_of_spawn_and_the_agent_routes(h):
    arch = spawner(h)
    r = await h.request("POST", "/api/agents/spawn", arch, {"agent_type": "python-specialist", "issue_id": "i"})
    assert (r.status, r.json()["code"], r.json()["error"]) == (409, "AGENT_001", "agent_not_spawnable")
    assert r.json()["agent_type"] == "python-specialist"
    r = await h.request("POST", "/api/agents/spawn", h.token(), {"agent_type": "worker", "issue_id": "i"})
    assert (r.status, r.json()["code"]) == (403, "AUTH_003")  # python-specialist may not spawn
    first = await h.request("POST", "/api/agents/spawn", arch, {"agent_type": "single", "issue_id": "i"})
    assert first.status == 201
    r = await h.request("POST", "/api/agents/spawn", arch, {"agent_type": "single", "issue_id": "i"})
    err = r.json()
    assert (r.status, err["code"], err["error"], err["cap"], err["limit"]) == (
        429, "AGENT_002", "agent_cap_reached", "type", 1)
    assert r.headers["retry-after"] == "1" and err["retry_after_seconds"] == 1
    for path, field in [("/api/agents?state=sleeping", "state"), ("/api/agents?agent_type=%01", "agent_type"),
                        ("/api/agents/x/logs?tail=10001", "tail"), ("/api/agents/x/logs?tail=-1", "tail")]:
        r = await h.request("GET", path, arch)
        assert (r.status, r.json()["code"], r.json()["field"]) == (400, "REQ_001", field), (path, r.body)
    for grace in (601, -1, "soon", "1e3", True, [1], 2**63 - 1):
        r = await h.request("POST", "/api/agents/x/stop", arch, {"grace_seconds": grace})
        assert (r.status, r.json()["field"]) == (400, "grace_seconds"), (grace, r.body)
    for grace in (None, 0, 2.5, "5"):  # valid (null is absent): the agent is looked for
        r = await h.request("POST", "/api/agents/x/stop", arch, {"grace_seconds": grace})
        assert r.status == 404, (grace, r.body)
    r = await h.request("POST", "/api/agents/x/stop?grace_seconds=0.5", arch)
    assert r.status == 404, r.body
    agent_id = first.json()["agent_id"]
    other = spawner(h, project="p2")
    for method, path in [("GET", f"/api/agents/{agent_id}/status"), ("GET", f"/api/agents/{agent_id}/logs"),
                         ("POST", f"/api/agents/{agent_id}/stop"), ("GET", "/api/agents/nobody/status")]:
        r = await h.request(method, path, other if "nobody" not in path else arch)
        assert (r.status, r.json()["code"]) == (404, "NOT_FOUND"), (path, r.body)
    assert (await h.request("GET", "/api/agents", other)).json() == {"agents": []}
    admin = h.api.auth.mint(sub="dash", agent_type="dashboard", project_id="*", admin=True,
                            permissions=["spawn_agents"])
    r = await h.request("POST", "/api/agents/spawn", admin, {"agent_type": "worker", "issue_id": "i"})
    assert (r.status, r.json()["field"]) == (400, "project_id"), r.body  # never the project "*"
    r = await h.request("POST", "/api/agents/spawn", admin, {"agent_type": "worker", "issue_id": "i",
                                                             "project_id": "*"})
    assert (r.status, r.json()["field"]) == (400, "project_id"), r.body
    r = await h.request("GET", "/api/agents?project_id=p1", admin)
    assert [a["agent_id"] for a in r.json()["agents"]] == [agent_id]
    assert (await h.request("GET", "/api/agents/spawn", arch)).status == 405
    assert set(STATES) == {"starting", "running", "stalled", "exited", "failed", "stopped"}


async def test_depth_cap_over_http(nursery, tmp_path):
    """An agent spawned by a spawned agent is one level deeper; past the cap: 429 naming it."""
    kinds = profiles(script(SLEEPER, agent_type="planner", permissions=frozenset({"spawn_agents"})))
    h = await agents_server(nursery, tmp_path, profiles=kinds)
    token = spawner(h)
    for depth in (1, 2, 3):
        r = await h.request("POST", "/api/agents/spawn", token, {"agent_type": "planner", "issue_id": "i"})
        assert r.status == 201, (depth, r.body)
        token = r.json()["jwt_token"]  # the next spawn comes from this agent
    r = await h.request("POST", "/api/agents/spawn", token, {"agent_type": "planner", "issue_id": "i"})
    err = r.json()
    assert (r.status, err["code"], err["cap"], err["limit"]) == (429, "AGENT_002", "depth", 3), r.body
    assert "retry_after_seconds" not in err  # waiting does not help
    for agent in await h.system.agents.list("p1"):
        await h.system.agents.stop("p1", agent["agent_id"], grace=0)


async def test_a_sigstopped_agent_is_stalled_and_any_request_of_its_token_revives_it(h):
    arch = spawner(h)
    async with h.ws(arch) as watcher:
        await watcher.call("event.subscribe", event_types=["agent_stalled"])
        answer = (await h.request("POST", "/api/agents/spawn", arch, {"agent_type": "staller", "issue_id": "i"})).json()
        agent_id, pid = answer["agent_id"], answer["process_id"]
        os.kill(pid, signal.SIGSTOP)
        try:
            record = await record_until(h, arch, agent_id, lambda r: r["state"] == "stalled")
            assert alive(pid) and record["pid"] == pid
            with trio.fail_after(5):
                event = await watcher.next_event()
            assert event["event"]["event_type"] == "agent_stalled" and event["event"]["data"]["agent_id"] == agent_id
        finally:
            os.kill(pid, signal.SIGCONT)
    # a request with the agent's own token is its sign of life (HTTP) ...
    assert (await h.request("GET", "/api/results", answer["jwt_token"])).status == 200
    record = await record_until(h, arch, agent_id, lambda r: r["state"] == "running", timeout=2)
    assert record["last_activity"] is not None
    await record_until(h, arch, agent_id, lambda r: r["state"] == "stalled")
    # ... and over WebSocket
    async with h.ws(answer["jwt_token"]) as ws:
        assert (await ws.call("ping"))["ok"]
        await record_until(h, arch, agent_id, lambda r: r["state"] == "running", timeout=2)


async def test_status_and_metrics_count_running_agents(h):
    arch = spawner(h)
    for _ in range(2):
        assert (await h.request("POST", "/api/agents/spawn", arch, {"agent_type": "sleeper", "issue_id": "i"})).status == 201
    status = (await h.request("GET", "/status")).json()
    assert status["agents"]["spawned_running"] == 2
    metrics = (await h.request("GET", "/metrics")).body.decode()
    assert "orchestra_agents_running 2.0" in metrics
    for agent in (await h.request("GET", "/api/agents", arch)).json()["agents"]:
        await h.request("POST", f"/api/agents/{agent['agent_id']}/stop", arch, {"grace_seconds": 0})
    assert (await h.request("GET", "/status")).json()["agents"]["spawned_running"] == 0


async def test_the_agents_subtree_is_in_the_servers_tree(h):
    """The agents' subtree is part of the server's tree: its restarts count in the totals."""
    tree = h.system.root.tree()
    assert "agents" in [child["id"] for child in tree["children"]]


async def test_without_hooks_a_spawn_answers_503_and_nothing_crashes(nursery, tmp_path):
    h = await agents_server(nursery, tmp_path, spawn_hooks=False)
    r = await h.request("POST", "/api/agents/spawn", spawner(h), {"agent_type": "worker", "issue_id": "i"})
    assert (r.status, r.json()["code"]) == (503, "UNAVAILABLE")
    assert "retry-after" in r.headers
    assert (await h.request("GET", "/api/agents", spawner(h))).json() == {"agents": []}
    assert h.system.root.total_restarts() == 0 and h.system.root.total_crashes() == 0


async def test_no_agent_outlives_the_in_process_server(tmp_path):
    with trio.fail_after(30):
        async with trio.open_nursery() as nursery:
            h = await agents_server(nursery, tmp_path)
            arch = spawner(h)
            pids = []
            for _ in range(3):
                r = await h.request("POST", "/api/agents/spawn", arch, {"agent_type": "sleeper", "issue_id": "i"})
                pids.append(r.json()["process_id"])
            assert all(alive(p) for p in pids)
            nursery.cancel_scope.cancel()
        await gone(*pids, timeout=2)
        # the records say so
        async with trio.open_nursery() as nursery:
            h = await agents_server(nursery, tmp_path)
            agents = (await h.request("GET", "/api/agents", spawner(h))).json()["agents"]
            assert {a["state"] for a in agents} == {"stopped"}
            nursery.cancel_scope.cancel()


async def test_context_requirements_bound_the_agents_context_file(h):
    arch = spawner(h)
    body = {"agent_type": "sleeper", "issue_id": "iss-1"}
    for max_bytes, status, code in [(1023, 400, "REQ_001"), ("many", 400, "REQ_001"), (4194305, 413, "CTX_002")]:
        r = await h.request("POST", "/api/agents/spawn", arch, {**body, "context_requirements": {"max_bytes": max_bytes}})
        assert (r.status, r.json()["code"], r.json()["field"]) == (status, code, "context_requirements.max_bytes")
    r = await h.request("POST", "/api/agents/spawn", arch, {**body, "context_requirements": {"max_bytes": 1024}})
    assert r.status == 201 and r.json()["context_injected"] is True, r.body
    context = h.data_dir / "contexts" / "p1" / f"{r.json()['agent_id']}.json"
    assert 0 < context.stat().st_size <= 1024
