"""Spawned agents of a real `orchestra serve` process: a profiles file whose commands are small
Python scripts, spawns over HTTP, and what becomes of the agents when the server stops (SIGTERM)
or is killed (SIGKILL)."""

from __future__ import annotations

import os
import signal
import sys
import textwrap
from pathlib import Path

import trio

from tests.agents_harness import alive, gone
from tests.conftest import small_code_base
from tests.e2e.test_process import Proc, client, token

REPORTER = textwrap.dedent("""
    import json, os, urllib.request
    body = {"agent_id": os.environ["ORCHESTRA_AGENT_ID"], "agent_type": "worker",
            "issue_id": os.environ["ORCHESTRA_ISSUE_ID"],
            "result": {"status": "success", "url": os.environ["ORCHESTRA_URL"],
                       "project": os.environ["ORCHESTRA_PROJECT_ID"]}}
    request = urllib.request.Request(os.environ["ORCHESTRA_URL"] + "/api/results", data=json.dumps(body).encode(),
                                     headers={"authorization": "Bearer " + os.environ["ORCHESTRA_TOKEN"],
                                              "content-type": "application/json"})
    print("stored", urllib.request.urlopen(request).status, flush=True)
""")
#: forks a child that ignores SIGTERM, and ignores SIGTERM itself: only SIGKILL ends them
STUBBORN = textwrap.dedent("""
    import signal, subprocess, sys, time
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    child = subprocess.Popen([sys.executable, "-c", "import signal, time;"
                              " signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(1000)"])
    print("child", child.pid, ".", flush=True)
    time.sleep(1000)
""")


def profiles_file(tmp_path: Path) -> Path:
    for name, code in (("reporter.py", REPORTER), ("stubborn.py", STUBBORN)):
        (tmp_path / name).write_text(code)
    path = tmp_path / "profiles.toml"
    path.write_text(
        f'[profiles.worker]\ncommand = ["{sys.executable}", "{tmp_path / "reporter.py"}"]\n\n'
        f'[profiles.stubborn]\ncommand = ["{sys.executable}", "{tmp_path / "stubborn.py"}"]\n'
    )
    return path


def serve_args(tmp_path: Path) -> list[str]:
    """The profiles above, and a one-file code base as every project's root (the spawns'
    contexts must not wait for a scan of this repository, the server's working directory)."""
    small_code_base(tmp_path / "code")
    return ["--profiles", str(profiles_file(tmp_path)), "--root", str(tmp_path / "code")]


async def spawn(port: int, tok: str, agent_type: str) -> dict:
    r = await client(port).request("POST", "/api/agents/spawn", tok, {"agent_type": agent_type, "issue_id": "iss-1"})
    assert r.status == 201, r.body
    return r.json()  # type: ignore[no-any-return]


async def child_of(port: int, tok: str, agent_id: str) -> int:
    """The pid the stubborn agent printed for its child."""
    with trio.fail_after(10):
        while True:
            lines = (await client(port).request("GET", f"/api/agents/{agent_id}/logs", tok)).json()["lines"]
            for line in lines:
                if line.startswith("child ") and line.endswith(" ."):
                    return int(line.split()[1])
            await trio.sleep(0.02)


def _leave_nothing(proc: Proc, pids: list[int]) -> None:
    """However a test ended: its server is gone and so are the agents' processes it knows."""
    if proc.p.poll() is None:
        proc.p.kill()
    for pid in pids:
        if alive(pid):
            os.kill(pid, signal.SIGKILL)


async def test_serve_spawns_agents_that_talk_back_and_none_outlives_a_sigterm(tmp_path):
    data = tmp_path / "data"
    # the default grace (5 s): the agents' stop outlasts the other parts' stop bound, and still
    # ends before the store stops (the records say "stopped")
    proc = Proc(data, *serve_args(tmp_path))
    pids: list[int] = []
    try:
        port = await proc.ready()
        arch = token(data, "--project", "p1", "--agent-type", "chief-architect", "--sub", "arch")
        worker = await spawn(port, arch, "worker")
        with trio.fail_after(10):
            while True:
                results = (await client(port).request("GET", "/api/results?agent_type=worker", arch)).json()["results"]
                if results:
                    break
                await trio.sleep(0.05)
        assert results[0]["agent_id"] == worker["agent_id"]
        assert results[0]["result"]["url"] == f"http://127.0.0.1:{port}"
        stubborn = await spawn(port, arch, "stubborn")
        pids = [stubborn["process_id"], await child_of(port, arch, stubborn["agent_id"])]
        assert all(alive(p) for p in pids)
        proc.p.send_signal(signal.SIGTERM)
        assert await trio.to_thread.run_sync(proc.wait) == 0
        await gone(*pids, timeout=1)  # SIGKILLed after the grace, before the server exited
    finally:
        _leave_nothing(proc, pids)
    again = Proc(data, *serve_args(tmp_path))
    try:
        port = await again.ready()
        agents = (await client(port).request("GET", "/api/agents", arch)).json()["agents"]
        states = {a["agent_id"]: (a["state"], a["reason"]) for a in agents}
        assert states == {worker["agent_id"]: ("exited", None),
                          stubborn["agent_id"]: ("stopped", "the server stopped")}
    finally:
        again.p.kill()


async def test_after_a_sigkill_of_serve_the_next_start_ends_its_leftover_agents(tmp_path):
    """--agent-stop-grace also bounds how long the next start waits on leftovers that ignore SIGTERM."""
    data = tmp_path / "data"
    proc = Proc(data, *serve_args(tmp_path), "--agent-stop-grace", "0.5")
    pids: list[int] = []
    try:
        port = await proc.ready()
        arch = token(data, "--project", "p1", "--agent-type", "chief-architect", "--sub", "arch")
        stubborn = await spawn(port, arch, "stubborn")
        pids = [stubborn["process_id"], await child_of(port, arch, stubborn["agent_id"])]
        proc.p.kill()
        await trio.to_thread.run_sync(proc.wait)
        assert all(alive(p) for p in pids)  # left behind, as after any crash
        again = Proc(data, *serve_args(tmp_path), "--agent-stop-grace", "0.5")
        try:
            port = await again.ready()
            await gone(*pids, timeout=3)
            record = (await client(port).request("GET", f"/api/agents/{stubborn['agent_id']}/status", arch)).json()
            assert record["state"] == "failed" and record["reason"].startswith("server restarted")
        finally:
            again.p.kill()
    finally:
        _leave_nothing(proc, pids)
