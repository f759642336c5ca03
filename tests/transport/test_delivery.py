"""Delivery promises over real sockets: an answer that was not delivered moves no cursor;
a subscriber that resumes always converges."""

from __future__ import annotations

import h11
import trio
from orchestra.actors.session import SessionLimits

from tests.conftest import Harness, result_body, start_server
from tests.waiting import until_waiters


async def _abandoned_http_wait(server: Harness, token: str, path: str) -> None:
    """Send a wait and close the connection, unanswered, once the wait is in progress."""
    stream = await trio.open_tcp_stream("127.0.0.1", server.port)
    conn = h11.Connection(h11.CLIENT)
    headers = [("host", "test"), ("authorization", f"Bearer {token}")]
    await stream.send_all(conn.send(h11.Request(method="GET", target=path, headers=headers))
                          + conn.send(h11.EndOfMessage()))
    await until_waiters(server, 1)
    await stream.aclose()


async def _no_waits(server: Harness, project: str = "p1") -> None:
    """Until the project holds no wait in progress (the departure was noticed)."""
    ref = await server.system.project(project)
    from orchestra.actors.project import ProjectStats

    for _ in range(500):
        if not (await ref.call(ProjectStats()))["waiters"]:
            return
        await trio.sleep(0.01)
    raise AssertionError("the wait of a client that left is still in progress")


async def test_an_http_wait_whose_client_left_does_not_take_the_next_event(server):
    tok = server.token(sub="waiter")
    await _abandoned_http_wait(server, tok, "/api/events/wait/build_done?timeout=10000")
    await _no_waits(server)
    publisher = server.token(sub="pub")
    r = await server.request("POST", "/api/events/build_done", publisher, {"data": {"n": 1}})
    assert r.status == 200
    got = (await server.request("GET", "/api/events/wait/build_done?timeout=2000", tok)).json()
    assert [e["data"]["n"] for e in got["events"]] == [1]


async def test_a_websocket_wait_whose_client_left_does_not_take_the_next_event(server):
    tok = server.token(sub="waiter")
    async with server.ws(tok) as ws:
        await ws.send("event.wait", event_type="build_done", timeout=10000)
        await until_waiters(server, 1)
    await _no_waits(server)
    publisher = server.token(sub="pub")
    assert (await server.request("POST", "/api/events/build_done", publisher, {"data": {"n": 1}})).status == 200
    async with server.ws(tok) as ws:
        got = await ws.call("event.wait", event_type="build_done", timeout=2000)
    assert [e["data"]["n"] for e in got["result"]["events"]] == [1]


async def test_a_pipelined_request_behind_a_wait_is_still_answered(server):
    """The departure watch keeps the bytes it reads: h11 gets them for the next request."""
    tok = server.token(sub="waiter")
    stream = await trio.open_tcp_stream("127.0.0.1", server.port)
    conn = h11.Connection(h11.CLIENT)
    headers = [("host", "test"), ("authorization", f"Bearer {tok}")]
    first = conn.send(h11.Request(method="GET", target="/api/events/wait/x?timeout=300", headers=headers))
    first += conn.send(h11.EndOfMessage())
    await stream.send_all(first)
    await until_waiters(server, 1)  # the wait is in progress, watched, when the next request arrives
    # a second request on the same connection, written before the first is answered
    second = h11.Connection(h11.CLIENT)
    raw = second.send(h11.Request(method="GET", target="/health", headers=[("host", "test")]))
    raw += second.send(h11.EndOfMessage())
    await stream.send_all(raw)
    statuses = []
    with trio.fail_after(10):
        while len(statuses) < 2:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                conn.receive_data(await stream.receive_some(65536))
            elif isinstance(event, h11.Response):
                statuses.append(event.status_code)
            elif isinstance(event, h11.EndOfMessage):
                conn.start_next_cycle()
    await stream.aclose()
    assert statuses == [200, 200]


async def test_a_resume_larger_than_the_outbound_bound_converges(nursery, tmp_path):
    """3,000 retained events, an outbox of 1,000 messages: a slow reader resuming from 0 gets
    every event, in order, and is never cut."""
    h = await start_server(nursery, tmp_path / "d", session=SessionLimits(max_messages=1000))
    tok = h.token()
    for batch in range(3):
        bodies = [result_body(issue=f"iss-{batch}-{i}") for i in range(1000)]
        assert (await h.request("POST", "/api/results/batch", tok, {"results": bodies})).status == 200
    async with h.ws(tok) as ws:
        reply = await ws.call("event.subscribe", event_types=["agent_completed"], since="0")
        assert reply["ok"] and reply["result"]["recovered"] is True
        cursors = []
        with trio.fail_after(60):
            while len(cursors) < 3000:
                cursors.append((await ws.next_event())["event"]["cursor"])
                if len(cursors) % 100 == 0:
                    await trio.sleep(0.005)  # a slow reader
        assert cursors == sorted(set(cursors)) and len(cursors) == 3000
        # live after the replay, on the same subscription
        await h.request("POST", "/api/results", tok, result_body(issue="live"))
        with trio.fail_after(10):
            assert (await ws.next_event())["event"]["data"]["issue_id"] == "live"


async def test_4008_names_a_cursor_even_before_anything_was_delivered(nursery, tmp_path):
    h = await start_server(nursery, tmp_path / "d", session=SessionLimits(max_bytes=4096))
    tok = h.token()
    await h.request("POST", "/api/events/flood", tok, {"data": {"n": 0}})
    async with h.ws(tok) as ws:
        reply = await ws.call("event.subscribe", event_types=["flood"])
        start = reply["result"]["cursor"]
        # one event over the outbound bound: cut before anything was delivered
        await h.request("POST", "/api/events/flood", tok, {"data": {"pad": "x" * 10_000}})
        with trio.fail_after(10):
            reason = await ws.closed()
    assert reason.code == 4008
    assert reason.reason.endswith(f"since={start}")


async def test_a_star_subscription_covers_projects_started_after_it(server):
    admin = server.token("*", agent_type="dashboard", admin=True, sub="dash")
    a, g = server.token("alpha", sub="a"), server.token("gamma", sub="g")
    await server.request("POST", "/api/events/warmup", a, {})  # alpha runs already
    async with server.ws(admin) as dash:
        star = await dash.call("event.subscribe", event_types=["job"], project_id="*")
        assert star["ok"], star
        gsid = star["result"]["global_subscription"]
        # gamma starts after the subscription: its first event reaches the dashboard
        await server.request("POST", "/api/events/job", g, {"data": {"n": "g1"}})
        await server.request("POST", "/api/events/job", a, {"data": {"n": "a1"}})
        with trio.fail_after(10):
            got = [(await dash.next_event())["event"] for _ in range(2)]
        assert {(e["project_id"], e["data"]["n"]) for e in got} == {("gamma", "g1"), ("alpha", "a1")}
        last = {e["project_id"]: e["cursor"] for e in got}
        assert (await dash.call("event.unsubscribe", subscription=gsid))["ok"]
        assert server.system.broker.alive
    # published while the dashboard was away, in an old project and in a new one
    await server.request("POST", "/api/events/job", a, {"data": {"n": "a2"}})
    await server.request("POST", "/api/events/job", g, {"data": {"n": "g2"}})
    await server.request("POST", "/api/events/job", server.token("delta", sub="d"), {"data": {"n": "d1"}})
    async with server.ws(admin) as dash:
        resumed = await dash.call("event.subscribe", event_types=["job"], project_id="*", since=last)
        assert resumed["ok"], resumed
        with trio.fail_after(10):
            got = {(e["project_id"], e["data"]["n"]) for e in [(await dash.next_event())["event"] for _ in range(3)]}
        assert got == {("alpha", "a2"), ("gamma", "g2"), ("delta", "d1")}  # nothing repeated or lost
        bad = await dash.call("event.subscribe", project_id="*", since={"alpha": "x"})
        assert bad["error"]["code"] == "REQ_001"
    await _no_globals(server)


async def _no_globals(server: Harness) -> None:
    """The broker forgets a closed session's global subscriptions."""
    from orchestra.actors.broker import BrokerStats

    for _ in range(200):
        if not (await server.system.broker.call(BrokerStats()))["global_subscriptions"]:
            return
        await trio.sleep(0.01)
    raise AssertionError("the closed session's global subscriptions were kept")


async def test_a_broker_restart_closes_star_subscribers_1012(server):
    admin = server.token("*", agent_type="dashboard", admin=True, sub="dash")
    async with server.ws(admin) as dash:
        assert (await dash.call("event.subscribe", project_id="*"))["ok"]
        assert server.system.broker.inject_fault("crash")
        with trio.fail_after(10):
            reason = await dash.closed()
    assert reason.code == 1012 and "'*'" in reason.reason
