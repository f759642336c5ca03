"""Spawned agents under faults: a crash of an agent's actor, of the agents' registry, and the
server's stop; no process is left behind."""

from __future__ import annotations

from orchestra.transport.testing_invariants import alive

from orchestra.testing import InProcessServer, Invariants, Ledger
from tests.agents_harness import profiles, script
from tests.waiting import until

SLEEPER = script("import time; time.sleep(120)", agent_type="sleeper")


async def _spawn(server, tok: str) -> dict:
    r = await server.request("POST", "/api/agents/spawn", tok, {"agent_type": "sleeper", "issue_id": "iss-1"})
    assert r.status == 201, r.body
    return r.json()


async def _record(server, tok: str, agent_id: str) -> dict:
    return (await server.request("GET", f"/api/agents/{agent_id}/status", tok)).json()


async def test_an_agents_actor_crash_ends_its_process_and_nothing_is_left_behind(nursery, tmp_path):
    """The actor owning a process crashes: its next incarnation ends the process group and
    records the run failed (a process never outlives its owner); the registry crashing twice
    loses no agent; spawning goes on; the server's stop leaves no process."""
    server = await InProcessServer(tmp_path / "d", profiles=profiles(SLEEPER), root=tmp_path).start(nursery)
    tok = server.token("p1", "chief-architect", sub="boss")
    pids = []
    try:
        doomed, kept = await _spawn(server, tok), await _spawn(server, tok)
        pids += [doomed["process_id"], kept["process_id"]]
        await server.faults.crash(f"agent:{doomed['agent_id']}", settle=10)

        async def failed() -> bool:
            return (await _record(server, tok, doomed["agent_id"]))["state"] == "failed"

        await until(failed, "the crashed agent's run recorded failed")
        record = await _record(server, tok, doomed["agent_id"])
        assert "actor crashed" in record["reason"]
        await until(lambda: not alive(doomed["process_id"]), "the crashed agent's process ended")
        for _ in range(2):
            await server.faults.crash("agents", settle=10)
        assert (await _record(server, tok, kept["agent_id"]))["state"] == "running"
        assert alive(kept["process_id"])
        pids.append((await _spawn(server, tok))["process_id"])  # spawning goes on
        listed = (await server.request("GET", "/api/agents?state=running", tok)).json()["agents"]
        assert len(listed) == 2
    finally:
        await server.stop()
    await Invariants(server, Ledger()).nothing_left_behind([p for p in pids if p])
