"""The real `orchestra serve` process: startup line, signals, SIGKILL durability, port in use."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import orjson
import pytest
import trio
import trio_websocket
from orchestra.transport.auth import load_secret

from tests.conftest import Harness, result_body

ORCHESTRA = [sys.executable, "-c", "import sys; from orchestra.transport.cli import main; sys.exit(main())"]


class Proc:
    def __init__(self, data_dir: Path, *extra: str) -> None:
        env = {**os.environ, "ORCHESTRA_DATA_DIR": str(data_dir), "ORCHESTRA_JWT_SECRET": ""}
        # stderr (a log line per request) into a file: a pipe nobody reads fills and blocks the server
        self.err = tempfile.TemporaryFile(mode="w+")
        self.p = subprocess.Popen(
            [*ORCHESTRA, "serve", "--port", "0", "--no-rate-limits", *extra],
            stdout=subprocess.PIPE, stderr=self.err, env=env, text=True,
        )
        self.data_dir = data_dir

    def stderr(self) -> str:
        self.err.seek(0)
        return self.err.read()

    async def ready(self) -> int:
        line = await trio.to_thread.run_sync(self.p.stdout.readline)
        assert line.startswith("listening on http://127.0.0.1:"), (line, self.stderr() if self.p.poll() is not None else "")
        return int(line.rsplit(":", 1)[1])

    def wait(self, timeout: float = 15) -> int:
        return self.p.wait(timeout)


def token(data_dir: Path, *args: str) -> str:
    env = {**os.environ, "ORCHESTRA_DATA_DIR": str(data_dir), "ORCHESTRA_JWT_SECRET": ""}
    out = subprocess.run([*ORCHESTRA, "token", *args], env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip()


def client(port: int) -> Harness:
    return Harness(port, None, None, None, Path())  # type: ignore[arg-type]


async def test_serve_prints_listening_line_and_sigterm_exits_cleanly(tmp_path):
    proc = Proc(tmp_path)
    try:
        port = await proc.ready()
        tok = token(tmp_path, "--project", "p1", "--agent-type", "python-specialist")
        assert (tmp_path / "jwt.secret").stat().st_mode & 0o777 == 0o600
        h = client(port)
        assert (await h.request("GET", "/health")).json()["status"] == "healthy"
        r = await h.request("POST", "/api/results", tok, result_body())
        assert r.status == 200
        async with trio_websocket.open_websocket("127.0.0.1", port, "/ws", use_ssl=False,
                                                 extra_headers=[("authorization", f"Bearer {tok}")]) as ws:
            await ws.send_message('{"id":1,"op":"ping"}')
            assert orjson.loads(await ws.get_message())["result"] == {"pong": True}
            proc.p.send_signal(signal.SIGTERM)
            with trio.fail_after(10), pytest.raises(trio_websocket.ConnectionClosed) as info:
                await ws.get_message()
            assert info.value.reason.code == 1001
        assert await trio.to_thread.run_sync(proc.wait) == 0
    finally:
        if proc.p.poll() is None:
            proc.p.kill()


async def test_sigkill_while_writing_loses_nothing_acknowledged(tmp_path):
    proc = Proc(tmp_path)
    port = await proc.ready()
    tok = token(tmp_path, "--project", "p1", "--agent-type", "python-specialist")
    h = client(port)
    acked: dict[str, dict] = {}
    cursors: list[str] = []

    async def writer(w):
        i = 0
        while True:
            body = result_body(agent_id=f"w{w}", seq=i)
            try:
                r = await h.request("POST", "/api/results", tok, body)
            except (OSError, trio.BrokenResourceError, trio.ClosedResourceError, Exception):
                return
            if r.status != 200:
                return
            acked[r.json()["id"]] = body
            cursors.append(r.json()["event_cursor"])
            i += 1

    async with trio.open_nursery() as n:
        for w in range(6):
            n.start_soon(writer, w)
        await trio.sleep(1.0)
        proc.p.kill()  # SIGKILL, mid-write
    await trio.to_thread.run_sync(proc.wait)
    assert len(acked) > 20

    proc2 = Proc(tmp_path)
    try:
        port = await proc2.ready()
        h = client(port)
        for rid, body in acked.items():
            r = await h.request("GET", f"/api/results/{rid}", tok)
            assert r.status == 200, rid
            record = r.json()
            assert record["result"] == body["result"] and record["agent_id"] == body["agent_id"]
        r = await h.request("POST", "/api/events/after_restart", tok, {})
        assert r.json()["cursor"] > max(cursors)  # never reused, strictly after
        proc2.p.send_signal(signal.SIGINT)
        assert await trio.to_thread.run_sync(proc2.wait) == 0
    finally:
        if proc2.p.poll() is None:
            proc2.p.kill()


async def test_port_in_use_is_a_clear_error(tmp_path):
    sock = trio.socket.socket()
    await sock.bind(("127.0.0.1", 0))
    sock.listen()
    port = sock.getsockname()[1]
    env = {**os.environ, "ORCHESTRA_DATA_DIR": str(tmp_path)}
    out = await trio.run_process([*ORCHESTRA, "serve", "--port", str(port)], env=env,
                                 capture_stdout=True, capture_stderr=True, check=False)
    sock.close()
    assert out.returncode != 0
    assert b"listening" not in out.stdout
    assert b"cannot listen" in out.stderr


def test_token_requires_project_unless_admin(tmp_path):
    env = {**os.environ, "ORCHESTRA_DATA_DIR": str(tmp_path)}
    out = subprocess.run([*ORCHESTRA, "token", "--agent-type", "x"], env=env, capture_output=True, text=True)
    assert out.returncode == 2 and "--project is required" in out.stderr
    load_secret(tmp_path, create=True)  # as `orchestra serve` makes it
    admin = token(tmp_path, "--agent-type", "dashboard", "--admin")
    import jwt
    claims = jwt.decode(admin, options={"verify_signature": False})
    assert claims["project_id"] == "*" and "admin" in claims["permissions"]
    assert claims["exp"] > time.time()


async def test_shutdown_is_prompt_with_a_watched_project(tmp_path):
    repo = tmp_path / "repo"
    (repo / "pkg").mkdir(parents=True)
    (repo / "pkg" / "mod.py").write_text("def handler():\n    pass\n")
    proc = Proc(tmp_path / "data", "--project", f"p1={repo}")
    try:
        port = await proc.ready()
        tok = token(tmp_path / "data", "--project", "p1", "--agent-type", "python-specialist")
        r = await client(port).request("GET", "/api/context/ISS-1/python-specialist?task=handler", tok)
        assert r.status == 200  # the project's code base is now indexed and watched
        t0 = trio.current_time()
        proc.p.send_signal(signal.SIGTERM)
        assert await trio.to_thread.run_sync(proc.wait) == 0
        assert trio.current_time() - t0 < 3
    finally:
        if proc.p.poll() is None:
            proc.p.kill()


async def test_shutdown_is_prompt_during_a_cold_index(tmp_path):
    repo = tmp_path / "repo"
    for d in range(40):
        (repo / f"pkg{d}").mkdir(parents=True)
        for i in range(100):  # 4,000 files: their cold index takes seconds
            (repo / f"pkg{d}" / f"mod{i}.py").write_text(f"def handler_{i}(x):\n    return x  # words {d} {i}\n" * 150)
    # the request in flight may take 0.2 s to finish; then the cold index is cut short
    proc = Proc(tmp_path / "data", "--project", f"p1={repo}", "--shutdown-grace", "0.2")
    try:
        port = await proc.ready()
        tok = token(tmp_path / "data", "--project", "p1", "--agent-type", "python-specialist")
        statuses = []

        async def ask():
            r = await client(port).request("GET", "/api/context/ISS-1/python-specialist?task=handler", tok)
            statuses.append(r.status)

        async with trio.open_nursery() as n:
            n.start_soon(ask)
            await trio.sleep(0.4)  # the cold index is under way
            t0 = trio.current_time()
            proc.p.send_signal(signal.SIGTERM)
            assert await trio.to_thread.run_sync(proc.wait) == 0
            assert trio.current_time() - t0 < 1.2
        assert statuses == [503]  # the request in flight is told, not just disconnected
    finally:
        if proc.p.poll() is None:
            proc.p.kill()
