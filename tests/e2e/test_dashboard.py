"""`orchestra dashboard` end to end: the real command against a real server, once (no TTY) and
live in a pseudo-terminal (tmux), where a restart appears after a fault is injected."""

from __future__ import annotations

import shutil
import sys
import uuid

import pytest
import trio
from orchestra.transport.auth import load_secret

from tests.conftest import Harness, result_body


def _admin(h: Harness) -> str:
    return h.token("*", agent_type="dashboard", sub="dash", admin=True)


async def _workload(h: Harness) -> None:
    for project in ("alpha", "beta"):
        r = await h.request("POST", "/api/results", h.token(project), result_body(issue=f"{project}-1"))
        assert r.status == 200, r.body


async def test_once_prints_one_snapshot_and_exits(server: Harness):
    await _workload(server)
    url = f"http://127.0.0.1:{server.port}"
    done = await trio.run_process(
        [sys.executable, "-m", "orchestra", "dashboard", "--once", "--url", url, "--token", _admin(server)],
        capture_stdout=True, capture_stderr=True, check=False,
    )
    out = done.stdout.decode()
    assert done.returncode == 0, out + done.stderr.decode()
    assert f"Orchestra {url}" in out and "connected" in out
    assert "── Projects 2 running" in out
    assert any(line.startswith("alpha ") for line in out.split("\n"))
    assert "agent_completed" in out  # the tail replays the latest events


async def test_once_without_a_server_says_so_and_fails(tmp_path):
    load_secret(tmp_path, create=True)  # the key a server there would have made
    done = await trio.run_process(
        [sys.executable, "-m", "orchestra", "dashboard", "--once", "--url", "http://127.0.0.1:9",
         "--data-dir", str(tmp_path), "--timeout", "0.5"],
        capture_stdout=True, capture_stderr=True, check=False,
    )
    assert done.returncode == 1 and "ConnectionFailed" in done.stderr.decode()


@pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed")
async def test_live_in_a_terminal_a_restart_appears_after_a_fault(server: Harness):
    await _workload(server)
    admin = _admin(server)
    session = f"orchestra-dash-{uuid.uuid4().hex[:8]}"
    command = (f"{sys.executable} -m orchestra dashboard --url http://127.0.0.1:{server.port} "
               f"--token {admin} --poll 0.2")

    async def screen() -> str:
        done = await trio.run_process(["tmux", "capture-pane", "-p", "-t", session], capture_stdout=True)
        return str(done.stdout.decode())

    async def until(text: str) -> str:
        with trio.fail_after(20):
            while True:
                shown = await screen()
                if text in shown:
                    return shown
                await trio.sleep(0.1)

    await trio.run_process(["tmux", "new-session", "-d", "-s", session, "-x", "100", "-y", "30", command])
    try:
        await until("connected")
        shown = await until("projects/project:alpha")
        assert "restarts 0 crashes 0" in shown
        r = await server.request("POST", "/api/admin/faults", admin, {"target": "project:alpha", "kind": "crash"})
        assert r.status == 200
        shown = await until("restarts 1 crashes 1")
        row = next(line for line in shown.split("\n") if "projects/project:alpha" in line)
        assert row.split()[:4] == ["projects/project:alpha", "running", "1", "1"] and "InjectedCrash" in row
    finally:
        await trio.run_process(["tmux", "kill-session", "-t", session], check=False)
