"""Spawned agents end to end: real processes (small Python scripts as agent commands), a real
SQLite store, the agents' subtree as the server runs it. Each test is bounded by fail_after."""

from __future__ import annotations

import dataclasses
import os
import signal
import subprocess
import textwrap

import orjson
import pytest
import trio
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from orchestra.actors.agents import AgentCapReached, NotSpawnable, agent_child_id
from orchestra.actors.errors import IdempotencyConflict, NotFound
from orchestra.actors.idempotency import IdemKey, fingerprint
from orchestra.actors.profiles import AgentProfile

from tests.agents_harness import (
    PY,
    AgentsHarness,
    agents_over_a_system,
    alive,
    gone,
    profiles,
    running_agents,
    script,
)

SLEEPER = "import time; print('ready', flush=True); time.sleep(1000)"
IGNORES_TERM = (
    "import signal, time; signal.signal(signal.SIGTERM, signal.SIG_IGN);"
    " print('ready', flush=True); time.sleep(1000)"
)
FORKS = (
    "import subprocess, sys, time\n"
    "child = subprocess.Popen([sys.executable, '-c', 'import signal, time;"
    " signal.signal(signal.SIGTERM, signal.SIG_IGN); time.sleep(1000)'])\n"
    "print('child', child.pid, '.', flush=True)\n"
    "time.sleep(1000)\n"
)


def _pid_after(lines: list[str], word: str) -> int:
    """The pid a script printed as ``<word> <pid> .`` (the dot: the line is complete)."""
    return next(int(line.split()[1]) for line in lines if line.startswith(word + " ") and line.endswith(" ."))


async def test_spawn_runs_the_profile_command_with_its_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("ORCHESTRA_JWT_SECRET", "must-not-leak")
    code = textwrap.dedent("""
        import json, os
        env = {k: v for k, v in os.environ.items() if k.startswith("ORCHESTRA_") or k == "EXTRA"}
        print(json.dumps(env), flush=True)
        print("pgid-is-pid", os.getpgid(0) == os.getpid(), flush=True)
        print("context", open(os.environ["ORCHESTRA_CONTEXT_FILE"]).read(), flush=True)
    """)
    with trio.fail_after(20):
        async with running_agents(tmp_path / "d", profiles(script(code))) as h:
            answer = await h.spawn(task="fix it", environment=(("EXTRA", "1"),))
            agent_id = answer["agent_id"]
            assert answer["spawned"] is True and answer["process_id"] > 0
            assert answer["jwt_token"] == f"tok-{agent_id}" and answer["context_injected"] is True
            record = await h.until(agent_id, lambda r: r["state"] == "exited")
            assert record["exit_code"] == 0 and record["pid"] == answer["process_id"]
            assert record["started_at"] and record["ended_at"] and record["restarts"] == 0
            assert record["log_path"] == str(tmp_path / "d" / "logs" / "p1" / f"{agent_id}.log")
            assert not any(k.startswith("_") for k in record)
            lines = (await h.sup.logs("p1", agent_id, tail=10))["lines"]
            env = orjson.loads(lines[0])
            assert env == {
                "ORCHESTRA_URL": "http://127.0.0.1:9", "ORCHESTRA_TOKEN": f"tok-{agent_id}",
                "ORCHESTRA_AGENT_ID": agent_id, "ORCHESTRA_PROJECT_ID": "p1",
                "ORCHESTRA_ISSUE_ID": "iss-1", "ORCHESTRA_TASK": "fix it",
                "ORCHESTRA_CONTEXT_FILE": str(tmp_path / "d" / "contexts" / "p1" / f"{agent_id}.json"),
                "EXTRA": "1",
            }
            assert lines[1] == "pgid-is-pid True"
            assert lines[2].startswith("context {") and "iss-1" in lines[2]
            assert h.event_types(agent_id) == ["agent_spawned", "agent_exited"]
            exited = [d for _, t, d in h.events if t == "agent_exited"][0]
            assert exited["exit_code"] == 0 and exited["agent_id"] == agent_id


async def test_request_environment_cannot_override_orchestra_variables(tmp_path):
    code = "import os; print(os.environ['ORCHESTRA_AGENT_ID'], flush=True)"
    with trio.fail_after(20):
        async with running_agents(tmp_path / "d", profiles(script(code))) as h:
            answer = await h.spawn(environment=(("ORCHESTRA_AGENT_ID", "forged"),))
            await h.until(answer["agent_id"], lambda r: r["state"] == "exited")
            assert (await h.sup.logs("p1", answer["agent_id"]))["lines"] == [answer["agent_id"]]


async def test_a_type_without_command_cannot_be_spawned(tmp_path):
    with trio.fail_after(20):
        async with running_agents(tmp_path / "d", profiles()) as h:
            with pytest.raises(NotSpawnable, match="has no command configured"):
                await h.spawn("code-reviewer")
            assert await h.sup.list("p1") == []


async def test_non_zero_exit_with_restart_never_is_exited_with_its_code(tmp_path):
    with trio.fail_after(20):
        async with running_agents(tmp_path / "d", profiles(script("raise SystemExit(3)"))) as h:
            answer = await h.spawn()
            record = await h.until(answer["agent_id"], lambda r: r["state"] == "exited")
            assert record["exit_code"] == 3 and record["restarts"] == 0
            assert h.event_types(answer["agent_id"]) == ["agent_spawned", "agent_exited"]


async def test_on_failure_restarts_with_backoff_then_failed(tmp_path):
    code = "import os; print('run', os.getpid(), flush=True); raise SystemExit(1)"
    worker = script(code, restart="on-failure", max_restarts=2, restart_period=60,
                    restart_backoff=0.05, restart_backoff_max=0.2)
    with trio.fail_after(20):
        async with running_agents(tmp_path / "d", profiles(worker)) as h:
            answer = await h.spawn()
            record = await h.until(answer["agent_id"], lambda r: r["state"] == "failed")
            assert record["restarts"] == 2 and record["exit_code"] == 1
            assert "gave up after 2 restarts" in record["reason"]
            runs = [line for line in (await h.sup.logs("p1", answer["agent_id"]))["lines"] if line.startswith("run ")]
            assert len(runs) == 3 and len(set(runs)) == 3  # three processes, each its own pid
            assert h.event_types(answer["agent_id"]) == ["agent_spawned", "agent_failed"]


async def test_on_failure_does_not_restart_a_clean_exit(tmp_path):
    worker = script("print('done')", restart="on-failure", restart_backoff=0.01)
    with trio.fail_after(20):
        async with running_agents(tmp_path / "d", profiles(worker)) as h:
            answer = await h.spawn()
            record = await h.until(answer["agent_id"], lambda r: r["state"] == "exited")
            assert record["exit_code"] == 0 and record["restarts"] == 0


async def test_a_killed_agent_is_seen_dead_within_a_second(tmp_path):
    with trio.fail_after(20):
        async with running_agents(tmp_path / "d", profiles(script(SLEEPER))) as h:
            answer = await h.spawn()
            await h.log_until(answer["agent_id"], "ready")
            os.kill(answer["process_id"], signal.SIGKILL)
            record = await h.until(answer["agent_id"], lambda r: r["state"] == "exited", timeout=1.0)
            assert record["exit_code"] == -signal.SIGKILL and "signal 9" in record["reason"]


async def test_a_sigstopped_agent_is_stalled_and_a_request_makes_it_running(tmp_path):
    with trio.fail_after(20):
        async with running_agents(tmp_path / "d", profiles(script(SLEEPER, stall_timeout=0.3))) as h:
            answer = await h.spawn()
            agent_id, pid = answer["agent_id"], answer["process_id"]
            await h.log_until(agent_id, "ready")
            os.kill(pid, signal.SIGSTOP)
            try:
                record = await h.until(agent_id, lambda r: r["state"] == "stalled", timeout=3)
                assert record["pid"] == pid
                assert h.event_types(agent_id) == ["agent_spawned", "agent_stalled"]
            finally:
                os.kill(pid, signal.SIGCONT)
            before = record["last_activity"]
            h.sup.touch(agent_id)  # the edge's word: this agent made a request
            record = await h.until(agent_id, lambda r: r["state"] == "running", timeout=1)
            assert record["last_activity"] > before
            h.sup.touch(agent_id)
            await trio.sleep(0.01)
            assert (await h.sup.status("p1", agent_id))["last_activity"] > record["last_activity"]
            h.sup.touch("not-a-spawned-agent")  # any other sub: nothing happens


async def test_stop_ends_an_agent_that_ignores_sigterm(tmp_path):
    with trio.fail_after(20):
        async with running_agents(tmp_path / "d", profiles(script(IGNORES_TERM))) as h:
            answer = await h.spawn()
            await h.log_until(answer["agent_id"], "ready")
            record = await h.sup.stop("p1", answer["agent_id"], grace=0.3)
            assert record["state"] == "stopped" and record["exit_code"] == -signal.SIGKILL
            assert not alive(answer["process_id"])
            assert h.event_types(answer["agent_id"]) == ["agent_spawned", "agent_exited"]
            # stopping an ended agent answers its record, unchanged
            again = await h.sup.stop("p1", answer["agent_id"], grace=0.3)
            assert again["state"] == "stopped" and again["ended_at"] == record["ended_at"]


async def test_stop_ends_what_an_agent_forked(tmp_path):
    with trio.fail_after(20):
        async with running_agents(tmp_path / "d", profiles(script(FORKS))) as h:
            answer = await h.spawn()
            child = _pid_after(await h.log_until(answer["agent_id"], " ."), "child")
            assert alive(child)
            record = await h.sup.stop("p1", answer["agent_id"], grace=2)
            assert record["state"] == "stopped"
            await gone(answer["process_id"], child, timeout=2)


async def test_what_an_agent_forked_ends_when_it_exits(tmp_path):
    code = FORKS.rsplit("time.sleep(1000)", 1)[0] + "time.sleep(0.3)\n"  # the leader exits, its child would not
    with trio.fail_after(20):
        async with running_agents(tmp_path / "d", profiles(script(code))) as h:
            answer = await h.spawn()
            child = _pid_after(await h.log_until(answer["agent_id"], " ."), "child")
            await h.until(answer["agent_id"], lambda r: r["state"] == "exited")
            await gone(child, timeout=2)


async def test_no_agent_outlives_a_shutdown(tmp_path):
    children: list[int] = []
    kinds = profiles(
        script(FORKS, restart="on-failure", restart_backoff=0.001, restart_backoff_max=0.001),
        script(IGNORES_TERM, agent_type="stubborn"),
    )
    with trio.fail_after(20):
        async with running_agents(tmp_path / "d", kinds, shutdown_grace=0.3) as h:
            first = await h.spawn()
            second = await h.spawn("stubborn")
            children.append(_pid_after(await h.log_until(first["agent_id"], " ."), "child"))
            await h.log_until(second["agent_id"], "ready")
            pids = [first["process_id"], second["process_id"], *children]
            assert all(alive(p) for p in pids)
        await gone(*pids, timeout=1)
        async with running_agents(tmp_path / "d", kinds) as h:
            for answer in (first, second):
                record = await h.sup.status("p1", answer["agent_id"])
                # a stop, not a failure: the restart policy does not start it again
                assert (record["state"], record["reason"], record["restarts"]) == (
                    "stopped", "the server stopped", 0)
            assert h.events == []


async def test_log_is_size_capped_and_rotated(tmp_path):
    code = "import sys\nfor i in range(400): print(f'line {i:04d} ' + 'x' * 40)\n"
    with trio.fail_after(20):
        async with running_agents(tmp_path / "d", profiles(script(code)), log_max_bytes=4096, log_backups=2) as h:
            answer = await h.spawn()
            record = await h.until(answer["agent_id"], lambda r: r["state"] == "exited")
            log = tmp_path / "d" / "logs" / "p1" / f"{answer['agent_id']}.log"
            assert record["log_path"] == str(log)
            files = sorted(log.parent.iterdir())
            assert [f.name for f in files] == [log.name, log.name + ".1", log.name + ".2"]
            assert all(f.stat().st_size <= 4096 for f in files)
            lines = (await h.sup.logs("p1", answer["agent_id"], tail=3))["lines"]
            assert [line[:9] for line in lines] == ["line 0397", "line 0398", "line 0399"]


async def test_caps_per_project_per_type_and_depth(tmp_path):
    capped = script(SLEEPER, agent_type="capped", max_running=1)
    with trio.fail_after(20):
        async with running_agents(tmp_path / "d", profiles(script(SLEEPER), capped), per_project=3, max_depth=2) as h:
            first = await h.spawn("capped")
            with pytest.raises(AgentCapReached) as caught:
                await h.spawn("capped")
            assert caught.value.cap == "type" and caught.value.bound == "agents.type" and caught.value.limit == 1
            assert "max_running" in str(caught.value)
            second = await h.spawn(spawned_by=first["agent_id"])  # depth 2
            with pytest.raises(AgentCapReached) as caught:
                await h.spawn(spawned_by=second["agent_id"])  # depth 3
            assert caught.value.cap == "depth" and caught.value.limit == 2
            await h.spawn()
            with pytest.raises(AgentCapReached) as caught:
                await h.spawn()
            assert caught.value.cap == "project" and caught.value.details["retry_after_seconds"] > 0
            other = await h.spawn(project="p2")  # another project has its own cap
            assert other["spawned"]
            assert (h.sup.running("p1"), h.sup.running("p2"), h.sup.running()) == (3, 1, 4)
            await h.sup.stop("p1", first["agent_id"], grace=1)
            assert (await h.spawn("capped"))["spawned"]  # an ended agent frees its slots
            assert {r["depth"] for r in await h.sup.list("p1")} == {1, 2}


async def test_a_retried_spawn_never_starts_a_second_process(tmp_path):
    data = tmp_path / "d"
    body = {"agent_type": "worker", "issue_id": "iss-1"}
    key = IdemKey("caller", "k-1", fingerprint("agent.spawn", body))
    answers = []
    with trio.fail_after(20):
        async with running_agents(data, profiles(script(SLEEPER))) as h:
            async with trio.open_nursery() as nursery:
                for _ in range(3):
                    async def once() -> None:
                        answers.append(await h.spawn(spawned_by="caller", idem=key))
                    nursery.start_soon(once)
            assert len({a["agent_id"] for a in answers}) == 1 and len(answers) == 3
            assert len(await h.sup.list("p1")) == 1
            assert await h.spawn(spawned_by="caller", idem=key) == answers[0]
            other = IdemKey("caller", "k-1", fingerprint("agent.spawn", {**body, "task": "x"}))
            with pytest.raises(IdempotencyConflict):
                await h.spawn(spawned_by="caller", idem=other)
            # the same key in another project, or of another sub, is another spawn
            assert (await h.spawn(project="p2", spawned_by="caller", idem=key))["agent_id"] != answers[0]["agent_id"]
        async with running_agents(data, profiles(script(SLEEPER))) as h:
            assert await h.spawn(spawned_by="caller", idem=key) == answers[0]  # after a restart too
            assert len(await h.sup.list("p1")) == 1


async def test_status_list_and_another_projects_agent(tmp_path):
    with trio.fail_after(20):
        async with running_agents(tmp_path / "d", profiles(script(SLEEPER), script("pass", agent_type="quick"))) as h:
            a = await h.spawn(issue="iss-a")
            b = await h.spawn("quick", issue="iss-b")
            await h.until(b["agent_id"], lambda r: r["state"] == "exited")
            listed = await h.sup.list("p1")
            assert [r["agent_id"] for r in listed] == [b["agent_id"], a["agent_id"]]  # newest first
            assert [r["agent_id"] for r in await h.sup.list("p1", state="running")] == [a["agent_id"]]
            assert [r["agent_id"] for r in await h.sup.list("p1", issue_id="iss-b")] == [b["agent_id"]]
            assert [r["agent_id"] for r in await h.sup.list("p1", agent_type="quick")] == [b["agent_id"]]
            assert set(listed[0]) >= {"agent_id", "agent_type", "issue_id", "state", "pid", "exit_code",
                                      "restarts", "started_at", "ended_at", "last_activity", "log_path"}
            for call in (h.sup.status, h.sup.logs, h.sup.stop):
                with pytest.raises(NotFound):
                    await call("p2", a["agent_id"])
            with pytest.raises(NotFound):
                await h.sup.status("p1", "no-such-agent")


async def test_a_crash_of_the_agent_actor_does_not_leave_its_process_unowned(tmp_path):
    worker = script(SLEEPER, restart="on-failure", restart_backoff=0.01, restart_backoff_max=0.01)
    with trio.fail_after(20):
        async with running_agents(tmp_path / "d", profiles(worker, script(SLEEPER, agent_type="once"))) as h:
            answer = await h.spawn()
            await h.log_until(answer["agent_id"], "ready")
            assert h.sup.children.lookup(agent_child_id(answer["agent_id"])).inject_fault("crash")
            await gone(answer["process_id"], timeout=2)
            record = await h.until(answer["agent_id"], lambda r: r["state"] == "running"
                                   and r["pid"] != answer["process_id"])
            assert record["restarts"] == 1
            once = await h.spawn("once")
            await h.log_until(once["agent_id"], "ready")
            assert h.sup.children.lookup(agent_child_id(once["agent_id"])).inject_fault("crash")
            record = await h.until(once["agent_id"], lambda r: r["state"] == "failed")
            assert "actor crashed" in record["reason"]
            await gone(once["process_id"], timeout=2)


async def test_restarts_after_crashes_of_the_agent_actor_count_against_the_policy(tmp_path):
    worker = script(SLEEPER, restart="on-failure", max_restarts=1, restart_backoff=0.01,
                    restart_backoff_max=0.01)
    with trio.fail_after(20):
        async with running_agents(tmp_path / "d", profiles(worker)) as h:
            answer = await h.spawn()
            agent_id = answer["agent_id"]
            ref = h.sup.children.lookup(agent_child_id(agent_id))
            assert ref.inject_fault("crash")
            record = await h.until(agent_id, lambda r: r["state"] == "running" and r["restarts"] == 1)
            assert ref.inject_fault("crash")
            record = await h.until(agent_id, lambda r: r["state"] == "failed")
            assert record["restarts"] == 1 and "gave up after 1 restarts" in record["reason"]
            await gone(answer["process_id"], record["pid"], timeout=2)


async def test_a_crash_of_the_registry_keeps_agents_and_caps(tmp_path):
    with trio.fail_after(20):
        async with running_agents(tmp_path / "d", profiles(script(SLEEPER)), per_project=1) as h:
            answer = await h.spawn()
            assert h.sup.ref.inject_fault("crash")
            with trio.fail_after(5):
                while True:
                    try:
                        record = await h.sup.status("p1", answer["agent_id"])
                        break
                    except Exception:
                        await trio.sleep(0.02)
            assert record["state"] == "running" and alive(answer["process_id"])
            with pytest.raises(AgentCapReached):
                await h.spawn()


REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HOST = textwrap.dedent("""
    import sys, trio
    sys.path.insert(0, sys.argv[3])
    from pathlib import Path
    from tests.agents_harness import profiles, running_agents, script

    FORKS = sys.argv[2]

    async def main():
        async with running_agents(Path(sys.argv[1]), profiles(script(FORKS))) as h:
            answer = await h.spawn()
            lines = await h.log_until(answer["agent_id"], " .")
            print(answer["agent_id"], answer["process_id"], lines[0].split()[1], flush=True)
            await trio.sleep(1000)

    trio.run(main)
""")


async def test_after_a_sigkill_of_the_server_leftover_agents_are_ended_and_marked(tmp_path):
    data = tmp_path / "d"
    with trio.fail_after(30):
        host = await trio.lowlevel.open_process(
            [PY, "-c", HOST, str(data), FORKS, REPO], stdout=subprocess.PIPE,
        )
        try:
            line = b""
            while not line.endswith(b"\n"):
                line += await host.stdout.receive_some(1024)
            agent_id, pid, child = line.decode().split()
            pid, child = int(pid), int(child)
        finally:
            host.kill()  # SIGKILL: nothing of the host runs its shutdown
            await host.wait()
        try:
            assert alive(pid) and alive(child)  # left behind, as after a crash
            async with running_agents(data, profiles(script(FORKS)), shutdown_grace=0.5) as h:
                await gone(pid, child, timeout=3)
                record = await h.sup.status("p1", agent_id)
                assert record["state"] == "failed" and record["reason"].startswith("server restarted")
                assert ("p1", "agent_failed") in {(p, t) for p, t, _ in h.events}
        finally:  # a failure here must not leave this test's own processes behind
            for leftover in (pid, child):
                if alive(leftover):
                    os.kill(leftover, signal.SIGKILL)


async def test_recovery_never_signals_a_process_it_cannot_prove_is_its_own(tmp_path):
    """A record left 'running' whose pid is now another process (here: a stranger started
    after the record) is marked failed, and the stranger is left alone."""
    from orchestra.actors.agents import identity_of
    from orchestra.actors.store import AgentRow, SaveAgent, SQLiteBackend

    data = tmp_path / "d"
    stranger = await trio.lowlevel.open_process([PY, "-c", "import time; time.sleep(1000)"],
                                                start_new_session=True)
    try:
        ident = identity_of(stranger.pid)
        forged = {**ident.__dict__, "start_ticks": ident.start_ticks - 1}  # an older process had that pid
        record = {"agent_id": "worker-old", "agent_type": "worker", "issue_id": "i", "project_id": "p1",
                  "state": "running", "pid": stranger.pid, "exit_code": None, "restarts": 0,
                  "log_path": "x", "_identity": forged}
        backend = SQLiteBackend(data / "orchestra.db")
        backend.open()
        backend.apply([SaveAgent(AgentRow("worker-old", "p1", "running", 1, "t", orjson.dumps(record)))], [])
        backend.close()
        with trio.fail_after(20):
            async with running_agents(data, profiles(script(SLEEPER))) as h:
                record = await h.sup.status("p1", "worker-old")
                assert record["state"] == "failed" and record["reason"] == "server restarted"
                await trio.sleep(0.2)
                assert alive(stranger.pid)
    finally:
        stranger.kill()
        await stranger.wait()


def _git(cwd, *args):
    return subprocess.run(["git", "-C", str(cwd), *args], check=True, capture_output=True, text=True).stdout


async def test_worktree_workspace_is_made_per_agent_and_removed_when_it_ends(tmp_path):
    repo = tmp_path / "repo"
    repo.mkdir()
    _git(repo, "init", "-q", "-b", "main")
    (repo / "a.txt").write_text("a\n")
    _git(repo, "add", "a.txt")
    _git(repo, "-c", "user.email=t@e", "-c", "user.name=t", "commit", "-q", "-m", "one")
    code = ("import os, subprocess; print('cwd', os.getcwd());"
            " print('branch', subprocess.run(['git', 'branch', '--show-current'], capture_output=True,"
            " text=True).stdout.strip()); print('has', os.path.exists('a.txt'), flush=True)")
    with trio.fail_after(30):
        async with running_agents(tmp_path / "d", profiles(script(code, workspace="worktree")), root=repo) as h:
            answer = await h.spawn()
            agent_id = answer["agent_id"]
            record = await h.until(agent_id, lambda r: r["state"] == "exited")
            lines = (await h.sup.logs("p1", agent_id))["lines"]
            worktree = tmp_path / "d" / "worktrees" / "p1" / agent_id
            assert lines == [f"cwd {worktree}", f"branch orchestra/{agent_id}", "has True"]
            assert record["workspace"] == str(worktree)
            assert not worktree.exists()
            assert str(worktree) not in _git(repo, "worktree", "list")
            assert f"orchestra/{agent_id}" not in _git(repo, "branch")


async def test_a_command_that_cannot_start_is_failed_not_a_crash(tmp_path):
    missing = AgentProfile(agent_type="missing", command=(str(tmp_path / "no-such-program"),))
    with trio.fail_after(20):
        async with running_agents(tmp_path / "d", profiles(missing)) as h:
            answer = await h.spawn("missing")
            assert answer["spawned"] is False and answer["process_id"] is None
            record = await h.sup.status("p1", answer["agent_id"])
            assert record["state"] == "failed" and "cannot start" in record["reason"]
            assert h.sup.children.total_crashes() == 0
            await h.spawn("missing")  # and it holds no slot



async def test_server_hooks_give_the_issue_context_and_publish_in_the_project(tmp_path):
    """The production hooks over a real actor system: the context file is the context answer
    for the agent's issue and type, and the agent_* events are the project's own events."""
    from orchestra.actors.agents import Spawn
    from orchestra.actors.events import EventFilter
    from orchestra.actors.project import Wait

    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "parser.py").write_text("def parse_header(line):\n    return line.split(':')\n")
    code = "import json, os; print(json.load(open(os.environ['ORCHESTRA_CONTEXT_FILE']))['issue_id'])"
    with trio.fail_after(30):
        async with agents_over_a_system(tmp_path / "d", profiles(script(code)), {"p1": repo}) as (system, sup):
            answer = await sup.spawn(Spawn("p1", "worker", "iss-9", task="parse header", context_bytes=4096))
            agent_id = answer["agent_id"]
            context_file = tmp_path / "d" / "contexts" / "p1" / f"{agent_id}.json"
            context = orjson.loads(context_file.read_bytes())
            assert context["issue_id"] == "iss-9" and context["agent_type"] == "worker"
            assert any(f["path"] == "parser.py" for f in context["context"]["relevant_files"])
            assert context_file.stat().st_size <= 4096
            project = await system.project("p1")
            events = []
            for event_type in ("agent_spawned", "agent_exited"):
                answer = await project.call(
                    Wait("observer", event_type, EventFilter.parse(None), 0, 10, 5.0), timeout=10)
                events += orjson.loads(answer.reply)["events"]
            assert [(e["event_type"], e["publisher"], e["topic"], e["data"]["agent_id"]) for e in events] == [
                ("agent_spawned", "orchestra", "coordination", agent_id),
                ("agent_exited", "orchestra", "coordination", agent_id),
            ]
            assert events[1]["data"]["exit_code"] == 0 and events[1]["correlation_id"] == "iss-9"
            assert (await sup.logs("p1", agent_id))["lines"] == ["iss-9"]


async def test_an_agent_whose_actor_cannot_start_is_recorded_failed_and_frees_its_slot(tmp_path):
    from orchestra.actors.errors import Unavailable

    data = tmp_path / "d"
    (data / "logs").mkdir(parents=True)
    (data / "logs" / "p1").write_text("a file where the project's log folder should be")
    key = IdemKey("caller", "k", fingerprint("agent.spawn", {}))
    with trio.fail_after(20):
        async with running_agents(data, profiles(script(SLEEPER)), per_project=1) as h:
            with pytest.raises(Unavailable, match="could not be started"):
                await h.spawn(spawned_by="caller", idem=key)
            (record,) = await h.sup.list("p1")
            assert record["state"] == "failed" and "could not be started" in record["reason"]
            assert "FileExistsError" in record["reason"] or "NotADirectoryError" in record["reason"]
            again = await h.spawn(spawned_by="caller", idem=key)  # the key's outcome, nothing new
            assert (again["agent_id"], again["state"], again["spawned"]) == (record["agent_id"], "failed", False)
            (data / "logs" / "p1").unlink()
            assert (await h.spawn())["spawned"]  # its slot was freed


@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(cases=st.lists(st.tuples(
    st.lists(st.tuples(st.text(max_size=6), st.text(max_size=12)), max_size=3).map(tuple),
    st.none() | st.text(max_size=24),
), min_size=1, max_size=4))
@example(cases=[((("A=B", "x"),), None), ((("X", "a\x00b"),), None), ((), "\ud800"), ((("", "v"),), "ok")])
def test_any_environment_or_task_is_an_answer_never_a_crash(tmp_path_factory, cases):
    """The edge validates the environment; behind it, what the OS cannot take (a NUL, an '='
    in a name, a lone surrogate) is refused as the request's error, and anything else the
    process refuses fails that agent — never a crash of an actor."""
    from orchestra.actors.agents import TERMINAL_STATES
    from orchestra.actors.errors import InvalidRequest

    async def main() -> None:
        kinds = profiles(script("pass", restart="on-failure", restart_backoff=0.001, restart_backoff_max=0.001))
        with trio.fail_after(30):
            async with running_agents(tmp_path_factory.mktemp("d"), kinds) as h:
                for env, task in cases:
                    try:
                        answer = await h.spawn(task=task, environment=env)
                    except InvalidRequest as refused:
                        assert refused.field in ("task", "environment") or refused.field.startswith("environment.")
                        continue
                    record = await h.until(answer["agent_id"], lambda r: r["state"] in TERMINAL_STATES)
                    assert record["state"] in ("exited", "failed")
                assert h.sup.tree.total_crashes() == 0

    trio.run(main)


async def test_without_hooks_a_spawn_is_unavailable_and_the_subtree_runs(tmp_path):
    from orchestra.actors.agents import AgentsConfig, AgentSupervisor, Spawn
    from orchestra.actors.errors import Unavailable
    from orchestra.actors.runtime import ActorRef, ChildSpec, Supervisor
    from orchestra.actors.store import SQLiteBackend, StoreActor

    store = ActorRef("store")
    sup = AgentSupervisor(AgentsConfig(data_dir=tmp_path), profiles(script(SLEEPER)), store)
    tree = Supervisor("root", [
        ChildSpec.actor("store", store, lambda: StoreActor(SQLiteBackend(tmp_path / "o.db"))),
        ChildSpec("agents", lambda: sup.tree),
    ])
    with trio.fail_after(20):
        async with trio.open_nursery() as nursery:
            await nursery.start(tree.run)
            with pytest.raises(Unavailable, match="without their hooks"):
                await sup.spawn(Spawn("p1", "worker", "iss-1"))
            assert await sup.list("p1") == [] and tree.total_crashes() == 0
            nursery.cancel_scope.cancel()


async def test_a_context_actor_crashing_while_an_agent_is_prepared_is_waited_for(tmp_path):
    """A crash of the server's parts while a spawn prepares the context (the demo's chaos found
    it) delays the agent; it does not fail it."""
    from orchestra.actors.agents import Spawn
    from orchestra.actors.runtime import ActorCrashed

    failures = [ActorCrashed("context:p1", "InjectedCrash"), ActorCrashed("context:p1", "InjectedCrash")]

    def flaky(hooks):
        async def write_context(spec, path):
            if failures:
                raise failures.pop()
            await hooks.write_context(spec, path)

        return dataclasses.replace(hooks, write_context=write_context)

    kinds = profiles(script("print('started')"))
    with trio.fail_after(30):
        async with agents_over_a_system(tmp_path / "d", kinds, {"p1": tmp_path}, wrap=flaky) as (_, sup):
            answer = await sup.spawn(Spawn("p1", "worker", "iss-1"))
            record = await AgentsHarness(sup, [], tmp_path / "d").until(
                answer["agent_id"], lambda r: r["state"] in ("exited", "failed"), timeout=25)
            assert failures == [] and record["state"] == "exited" and record["exit_code"] == 0, record
