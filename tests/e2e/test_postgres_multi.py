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
from typing import Any

import orjson
import pytest
import trio
import trio_websocket

from tests.e2e.test_process import ORCHESTRA, Proc, client, token
from tests.postgres import fresh_schema


@pytest.fixture
def url():
    with fresh_schema() as url:
        yield url


async def _two(tmp_path, url: str) -> tuple[list[Proc], list[int], str]:
    """Two processes on ``url`` sharing one signing key (any token works on either)."""
    a = Proc(tmp_path / "a", "--store", url)
    ports = [await a.ready()]
    (tmp_path / "b").mkdir()
    shutil.copy(tmp_path / "a" / "jwt.secret", tmp_path / "b" / "jwt.secret")
    b = Proc(tmp_path / "b", "--store", url)
    ports.append(await b.ready())
    tok = token(tmp_path / "a", "--project", "p1", "--agent-type", "python-specialist")
    return [a, b], ports, tok


class Subscriber:
    """A WebSocket subscription to ``tick`` events on one process; ``cursors``: what it got."""

    def __init__(self, port: int, tok: str, since: str | None = None) -> None:
        self.port, self.tok, self.since = port, tok, since
        self.cursors: list[str] = []
        self.ready = trio.Event()
        self.closed = False

    async def run(self) -> None:
        try:
            async with trio_websocket.open_websocket(
                    "127.0.0.1", self.port, "/ws", use_ssl=False,
                    extra_headers=[("authorization", f"Bearer {self.tok}")]) as ws:
                msg: dict[str, Any] = {"id": 1, "op": "event.subscribe", "event_types": ["tick"]}
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
    procs, ports, tok = await _two(tmp_path, url)
    try:
        acked: list[str] = []
        doomed, other = Subscriber(ports[0], tok), Subscriber(ports[1], tok)
        async with trio.open_nursery() as nursery:
            for s in (doomed, other):
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
            nursery.cancel_scope.cancel()
    finally:
        _stop(procs)


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


def test_serve_workers_without_postgresql_is_refused_in_one_line(tmp_path):
    out = subprocess.run([*ORCHESTRA, "serve", "--port", "0", "--workers", "2"], capture_output=True,
                         text=True, env={**os.environ, "ORCHESTRA_DATA_DIR": str(tmp_path)}, timeout=60)
    assert out.returncode == 2
    assert out.stderr.strip().count("\n") == 0 and "--workers" in out.stderr and "postgresql" in out.stderr
