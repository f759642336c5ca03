"""The SDK across a server SIGKILL and restart: a real `orchestra serve` process is killed
mid-stream and started again on the same data dir and port while a publisher writes and a
subscriber consumes. The subscriber sees every event exactly once, in order; every write
sent again across the kill is stored once."""

from __future__ import annotations

import signal

import trio

from orchestra import client as sdk
from tests.e2e.test_process import Proc, token

N = 240
CONFIG = sdk.ClientConfig(backoff_initial=0.05, backoff_max=0.5, reconnect_timeout=30)


async def test_subscriber_sees_every_event_once_in_order_across_a_server_sigkill(tmp_path):
    procs = [Proc(tmp_path)]
    try:
        port = await procs[0].ready()
        url = f"http://127.0.0.1:{port}"
        pub_token = token(tmp_path, "--project", "p1", "--agent-type", "python-specialist", "--sub", "pub")
        sub_token = token(tmp_path, "--project", "p1", "--agent-type", "code-reviewer", "--sub", "sub")
        seen: list[int] = []
        acked: list[int] = []
        with trio.fail_after(90):
            async with sdk.connect(url, pub_token, config=CONFIG) as pub, \
                    sdk.connect(url, sub_token, config=CONFIG) as c:
                sub = await c.subscribe(["tick"])

                async def publisher() -> None:
                    for i in range(N):  # each write with the key the SDK generates
                        await pub.store_result("ISS-R", {"status": "success", "i": i})
                        await pub.publish("tick", {"i": i})
                        acked.append(i)

                async def killer() -> None:
                    while len(acked) < N // 3:  # noqa: ASYNC110 (the publisher's progress)
                        await trio.sleep(0.01)
                    # frozen first, so that a write is surely sent and unanswered at the kill
                    procs[0].p.send_signal(signal.SIGSTOP)
                    await trio.sleep(0.2)  # the publisher's next write goes out, unanswered
                    procs[0].p.kill()  # SIGKILL, with writes in flight
                    await trio.to_thread.run_sync(procs[0].wait)
                    procs.append(Proc(tmp_path, "--port", str(port)))
                    assert await procs[1].ready() == port

                async with trio.open_nursery() as n:
                    n.start_soon(publisher)
                    n.start_soon(killer)
                    async for event in sub:
                        seen.append(event["data"]["i"])
                        if len(seen) == N:
                            break
                assert seen == list(range(N))
                assert c.connections >= 2 and pub.connections >= 2
                assert pub.resends >= 1  # the write in flight at the kill was sent again
                # stored once: every result and every event exactly once
                stored = await c.query_results(issue_id="ISS-R", limit=1000)
                assert sorted(r["result"]["i"] for r in stored["results"]) == list(range(N))
                ticks = await c.wait("tick", since="0", limit=1000, timeout=1)
                assert [e["data"]["i"] for e in ticks["events"]] == list(range(N))
    finally:
        for proc in procs:
            if proc.p.poll() is None:
                proc.p.kill()
                proc.p.wait()


async def test_a_subscriber_follows_a_graceful_restart(tmp_path):
    """SIGTERM closes the connection with 1001; the client reconnects once the server is
    back on its port and resumes from its cursor."""
    procs = [Proc(tmp_path)]
    try:
        port = await procs[0].ready()
        url = f"http://127.0.0.1:{port}"
        sub_token = token(tmp_path, "--project", "p1", "--agent-type", "code-reviewer", "--sub", "sub")
        pub_token = token(tmp_path, "--project", "p1", "--agent-type", "python-specialist", "--sub", "pub")
        with trio.fail_after(60):
            async with sdk.connect(url, sub_token, config=CONFIG) as c:
                sub = await c.subscribe(["tick"])
                async with sdk.connect(url, pub_token) as pub:
                    for i in range(5):
                        await pub.publish("tick", {"i": i})
                procs[0].p.send_signal(signal.SIGTERM)
                assert await trio.to_thread.run_sync(procs[0].wait) == 0
                procs.append(Proc(tmp_path, "--port", str(port)))
                assert await procs[1].ready() == port
                async with sdk.connect(url, pub_token) as pub:
                    for i in range(5, 10):
                        await pub.publish("tick", {"i": i})
                assert [(await sub.__anext__())["data"]["i"] for _ in range(10)] == list(range(10))
                assert c.connections >= 2
    finally:
        for proc in procs:
            if proc.p.poll() is None:
                proc.p.kill()
                proc.p.wait()
