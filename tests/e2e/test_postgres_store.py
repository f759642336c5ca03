"""`orchestra serve --store postgresql://...`: a real server process keeps results, events and
cursors in PostgreSQL. Killed mid-write and started again on a fresh data dir (the data dir holds
no store then), it reads back everything it acknowledged. Skipped in one line without a server."""

from __future__ import annotations

import signal

import pytest
import trio

from tests.conftest import result_body
from tests.e2e.test_process import Proc, client, token
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
