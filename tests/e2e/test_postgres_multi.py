"""Two `orchestra serve` processes on one PostgreSQL database: writers and subscribers on each.

Every subscriber, on either process, sees every acknowledged event of the project once, in
cursor order; a subscriber resumes by cursor on the other process; a process killed mid-stream
loses nothing it acknowledged and its subscribers resume on the other. Skipped in one line
without a server."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
from typing import Any

import orjson
import pytest
import trio
import trio_websocket
from orchestra.actors.agents import ProcessIdentity, identity_of, is_own_group, signal_group

from tests.agents_harness import alive, gone
from tests.e2e.test_process import ORCHESTRA, Proc, client, token
from tests.postgres import fresh_schema


@pytest.fixture
def url():
    with fresh_schema() as url:
        yield url


#: each process beats its lease every 0.25 s; one silent for 3 s is lost (a loaded machine
#: may delay a beat by a second: far from the expiry)
LEASE = ("--lease-interval", "0.25", "--lease-expiry", "3")


def _agent_args(tmp_path) -> tuple[str, ...]:
    """A profile ``sleeper`` whose process runs until it is ended, and short leases."""
    path = tmp_path / "profiles.toml"
    code = "import time; print('ready', flush=True); time.sleep(1000)"
    path.write_text(f'[profiles.sleeper]\ncommand = ["{sys.executable}", "-c", "{code}"]\n')
    return ("--profiles", str(path), *LEASE)


async def _two(tmp_path, url: str, *extra: str) -> tuple[list[Proc], list[int], str]:
    """Two processes on ``url`` sharing one signing key (any token works on either)."""
    a = Proc(tmp_path / "a", "--store", url, *extra)
    ports = [await a.ready()]
    (tmp_path / "b").mkdir()
    shutil.copy(tmp_path / "a" / "jwt.secret", tmp_path / "b" / "jwt.secret")
    b = Proc(tmp_path / "b", "--store", url, *extra)
    ports.append(await b.ready())
    tok = token(tmp_path / "a", "--project", "p1", "--agent-type", "python-specialist")
    return [a, b], ports, tok


async def _deployment(port: int, admin: str) -> dict[str, Any]:
    """``/status``'s ``deployment`` as an admin sees it (every process)."""
    r = await client(port).request("GET", "/status", admin)
    assert r.status == 200, r.body
    return r.json()["deployment"]  # type: ignore[no-any-return]


async def _spawn_sleeper(port: int, tok: str) -> dict[str, Any]:
    r = await client(port).request("POST", "/api/agents/spawn", tok, {"agent_type": "sleeper", "issue_id": "i-1"})
    assert r.status == 201, r.body
    assert r.json()["spawned"] is True, r.body
    return r.json()  # type: ignore[no-any-return]


async def _record_until(port: int, tok: str, agent_id: str, pred: Any, seconds: float = 30) -> dict[str, Any]:
    with trio.fail_after(seconds):
        while True:
            r = None
            try:
                r = await client(port).request("GET", f"/api/agents/{agent_id}/status", tok)
            except* (OSError, trio.BrokenResourceError):
                # a connection the kernel gave a worker that was just SIGKILLed is reset: a
                # client asks again and reaches a live process (the port is shared)
                pass
            if r is not None and r.status == 200 and pred(r.json()):
                return r.json()  # type: ignore[no-any-return]
            await trio.sleep(0.05)


def _end_leftover(ident: ProcessIdentity | None) -> None:
    """The test's own cleanup of an agent process it proved is still the one spawned."""
    if ident is not None and is_own_group(ident):
        signal_group(ident.pid, signal.SIGKILL)


class Subscriber:
    """A WebSocket subscription to ``tick`` events (or ``types``) on one process; ``cursors``:
    what it got, ``events`` the events themselves."""

    def __init__(self, port: int, tok: str, since: str | None = None, types: tuple[str, ...] = ("tick",)) -> None:
        self.port, self.tok, self.since, self.types = port, tok, since, types
        self.cursors: list[str] = []
        self.events: list[dict[str, Any]] = []
        self.ready = trio.Event()
        self.closed = False

    async def run(self) -> None:
        try:
            async with trio_websocket.open_websocket(
                    "127.0.0.1", self.port, "/ws", use_ssl=False,
                    extra_headers=[("authorization", f"Bearer {self.tok}")]) as ws:
                msg: dict[str, Any] = {"id": 1, "op": "event.subscribe", "event_types": list(self.types)}
                if self.since is not None:
                    msg["since"] = self.since
                await ws.send_message(orjson.dumps(msg).decode())
                while True:
                    frame = orjson.loads(await ws.get_message())
                    if frame.get("id") == 1:
                        assert frame["result"]["recovered"] is True, frame
                        self.ready.set()
                    elif frame.get("op") == "event":
                        self.cursors.append(frame["event"]["cursor"])
                        self.events.append(frame["event"])
        except (trio_websocket.ConnectionClosed, trio_websocket.HandshakeError, OSError):
            self.closed = True


async def _write(port: int, tok: str, who: str, n: int, acked: list[str]) -> None:
    """Publish ``n`` events; each acknowledged cursor joins ``acked``. Stops at a broken link."""
    h = client(port)
    for i in range(n):
        try:
            r = await h.request("POST", "/api/events/tick", tok, {"data": {"who": who, "i": i}})
        except Exception:  # noqa: BLE001 (the process was killed: the connection breaks)
            return
        if r.status != 200:
            return
        acked.append(r.json()["cursor"])


async def _until(pred: Any, seconds: float = 20) -> None:
    with trio.fail_after(seconds):
        while not pred():  # noqa: ASYNC110 (other tasks' progress)
            await trio.sleep(0.02)


def _stop(procs: list[Proc]) -> None:
    for p in procs:
        if p.p.poll() is None:
            p.p.send_signal(signal.SIGINT)
    for p in procs:
        try:
            p.wait()
        except Exception:  # noqa: BLE001 (stuck: killed)
            p.p.kill()


async def test_two_processes_on_one_database_give_every_subscriber_every_event_in_order(tmp_path, url):
    procs, ports, tok = await _two(tmp_path, url)
    try:
        acked: list[str] = []
        subs = [Subscriber(ports[0], tok), Subscriber(ports[1], tok)]
        async with trio.open_nursery() as nursery:
            for s in subs:
                nursery.start_soon(s.run)
                await s.ready.wait()
            async with trio.open_nursery() as writers:
                for w in range(4):
                    writers.start_soon(_write, ports[w % 2], tok, f"w{w}", 40, acked)
            assert len(acked) == 160 and len(set(acked)) == 160  # no cursor taken twice
            await _until(lambda: all(len(s.cursors) >= len(acked) for s in subs))
            await trio.sleep(0.2)  # nothing more comes
            for s in subs:  # every event, from both processes, once, in cursor order
                assert s.cursors == sorted(acked)
            # a subscriber resumes by cursor on the other process: exactly what came after
            middle = sorted(acked)[80]
            late = Subscriber(ports[1], tok, since=middle)
            nursery.start_soon(late.run)
            await _until(lambda: len(late.cursors) >= 79)
            await trio.sleep(0.2)
            assert late.cursors == sorted(acked)[81:]
            nursery.cancel_scope.cancel()
    finally:
        _stop(procs)


async def test_a_process_killed_mid_stream_loses_nothing_acknowledged_and_its_subscriber_resumes_elsewhere(tmp_path, url):
    """... and its spawned agents are recorded failed by the other process (agent_failed
    published), and the next start on its host ends the agent processes it left running."""
    procs, ports, tok = await _two(tmp_path, url, *_agent_args(tmp_path))
    ident: ProcessIdentity | None = None
    try:
        acked: list[str] = []
        doomed, other = Subscriber(ports[0], tok), Subscriber(ports[1], tok)
        watcher = Subscriber(ports[1], tok, types=("agent_failed",))
        arch = token(tmp_path / "a", "--project", "p1", "--agent-type", "chief-architect", "--sub", "arch")
        admin = token(tmp_path / "a", "--agent-type", "dashboard", "--admin")
        # an agent spawned by the first process: the other's list names it the owner
        killed = (await _deployment(ports[0], admin))["process_id"]
        agent = await _spawn_sleeper(ports[0], arch)
        ident = identity_of(agent["process_id"])
        listed = (await client(ports[1]).request("GET", "/api/agents", arch)).json()["agents"]
        assert [(a["agent_id"], a["owner"], a["state"]) for a in listed] == [(agent["agent_id"], killed, "running")]
        seen = await _deployment(ports[1], admin)
        assert {p["process_id"]: p["state"] for p in seen["processes"]} == {killed: "alive", seen["process_id"]: "alive"}
        async with trio.open_nursery() as nursery:
            for s in (doomed, other, watcher):
                nursery.start_soon(s.run)
                await s.ready.wait()
            async with trio.open_nursery() as writers:
                for w in range(4):
                    writers.start_soon(_write, ports[w % 2], tok, f"w{w}", 60, acked)
                await _until(lambda: len(acked) >= 60)
                procs[0].p.kill()  # SIGKILL, mid-stream: its writers and its subscriber break
            await trio.to_thread.run_sync(procs[0].wait)
            await _until(lambda: doomed.closed)
            # the killed process's subscriber resumes on the other from its last cursor
            resumed = Subscriber(ports[1], tok, since=doomed.cursors[-1] if doomed.cursors else "0")
            nursery.start_soon(resumed.run)
            everything = sorted(acked)
            await _until(lambda: len(other.cursors) >= len(everything)
                         and set(everything) <= set(doomed.cursors) | set(resumed.cursors))
            await trio.sleep(0.2)
            joined = doomed.cursors + resumed.cursors
            assert joined == sorted(joined) and len(joined) == len(set(joined))  # no duplicate
            assert set(everything) <= set(joined)  # no acknowledged event missed
            # every acknowledged event is stored, in cursor order
            r = await client(ports[1]).request(
                "GET", "/api/events/wait/tick?since=0&limit=1000&timeout=0", tok)
            stored = [e["cursor"] for e in r.json()["events"]]
            assert stored == sorted(stored) and set(everything) <= set(stored)
            assert other.cursors == stored  # the survivor's subscriber: everything stored, once

            # its agent: failed by the survivor once the lease expired, agent_failed published
            why = f"owner process {killed} lost its lease"
            record = await _record_until(ports[1], arch, agent["agent_id"], lambda r: r["state"] == "failed")
            assert record["reason"] == why and record["owner"] == killed, record
            await _until(lambda: len(watcher.events) >= 1)
            data = watcher.events[0]["data"]
            assert (data["agent_id"], data["reason"], data["state"]) == (agent["agent_id"], why, "failed")
            assert ident is not None and is_own_group(ident)  # its process runs on (own session)
            states = {p["process_id"]: p["state"] for p in (await _deployment(ports[1], admin))["processes"]}
            assert states[killed] == "lost"
            # the next start on its host proves the killed process gone and ends that agent
            procs.append(Proc(tmp_path / "a", "--store", url, *_agent_args(tmp_path)))
            await procs[-1].ready()
            await gone(agent["process_id"], timeout=15)
            await trio.sleep(0.5)
            assert len(watcher.events) == 1  # failed once, published once
            nursery.cancel_scope.cancel()
    finally:
        _stop(procs)
        _end_leftover(ident)


async def test_a_paused_process_loses_its_lease_its_agents_are_failed_and_it_ends_them_when_it_resumes(tmp_path, url):
    procs, ports, _ = await _two(tmp_path, url, *_agent_args(tmp_path))
    ident: ProcessIdentity | None = None
    try:
        arch = token(tmp_path / "a", "--project", "p1", "--agent-type", "chief-architect", "--sub", "arch")
        admin = token(tmp_path / "a", "--agent-type", "dashboard", "--admin")
        paused = (await _deployment(ports[0], admin))["process_id"]
        agent = await _spawn_sleeper(ports[0], arch)
        ident = identity_of(agent["process_id"])
        procs[0].p.send_signal(signal.SIGSTOP)
        try:
            record = await _record_until(ports[1], arch, agent["agent_id"], lambda r: r["state"] == "failed")
            assert record["reason"] == f"owner process {paused} lost its lease"
            assert alive(agent["process_id"])
        finally:
            procs[0].p.send_signal(signal.SIGCONT)
        # its next beat finds the lease taken: it ends its agent, whose record stays failed
        await gone(agent["process_id"], timeout=20)
        record = await _record_until(ports[0], arch, agent["agent_id"], lambda r: r["ended_at"] is not None)
        assert record["state"] == "failed" and "lost its lease" in record["reason"], record
        # and it holds a lease again: alive for the others, spawning as before
        with trio.fail_after(20):
            while True:
                states = {p["process_id"]: p["state"] for p in (await _deployment(ports[1], admin))["processes"]}
                if states[paused] == "alive":
                    break
                await trio.sleep(0.1)
        again = await _spawn_sleeper(ports[0], arch)
        assert (await _record_until(ports[1], arch, again["agent_id"], lambda r: True))["owner"] == paused
    finally:
        _stop(procs)
        _end_leftover(ident)


def _children(pid: int) -> set[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    return {int(p) for p in out.stdout.split()}


async def test_serve_workers_runs_processes_on_one_port_and_starts_a_lost_one_again(tmp_path, url):
    proc = Proc(tmp_path, "--store", url, "--workers", "2")
    try:
        port = await proc.ready()
        workers = _children(proc.p.pid)
        assert len(workers) == 2
        tok = token(tmp_path, "--project", "p1", "--agent-type", "python-specialist")
        acked: list[str] = []
        await _write(port, tok, "w", 20, acked)
        assert len(acked) == 20
        os.kill(min(workers), signal.SIGKILL)
        await _until(lambda: len(_children(proc.p.pid) - workers) == 1, 30)  # started again
        await _until(lambda: len(_children(proc.p.pid)) == 2)
        for _ in range(50):  # the new one listens too; every request answered meanwhile
            await _write(port, tok, "w", 1, acked)
            if len(acked) == 21:
                break
            await trio.sleep(0.1)
        await _write(port, tok, "w", 20, acked)
        assert len(acked) == 41 and acked == sorted(acked)
        proc.p.send_signal(signal.SIGTERM)
        assert await trio.to_thread.run_sync(proc.wait, 60) == 0
        assert not _children(proc.p.pid)
    finally:
        if proc.p.poll() is None:
            proc.p.kill()


async def test_a_worker_killed_with_an_agent_is_started_again_and_ends_what_it_left(tmp_path, url):
    proc = Proc(tmp_path, "--store", url, "--workers", "2", *_agent_args(tmp_path))
    ident: ProcessIdentity | None = None
    try:
        port = await proc.ready()
        arch = token(tmp_path, "--project", "p1", "--agent-type", "chief-architect", "--sub", "arch")
        agent = await _spawn_sleeper(port, arch)
        ident = identity_of(agent["process_id"])
        record = await _record_until(port, arch, agent["agent_id"], lambda r: True)
        owner_pid = int(record["owner"].split(":")[-2])  # host:pid:random
        assert owner_pid in _children(proc.p.pid)
        os.kill(owner_pid, signal.SIGKILL)
        # the worker started again in its place proves its predecessor gone and ends the agent
        await gone(agent["process_id"], timeout=30)
        record = await _record_until(port, arch, agent["agent_id"], lambda r: r["state"] == "failed")
        assert record["reason"].startswith(f"owner process {record['owner']} "), record
        proc.p.send_signal(signal.SIGTERM)
        assert await trio.to_thread.run_sync(proc.wait, 60) == 0
    finally:
        if proc.p.poll() is None:
            proc.p.kill()
        _end_leftover(ident)


def test_serve_workers_without_postgresql_is_refused_in_one_line(tmp_path):
    out = subprocess.run([*ORCHESTRA, "serve", "--port", "0", "--workers", "2"], capture_output=True,
                         text=True, env={**os.environ, "ORCHESTRA_DATA_DIR": str(tmp_path)}, timeout=60)
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "--workers" in out.stderr and "postgresql" in out.stderr
