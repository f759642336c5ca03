"""The WebSocket protocol over a real socket."""

from __future__ import annotations

import orjson
import pytest
import trio
import trio_websocket
from orchestra.actors.session import SessionLimits

from tests.conftest import result_body, start_server


async def test_ping_and_request_ids(server):
    async with server.ws(server.token()) as ws:
        reply = await ws.call("ping")
        assert reply == {"id": 1, "ok": True, "result": {"pong": True}}
        rid = await ws.send("nope.op")
        err = await ws.recv()
        assert err["id"] == rid and err["ok"] is False and err["error"]["code"] == "NOT_FOUND"
        await ws.ws.send_message("{broken")
        err = await ws.recv()
        assert err["ok"] is False and err["error"]["code"] == "REQ_001"


async def test_auth_by_first_frame_and_refusals(server):
    async with server.ws() as ws:
        await ws.ws.send_message(orjson.dumps({"id": "a", "op": "auth", "token": server.token()}).decode())
        assert (await ws.recv())["result"]["authenticated"] is True
        assert (await ws.call("ping"))["ok"]
    async with server.ws() as ws:
        await ws.ws.send_message(orjson.dumps({"op": "auth", "token": "garbage"}).decode())
        with pytest.raises(trio_websocket.ConnectionClosed) as info:
            await ws.recv()
        assert info.value.reason.code == 4001
    async with server.ws("garbage") as ws:
        with pytest.raises(trio_websocket.ConnectionClosed) as info:
            await ws.recv()
        assert info.value.reason.code == 4001
    async with server.ws(server.token()) as ws:  # a request with an expired token mid-connection
        assert (await ws.call("ping"))["ok"]


async def test_auth_timeout_closes_4001(nursery, tmp_path):
    h = await start_server(nursery, tmp_path / "d")
    h.server.websockets.auth_timeout = 0.2
    async with h.ws() as ws:
        with trio.fail_after(5), pytest.raises(trio_websocket.ConnectionClosed) as info:
            await ws.recv()
        assert info.value.reason.code == 4001


async def test_same_operations_as_http(server):
    async with server.ws(server.token()) as ws:
        stored = await ws.call("result.store", **result_body())
        assert stored["ok"], stored
        rid = stored["result"]["id"]
        got = await ws.call("result.get", result_id=rid)
        assert got["result"]["id"] == rid
        q = await ws.call("result.query", issue_id="iss-1")
        assert [r["id"] for r in q["result"]["results"]] == [rid]
        bad = await ws.call("result.store", agent_id="x")
        assert bad["error"]["code"] == "REQ_001" and bad["error"]["field"] == "agent_type"
        pub = await ws.call("event.publish", event_type="hello", data={"a": 1})
        assert pub["result"]["published"] is True
        wait = await ws.call("event.wait", event_type="hello", timeout=0)
        assert [e["data"] for e in wait["result"]["events"]] == [{"a": 1}]
        st = await ws.call("status")
        assert st["result"]["agents"]["connected"] == 1
        spawn = await ws.call("agent.spawn", agent_type="python-specialist", issue_id="i")
        assert spawn["error"]["code"] == "AUTH_003"  # python-specialist may not spawn


async def test_subscribe_replay_then_live_without_gap_or_duplicate(server):
    tok = server.token()
    cursors = []
    for i in range(5):
        r = await server.request("POST", "/api/events/step", tok, {"data": {"n": i}})
        cursors.append(r.json()["cursor"])
    async with server.ws(tok) as ws:
        rid = await ws.send("event.subscribe", event_types=["step"], since=cursors[1])

        async def publish_more():
            for i in range(5, 10):
                await server.request("POST", "/api/events/step", tok, {"data": {"n": i}})

        async with trio.open_nursery() as n:
            n.start_soon(publish_more)
            first = await ws.recv()
            assert first["id"] == rid and first["ok"] and first["result"]["recovered"] is True
            seen = []
            with trio.fail_after(10):
                while len(seen) < 8:
                    msg = await ws.recv()
                    assert msg["op"] == "event"
                    seen.append(msg["event"]["data"]["n"])
        assert seen == list(range(2, 10))


async def test_filters_topics_and_unsubscribe(server):
    tok = server.token()
    async with server.ws(tok) as ws:
        sub = await ws.call("event.subscribe", event_types="*", topics=["ci"], filter="score:>=90|grade:A")
        sid = sub["result"]["subscription"]
        for body in [{"topic": "ci", "data": {"score": 80}}, {"topic": "other", "data": {"score": 99}},
                     {"topic": "ci", "data": {"grade": "A"}}, {"topic": "ci", "data": {"score": 91}}]:
            await server.request("POST", "/api/events/x", tok, body)
        got = [await ws.next_event(), await ws.next_event()]
        assert [e["event"]["data"] for e in got] == [{"grade": "A"}, {"score": 91}]
        assert all(e["subscription"] == sid for e in got)
        bad = await ws.call("event.subscribe", filter="score:>")
        assert bad["error"]["code"] == "EVT_003"
        assert (await ws.call("event.unsubscribe", subscription=sid))["ok"]
        assert (await ws.call("event.unsubscribe", subscription=sid))["error"]["code"] == "NOT_FOUND"


async def test_isolation_between_projects_and_star(server):
    a, b = server.token("alpha", sub="a"), server.token("beta", sub="b")
    admin = server.token("*", agent_type="dashboard", admin=True, sub="dash")
    await server.request("POST", "/api/events/warmup", b, {})  # beta's project actor exists
    async with server.ws(a) as wa, server.ws(admin) as wadmin:
        assert (await wa.call("event.subscribe", event_types="*"))["ok"]
        refused = await wa.call("event.subscribe", event_types="*", project_id="*")
        assert refused["error"]["code"] == "AUTH_003"
        refused = await wa.call("event.subscribe", project_id="beta")
        assert refused["error"]["code"] == "AUTH_003"
        star = await wadmin.call("event.subscribe", event_types=["secret"], project_id="*")
        assert star["ok"], star
        await server.request("POST", "/api/events/secret", b, {"data": {"k": "beta-only"}})
        await server.request("POST", "/api/events/secret", a, {"data": {"k": "alpha"}})
        got = await wa.next_event()
        assert got["event"]["data"] == {"k": "alpha"}  # never beta's
        seen = {(await wadmin.next_event())["event"]["project_id"] for _ in range(2)}
        assert seen == {"alpha", "beta"}


async def test_stalled_reader_is_closed_4008_and_others_continue(nursery, tmp_path):
    h = await start_server(nursery, tmp_path / "d", session=SessionLimits(max_messages=20))
    tok = h.token()
    published = 120
    async with h.ws(tok) as slow, h.ws(h.token(sub="fast")) as fast:
        await slow.call("event.subscribe", event_types=["flood"])
        await fast.call("event.subscribe", event_types=["flood"])
        fast_seen = []

        async def read_fast():
            while len(fast_seen) < published:
                fast_seen.append((await fast.next_event())["event"]["data"]["n"])

        # the slow client never reads: its socket buffers fill, then its outbox, then 4008
        with trio.fail_after(30):
            async with trio.open_nursery() as n:
                n.start_soon(read_fast)
                for i in range(published):
                    await h.request("POST", "/api/events/flood", tok, {"data": {"n": i, "pad": "x" * 20000}})
        assert fast_seen == list(range(published))  # the other client got everything, in order
        with trio.fail_after(10):
            reason = await slow.closed()
        assert reason.code == 4008
        assert "last cursor delivered" in reason.reason
        assert (await fast.call("ping"))["ok"]
        outboxes = [s.outbox.queued_bytes for s in h.system.live_sessions]
        assert all(b <= 8 * 1024 * 1024 for b in outboxes)


async def test_resume_after_reconnect_with_since(server):
    tok = server.token()
    async with server.ws(tok) as ws:
        await ws.call("event.subscribe", event_types=["job"])
        for i in range(3):
            await server.request("POST", "/api/events/job", tok, {"data": {"n": i}})
        last = None
        for _ in range(3):
            last = (await ws.next_event())["event"]["cursor"]
    for i in range(3, 6):  # published while disconnected
        await server.request("POST", "/api/events/job", tok, {"data": {"n": i}})
    async with server.ws(tok) as ws:
        await ws.call("event.subscribe", event_types=["job"], since=last)
        got = [(await ws.next_event())["event"]["data"]["n"] for _ in range(3)]
    assert got == [3, 4, 5]


async def test_auth_refresh(server):
    async with server.ws(server.token(ttl=120)) as ws:
        r = await ws.call("auth.refresh")
        assert r["ok"] and r["result"]["token"] and r["result"]["expires_at"] > 0
        other = server.token(sub="someone-else")
        r = await ws.call("auth.refresh", token=other)
        assert r["error"]["code"] == "AUTH_003"
        with trio.fail_after(5):
            assert (await ws.closed()).code == 4003


async def test_expiring_token_is_told_then_closed(server):
    async with server.ws(server.token(ttl=2)) as ws:
        notice = await ws.recv()
        assert notice["op"] == "auth.expiring" and 0 < notice["expires_in_seconds"] <= 2
        with trio.fail_after(10):
            assert (await ws.closed()).code == 4001


async def test_refresh_keeps_an_expiring_connection_open(server):
    async with server.ws(server.token(ttl=2)) as ws:
        assert (await ws.recv())["op"] == "auth.expiring"
        r = await ws.call("auth.refresh")
        assert r["ok"]
        await trio.sleep(2.5)  # past the first token's expiry
        assert (await ws.call("ping"))["ok"]


async def test_frame_over_limit_closes_1009(nursery, tmp_path):
    h = await start_server(nursery, tmp_path / "d", max_body_bytes=1000)
    async with h.ws(h.token()) as ws:
        await ws.ws.send_message("x" * 5000)
        with trio.fail_after(5), pytest.raises(trio_websocket.ConnectionClosed) as info:
            await ws.recv()
        assert info.value.reason.code == 1009


async def test_subscribe_defaults_to_the_profiles_event_subscriptions(server):
    tok = server.token(agent_type="code-reviewer", sub="rev")  # subscribes to agent_completed
    async with server.ws(tok) as ws:
        assert (await ws.call("event.subscribe"))["ok"]
        await server.request("POST", "/api/events/noise", tok, {})
        await server.request("POST", "/api/results", server.token(), result_body())
        assert (await ws.next_event())["event"]["event_type"] == "agent_completed"


async def test_expired_events_are_never_delivered_again(server):
    tok = server.token()
    await server.request("POST", "/api/events/short", tok, {"ttl_seconds": 0.2, "data": {"n": 1}})
    await server.request("POST", "/api/events/short", tok, {"data": {"n": 2}})
    await trio.sleep(0.4)
    r = (await server.request("GET", "/api/events/wait/short?timeout=0&since=0", tok)).json()
    assert [e["data"]["n"] for e in r["events"]] == [2]
    async with server.ws(tok) as ws:
        await ws.call("event.subscribe", event_types=["short"], since="0")
        assert (await ws.next_event())["event"]["data"]["n"] == 2


async def test_retention_cap_and_explicit_recovery_flag(nursery, tmp_path):
    h = await start_server(nursery, tmp_path / "d", max_events=5)
    tok = h.token()
    for i in range(8):
        await h.request("POST", "/api/events/capped", tok, {"data": {"n": i}})
    r = (await h.request("GET", "/api/events/wait/capped?timeout=0&since=0&limit=100", tok)).json()
    assert [e["data"]["n"] for e in r["events"]] == [3, 4, 5, 6, 7]
    async with h.ws(tok) as ws:
        old = await ws.call("event.subscribe", event_types=["capped"], since="0")
        assert old["result"]["recovered"] is False  # said, never a silent gap
        recent = await ws.call("event.subscribe", event_types=["capped"], since=r["events"][0]["cursor"])
        assert recent["result"]["recovered"] is True


async def test_many_subscriptions_on_one_connection(server):
    tok = server.token()
    first = (await server.request("POST", "/api/events/alpha", tok, {"data": {"n": 0}})).json()["cursor"]
    async with server.ws(tok) as ws:
        a = (await ws.call("event.subscribe", event_types=["alpha"], since="0"))["result"]["subscription"]
        b = (await ws.call("event.subscribe", event_types=["beta"]))["result"]["subscription"]
        both = (await ws.call("event.subscribe", event_types=["alpha", "beta"], filter="n:>0"))["result"]["subscription"]
        assert len({a, b, both}) == 3
        await server.request("POST", "/api/events/beta", tok, {"data": {"n": 1}})
        await server.request("POST", "/api/events/alpha", tok, {"data": {"n": 2}})
        got = [await ws.next_event() for _ in range(5)]
    by_sub: dict[str, list[int]] = {}
    for msg in got:
        by_sub.setdefault(msg["subscription"], []).append(msg["event"]["data"]["n"])
    assert by_sub == {a: [0, 2], b: [1], both: [1, 2]}
    assert got[0]["event"]["cursor"] == first  # the replayed one came first


async def test_an_upgrade_elsewhere_than_ws_is_refused_with_the_error_object(server):
    stream = await trio.open_tcp_stream("127.0.0.1", server.port)
    await stream.send_all(
        b"GET /elsewhere HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    data = b""
    with trio.fail_after(5):
        while chunk := await stream.receive_some(65536):
            data += chunk
    await stream.aclose()
    head, _, body = data.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 404") and orjson.loads(body)["code"] == "NOT_FOUND"
    assert (await server.request("GET", "/health")).status == 200
