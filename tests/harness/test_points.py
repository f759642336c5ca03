"""Crashes armed at chosen points of the code (``at``): the next write, mid fan-out, during a
wait. Each pins what a client sees when the crash falls exactly there."""

from __future__ import annotations

import orjson
import pytest
import trio
import trio_websocket
from orchestra.transport import http_client

from orchestra.testing import Invariants, Ledger
from tests.conftest import result_body

ERROR_KEYS = {"error", "code", "message", "timestamp", "request_id"}


def _error(r) -> dict:
    body = r.json()
    assert r.status in (500, 503) and ERROR_KEYS <= set(body), (r.status, r.body)
    return body


async def test_store_crash_after_commit_before_answer_is_settled_as_stored(orchestra_server):
    """The store commits, then crashes before answering: the project asks the restarted store
    whether the write committed, and acknowledges it."""
    server, ledger = orchestra_server, Ledger()
    tok = server.token("p1")
    await ledger.store_result(server, tok, "p1", result_body(n=0))  # the project runs
    await server.faults.crash("store", at="next_write")
    r = await ledger.store_result(server, tok, "p1", result_body(n=1))
    assert r is not None and r.status == 200, r.body
    await Invariants(server, ledger).check_all(restarts_at_least=1)
    assert len(ledger.acked) == 2


async def test_project_crash_before_its_write_reaches_the_store_answers_not_stored(orchestra_server):
    server, ledger = orchestra_server, Ledger()
    tok = server.token("p1")
    await ledger.store_result(server, tok, "p1", result_body(n=0))
    await server.faults.crash("project:p1", at="next_write")
    r = await server.request("POST", "/api/results", tok, result_body(n=1, marker="lost"))
    _error(r)
    found = (await server.request("GET", "/api/results?q=lost", tok)).json()
    assert found["results"] == []  # not acknowledged, and indeed not stored
    r = await ledger.store_result(server, tok, "p1", result_body(n=2))
    assert r.status == 200  # served again
    await Invariants(server, ledger).check_all(restarts_at_least=1)


async def test_project_crash_mid_fanout_resumed_subscribers_get_the_event_once(orchestra_server):
    """Stored, given to one subscriber, then the project crashes: the publisher gets an error
    object; its retry with the same idempotency key gets the original answer; both subscribers,
    resuming from their last cursor, end with the event exactly once."""
    server = orchestra_server
    tok = server.token("p1")
    ledger = Ledger()
    first = (await server.request("POST", "/api/events/e", tok, {"data": {"n": 0}})).json()
    logs = [ledger.subscriber(f"s{i}", "p1", ["e"]) for i in range(2)]
    for log in logs:
        log.start = first["cursor"]
    await server.faults.crash("project:p1", at="mid_fanout")
    key = [("idempotency-key", "k-mid-fanout")]
    with trio.fail_after(30):
        await _fan_out_and_resume(server, tok, key, logs, first["cursor"])
    await Invariants(server, ledger).check_all(restarts_at_least=1)


async def _fan_out_and_resume(server, tok, key, logs, since: str) -> None:
    async with server.client("p1", sub="s0") as c0, server.client("p1", sub="s1") as c1:
        subs = [await c.subscribe(["e"], since=since) for c in (c0, c1)]
        r = await http_client.request(server.host, server.port, "POST", "/api/events/e", token=tok,
                                      body=orjson.dumps({"data": {"n": 1}}), headers=key)
        _error(r)
        r = await http_client.request(server.host, server.port, "POST", "/api/events/e", token=tok,
                                      body=orjson.dumps({"data": {"n": 1}}), headers=key)
        assert r.status == 200, r.body  # the retry: the original answer, stored once
        again = r.json()
        with trio.fail_after(10):
            for log, sub in zip(logs, subs, strict=True):
                async for event in sub:
                    log.seen(event)
                    if event["cursor"] >= again["cursor"]:
                        break
    for log in logs:
        assert log.event_ids == [again["event_id"]]


async def test_project_crash_during_a_wait_answers_the_wait_with_an_error(orchestra_server):
    server = orchestra_server
    tok = server.token("p1")
    await server.request("POST", "/api/results", tok, result_body())
    await server.faults.crash("project:p1", at="during_wait")
    with trio.fail_after(10):  # never a hang: the parked wait is answered at the crash
        r = await server.request("GET", "/api/events/wait/never?timeout=60000", tok)
    assert _error(r)["code"] in ("INTERNAL", "UNAVAILABLE")
    r = await server.request("GET", "/api/events/wait/never?timeout=0", tok)
    assert r.status == 200 and r.json()["timeout"] is True


async def test_a_ws_wait_at_the_crash_is_answered_too(orchestra_server):
    server = orchestra_server
    tok = server.token("p1")
    await server.request("POST", "/api/results", tok, result_body())
    await server.faults.crash("project:p1", at="during_wait")
    with trio.fail_after(30):
        reply = await _ws_wait(server, tok)
    assert reply["id"] == 1 and reply["ok"] is False and ERROR_KEYS <= set(reply["error"])


async def _ws_wait(server, tok: str) -> dict:
    async with trio_websocket.open_websocket(server.host, server.port, "/ws", use_ssl=False,
                                             extra_headers=[("authorization", f"Bearer {tok}")]) as ws:
        await ws.send_message(orjson.dumps({"id": 1, "op": "event.wait", "event_type": "never",
                                            "timeout": 60000}).decode())
        return orjson.loads(await ws.get_message())


@pytest.mark.parametrize("body, field", [
    ({"target": "broker", "kind": "crash", "at": "next_write"}, "at"),
    ({"target": "project:p1", "kind": "delay", "at": "mid_fanout"}, "at"),
    ({"target": "store", "kind": "crash", "at": "somewhere"}, "at"),
    ({"target": "project:p1", "kind": "disk_full"}, "target"),
    ({"target": "store", "kind": "melt"}, "kind"),
    ({"target": "agent:nobody", "kind": "crash"}, "target"),
])
async def test_a_fault_that_cannot_be_armed_is_refused_400(orchestra_server, body, field):
    r = await orchestra_server.request("POST", "/api/admin/faults", orchestra_server.admin_token(), body)
    assert r.status == 400 and r.json()["code"] == "REQ_001" and field in r.json()["message"], r.body
