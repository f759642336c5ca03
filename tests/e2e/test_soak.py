"""Opt-in soak (`pytest -m soak`): SIGKILL the server again and again under writes.

After every kill and restart, every acknowledged result is readable and intact, and a new
event's cursor is after every cursor handed out before. Not part of the default run.
"""

from __future__ import annotations

import h11
import pytest
import trio

from tests.conftest import Harness, result_body
from tests.e2e.test_process import Proc, client, token

pytestmark = pytest.mark.soak

KILLS = 20


async def test_sigkill_soak_loses_nothing_acknowledged(tmp_path):
    tok = token(tmp_path, "--project", "p1", "--agent-type", "python-specialist")
    acked: dict[str, dict] = {}
    high_cursor = ""
    for round_ in range(KILLS):
        proc = Proc(tmp_path)
        try:
            h = client(await proc.ready())
            r = await h.request("POST", "/api/events/after_restart", tok, {"data": {"round": round_}})
            assert r.status == 200 and r.json()["cursor"] > high_cursor  # never backwards
            high_cursor = r.json()["cursor"]
            for rid in list(acked)[-200:]:  # the newest acknowledged ones survive each kill
                got = await h.request("GET", f"/api/results/{rid}", tok)
                assert got.status == 200 and got.json()["result"] == acked[rid]["result"]

            async def writer(h: Harness, round_: int, w: int) -> None:
                nonlocal high_cursor
                i = 0
                while True:
                    body = result_body(agent_id=f"r{round_}w{w}", seq=i)
                    try:
                        r = await h.request("POST", "/api/results", tok, body)
                    except (OSError, trio.BrokenResourceError, trio.ClosedResourceError,
                            trio.TooSlowError, h11.RemoteProtocolError):
                        return  # the server was killed under this request: not acknowledged
                    if r.status != 200:
                        return
                    acked[r.json()["id"]] = body
                    high_cursor = max(high_cursor, r.json()["event_cursor"])
                    i += 1

            async with trio.open_nursery() as n:
                for w in range(4):
                    n.start_soon(writer, h, round_, w)
                await trio.sleep(0.3)
                proc.p.kill()
            await trio.to_thread.run_sync(proc.wait)
        finally:
            if proc.p.poll() is None:
                proc.p.kill()
    proc = Proc(tmp_path)
    try:
        h = client(await proc.ready())
        for rid, body in acked.items():
            got = await h.request("GET", f"/api/results/{rid}", tok)
            assert got.status == 200 and got.json()["result"] == body["result"], rid
    finally:
        proc.p.kill()
    assert len(acked) > KILLS * 10
