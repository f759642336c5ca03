"""Resource abuse not pinned elsewhere (docs/reliability.md lists every class with its test):
slowloris, thousands of idle connections, thousands of subscriptions on one connection, path
traversal and symlink escape through context requests, a spawned agent flooding its log."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import orjson
import trio
import trio_websocket
from orchestra.actors.session import SessionLimits
from orchestra.transport.server import ServerConfig

from orchestra.testing import InProcessServer
from tests.agents_harness import profiles, script
from tests.conftest import result_body
from tests.waiting import until


def _dir_bytes(folder: Path) -> int:
    return sum(f.stat().st_size for f in folder.iterdir())


ERROR_KEYS = {"error", "code", "message", "timestamp", "request_id"}


async def _closed_by_server(stream: trio.SocketStream, within: float) -> bytes:
    """What the server sent before closing ``stream`` (fails if it does not within ``within`` s)."""
    got = b""
    with trio.fail_after(within):
        while chunk := await stream.receive_some(65536):
            got += chunk
    return got


async def test_slowloris_is_cut_at_its_deadline_and_others_are_served(nursery, tmp_path):
    server = await InProcessServer(tmp_path / "d", root=tmp_path,
                                   server_config=ServerConfig(idle_timeout=1.0)).start(nursery)
    tok = server.token("p1")
    try:
        loris = await trio.open_tcp_stream(server.host, server.port)
        cut = trio.Event()

        async def drip() -> None:  # headers a byte at a time, forever
            try:
                for byte in b"GET /health HTTP/1.1\r\nHost: x\r\nX-Slow: " + b"a" * 10_000:
                    await loris.send_all(bytes([byte]))
                    await trio.sleep(0.05)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                cut.set()

        nursery.start_soon(drip)
        for _ in range(5):  # meanwhile, the others are served
            with trio.fail_after(5):
                assert (await server.request("POST", "/api/results", tok, result_body())).status == 200
        with trio.fail_after(10):  # the connection is closed at the deadline (1 s here), not fed forever
            await _closed_by_server(loris, 10)
        await loris.aclose()
        await trio.sleep(0.2)
        assert server.server.connections == 0
    finally:
        await server.stop()


async def test_thousands_of_idle_connections_are_held_then_closed(nursery, tmp_path):
    server = await InProcessServer(tmp_path / "d", root=tmp_path,
                                   server_config=ServerConfig(idle_timeout=5.0)).start(nursery)
    tok = server.token("p1")
    streams: list[trio.SocketStream] = []
    try:
        async def open_one() -> None:
            streams.append(await trio.open_tcp_stream(server.host, server.port))

        with trio.fail_after(20):
            async with trio.open_nursery() as opening:  # at once: all are open within the idle bound
                for _ in range(2000):
                    opening.start_soon(open_one)
        await until(lambda: server.server.connections >= 2000, "2000 connections held at once", timeout=4)
        r = await server.request("POST", "/api/results", tok, result_body())  # others are served
        assert r.status == 200
        assert (await server.request("GET", "/health")).json()["status"] == "healthy"
        await until(lambda: server.server.connections == 0, "the idle connections closed", timeout=30)
        for stream in streams[:50]:
            assert await _closed_by_server(stream, 5) == b""
    finally:
        for stream in streams:
            await stream.aclose()
        await server.stop()


async def test_thousands_of_subscriptions_on_one_connection_are_each_answered(orchestra_server):
    server = orchestra_server
    limit = server.system.config.project.max_subscriptions
    tok = server.token("p1")
    async with trio_websocket.open_websocket(server.host, server.port, "/ws", use_ssl=False,
                                             extra_headers=[("authorization", f"Bearer {tok}")]) as ws:
        refused = ok = 0
        total = min(limit, 3000) + 50
        with trio.fail_after(120):
            for i in range(total):
                await ws.send_message(orjson.dumps({"id": i, "op": "event.subscribe", "event_types": [f"t{i % 7}"]}).decode())
                reply = orjson.loads(await ws.get_message())
                if reply["ok"]:
                    ok += 1
                else:
                    assert ERROR_KEYS <= set(reply["error"]), reply
                    refused += 1
        await ws.send_message('{"id":"p","op":"ping"}')
        assert orjson.loads(await ws.get_message())["result"] == {"pong": True}
    assert ok + refused == total and ok >= min(limit, total)  # past the project's bound: refused alone
    assert (await server.request("GET", "/health")).json()["status"] == "healthy"


async def test_context_requests_never_reach_outside_the_root(nursery, tmp_path):
    root = tmp_path / "repo"
    (root / "src").mkdir(parents=True)
    (root / "src" / "app.py").write_text("def login():\n    return 'ok'\n")
    (tmp_path / "secret.txt").write_text("TOP-SECRET-OUTSIDE")
    os.symlink(tmp_path / "secret.txt", root / "link.txt")
    os.symlink(tmp_path, root / "up")
    server = await InProcessServer(tmp_path / "d", root=root).start(nursery)
    tok = server.token("p1")
    try:
        for task in ("../secret.txt", "/etc/passwd", "link.txt", "up/secret.txt", "../../../../etc/shadow"):
            for path in (f"/api/context/iss-1/python-specialist?task={task}",
                         "/api/context/..%2F..%2Fsecret/python-specialist", "/api/context/iss-1/..%2F..?task=x"):
                r = await server.request("GET", path, tok)
                assert r.status in (200, 400, 404), (path, r.status, r.body[:200])
                assert b"TOP-SECRET" not in r.body and b"root:" not in r.body
    finally:
        await server.stop()


async def test_an_agent_flooding_its_log_is_bounded_and_the_server_serves_on(nursery, tmp_path):
    flood = script("import sys\nline = 'x' * 1023 + '\\n'\nfor _ in range(8 * 1024): sys.stdout.write(line)\nsys.stdout.flush()",
                   agent_type="flooder")
    server = InProcessServer(tmp_path / "d", profiles=profiles(flood), root=tmp_path)
    agents = server.system.agents  # a small log bound, so that 8 MiB of output overflows it
    agents.config = dataclasses.replace(agents.config, log_max_bytes=256 * 1024, log_backups=1)
    await server.start(nursery)
    boss = server.token("p1", "chief-architect", sub="boss")
    try:
        spawned = (await server.request("POST", "/api/agents/spawn", boss, {"agent_type": "flooder", "issue_id": "i"})).json()

        async def ended() -> bool:
            r = await server.request("GET", f"/api/agents/{spawned['agent_id']}/status", boss)
            return r.json()["state"] in ("exited", "failed")

        await until(ended, "the flooder ended", timeout=60)
        logs = (await server.request("GET", f"/api/agents/{spawned['agent_id']}/logs?tail=10", boss)).json()
        total = _dir_bytes(Path(logs["log_path"]).parent)
        assert total <= 2 * 256 * 1024 + 4096, total  # the file and one backup
        assert logs["lines"] and set(logs["lines"][-1]) == {"x"}
        assert (await server.request("POST", "/api/results", boss, result_body())).status == 200
    finally:
        await server.stop()



async def test_a_reader_that_never_reads_is_closed_4008_with_its_backlog_bounded(nursery, tmp_path):
    """Flat memory: the never-reading connection's backlog never passes its bound while the
    flood goes on (what the kernel buffers is the kernel's bound); then 4008."""
    bound = 256 * 1024
    limits = SessionLimits(max_messages=10_000, max_bytes=bound)
    server = await InProcessServer(tmp_path / "d", root=tmp_path,
                                   server_config=ServerConfig(session=limits)).start(nursery)
    tok = server.token("p1")
    peak = 0
    try:
        async with trio_websocket.open_websocket(server.host, server.port, "/ws", use_ssl=False,
                                                 extra_headers=[("authorization", f"Bearer {tok}")]) as ws:
            await ws.send_message('{"id":1,"op":"event.subscribe","event_types":["flood"]}')
            await ws.get_message()
            pad = "x" * 16_000
            with trio.fail_after(60):
                for i in range(600):  # ~10 MB at a reader that never reads
                    r = await server.request("POST", "/api/events/flood", tok, {"data": {"n": i, "pad": pad}})
                    assert r.status == 200
                    for session in server.system.live_sessions:
                        peak = max(peak, session.outbox.queued_bytes)
                    if not len(server.system.live_sessions):
                        break
            assert bound // 2 < peak <= bound + 20_000, peak  # filled, and at most one frame over
            with trio.fail_after(10):
                while True:
                    try:
                        await ws.get_message()
                    except trio_websocket.ConnectionClosed as closed:
                        assert closed.reason.code == 4008, closed.reason
                        break
    finally:
        await server.stop()
