"""`orchestra serve --store postgresql://...`: a real server process keeps results, events and
cursors in PostgreSQL. Killed mid-write and started again on a fresh data dir (the data dir holds
no store then), it reads back everything it acknowledged. Skipped in one line without a server."""

from __future__ import annotations

import os
import signal
import subprocess

import pytest
import trio

from tests.conftest import result_body
from tests.e2e.test_process import ORCHESTRA, Proc, client, token
from tests.postgres import fresh_schema


@pytest.fixture
def url():
    with fresh_schema() as url:
        yield url


async def test_a_server_on_postgresql_reads_back_every_acknowledged_write_after_sigkill(tmp_path, url):
    first, second = tmp_path / "first", tmp_path / "second"
    proc = Proc(first, "--store", url)
    port = await proc.ready()
    tok = token(first, "--project", "p1", "--agent-type", "python-specialist")
    h = client(port)
    acked: dict[str, dict] = {}
    events: list[tuple[str, int]] = []

    async def writer(w: int) -> None:
        i = 0
        while True:
            body = result_body(agent_id=f"w{w}", seq=i)
            try:
                r = await h.request("POST", "/api/results", tok, body)
                e = await h.request("POST", "/api/events/tick", tok, {"data": {"w": w, "i": i}})
            except Exception:  # the kill: the connection breaks
                return
            if r.status != 200:
                return
            acked[r.json()["id"]] = body
            if e.status == 200:
                events.append((e.json()["cursor"], i))
            i += 1

    try:
        async with trio.open_nursery() as n:
            for w in range(4):
                n.start_soon(writer, w)
            with trio.fail_after(30):
                while len(events) < 40:  # noqa: ASYNC110 (the writers' progress)
                    await trio.sleep(0.05)
            proc.p.kill()  # SIGKILL, mid-write
        await trio.to_thread.run_sync(proc.wait)
    finally:
        if proc.p.poll() is None:
            proc.p.kill()
    assert not (first / "orchestra.db").exists()  # the store is in PostgreSQL only

    # another data dir: another signing key, no local store; the same database
    proc2 = Proc(second, "--store", url)
    try:
        port = await proc2.ready()
        tok2 = token(second, "--project", "p1", "--agent-type", "python-specialist")
        h = client(port)
        for rid, body in acked.items():
            r = await h.request("GET", f"/api/results/{rid}", tok2)
            assert r.status == 200, rid
            assert r.json()["result"] == body["result"] and r.json()["agent_id"] == body["agent_id"]
            assert r.json()["storage_path"].startswith("postgresql://")
        r = await h.request("GET", "/api/events/wait/tick?since=0&limit=1000&timeout=0", tok2)
        assert r.status == 200
        stored = {e["cursor"] for e in r.json()["events"]}
        assert {cursor for cursor, _ in events} <= stored  # every acknowledged event
        cursors = [e["cursor"] for e in r.json()["events"]]
        assert cursors == sorted(cursors)
        fresh = await h.request("POST", "/api/events/after_restart", tok2, {})
        assert fresh.json()["cursor"] > max(cursors)  # never reused, strictly after
        proc2.p.send_signal(signal.SIGINT)
        assert await trio.to_thread.run_sync(proc2.wait) == 0
    finally:
        if proc2.p.poll() is None:
            proc2.p.kill()
    assert not (second / "orchestra.db").exists()


class CuttableLink:
    """A TCP relay to PostgreSQL that a test can cut (every connection through it is dropped
    and new ones are refused, as while the database restarts) and restore."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.open = True
        self.scopes: set[trio.CancelScope] = set()
        self.relayed = 0

    async def serve(self, *, task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED) -> None:
        listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
        task_status.started(listeners[0].socket.getsockname()[1])
        await trio.serve_listeners(self._relay, listeners)

    def cut(self) -> None:
        self.open = False
        for scope in self.scopes:
            scope.cancel()

    async def _relay(self, client: trio.SocketStream) -> None:
        async with client:
            if not self.open:
                return
            with trio.CancelScope() as scope:
                self.scopes.add(scope)
                try:
                    async with await trio.open_tcp_stream(self.host, self.port) as server, \
                            trio.open_nursery() as n:
                        self.relayed += 1
                        n.start_soon(_pump, client, server)
                        n.start_soon(_pump, server, client)
                finally:
                    self.scopes.discard(scope)


async def _pump(source: trio.SocketStream, sink: trio.SocketStream) -> None:
    try:
        while data := await source.receive_some(65536):
            await sink.send_all(data)
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    await sink.aclose()


async def test_while_postgresql_is_unreachable_writes_answer_503_and_the_server_recovers_by_itself(tmp_path, url):
    from urllib.parse import quote

    from psycopg.conninfo import conninfo_to_dict

    info = conninfo_to_dict(url)
    link = CuttableLink(info.get("host") or "127.0.0.1", int(info.get("port") or 5432))
    async with trio.open_nursery() as nursery:
        relay_port = await nursery.start(link.serve)
        user = f"{quote(info['user'])}@" if info.get("user") else ""
        relayed = (f"postgresql://{user}127.0.0.1:{relay_port}/{quote(info.get('dbname', ''))}"
                   f"?options={quote(info['options'])}")
        # (its stderr is read at the end only: few lines, or the pipe fills and the server blocks)
        proc = Proc(tmp_path, "--store", relayed, "--log-level", "ERROR")
        try:
            port = await proc.ready()
            tok = token(tmp_path, "--project", "p1", "--agent-type", "python-specialist")
            h = client(port)
            acked: list[str] = []
            statuses: list[int] = []

            async def write(i: int) -> int:
                r = await h.request("POST", "/api/results", tok, result_body(seq=i))
                if r.status == 200:
                    acked.append(r.json()["id"])
                else:
                    assert r.json()["code"] == "UNAVAILABLE", r.json()
                statuses.append(r.status)
                return r.status

            with trio.fail_after(60):
                for i in range(5):
                    assert await write(i) == 200
                link.cut()  # the database goes away, with the store's connection idle
                for i in range(5, 10):
                    assert await write(i) == 503
                link.open = True  # back: the next request reconnects, no restart of the server
                assert await write(10) == 200

                # again, with writes in flight: a commit whose answer is lost crashes the store
                # (outcome unknown to its writers), which comes back by itself
                async def writer(w: int) -> None:
                    ok = 0
                    for n in range(10_000):
                        ok += await write(1000 * (w + 1) + n) == 200
                        if ok >= 15 and link.open:
                            return
                        await trio.sleep(0.01)

                async with trio.open_nursery() as writers:
                    for w in range(4):
                        writers.start_soon(writer, w)
                    while len(acked) < 30:  # noqa: ASYNC110 (the writers' progress)
                        await trio.sleep(0.01)
                    link.cut()
                    await trio.sleep(1.0)
                    link.open = True
                for rid in acked:
                    assert (await h.request("GET", f"/api/results/{rid}", tok)).status == 200
            assert 500 not in statuses and statuses.count(503) > 5 and link.relayed >= 3
            proc.p.send_signal(signal.SIGINT)
            assert await trio.to_thread.run_sync(proc.wait) == 0
        finally:
            if proc.p.poll() is None:
                proc.p.kill()
            nursery.cancel_scope.cancel()


@pytest.mark.parametrize(("store", "says"), [
    ("/var/lib/orchestra.db", "is not a postgresql:// URL"),
    ("postgresql://127.0.0.1:1/test", "cannot use postgresql://127.0.0.1:1/test: connection failed"),
])
def test_serve_refuses_a_store_it_cannot_use_in_one_line(tmp_path, store, says):
    pytest.importorskip("psycopg", reason="PostgreSQL tests skipped: psycopg is not installed")
    env = {**os.environ, "ORCHESTRA_DATA_DIR": str(tmp_path), "ORCHESTRA_STORE": store}
    out = subprocess.run([*ORCHESTRA, "serve", "--port", "0"], env=env, capture_output=True,
                         text=True, timeout=60)
    assert out.returncode == 2 and out.stdout == ""
    # a value that is no such URL is refused where settings are read (naming its source); one
    # that is, but cannot be used, when the server starts
    assert out.stderr.startswith(("orchestra serve: --store: ", "orchestra serve: environment variable ORCHESTRA_STORE: "))
    assert says in out.stderr
    assert len(out.stderr.strip().splitlines()) == 1
