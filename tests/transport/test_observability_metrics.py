"""/metrics follows Prometheus conventions (issue 15, "Metrics"), parsed with prometheus_client's
own parser; /health answers 503 while the server is degraded."""

from __future__ import annotations

from typing import Any

import pytest
import trio
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families

from orchestra import __version__
from tests.conftest import result_body, start_server

COUNTERS = {
    "orchestra_requests", "orchestra_actor_restarts", "orchestra_actor_crashes",
    "orchestra_actor_child_restarts", "orchestra_context_cache_hits", "orchestra_context_cache_misses",
    "orchestra_results_stored", "orchestra_events_published", "orchestra_websocket_closes",
    "orchestra_rate_limited",
}
GAUGES = {
    "orchestra_build_info", "orchestra_connections", "orchestra_sessions", "orchestra_subscriptions",
    "orchestra_waiters", "orchestra_agents_running", "orchestra_projects",
}
HISTOGRAMS = {"orchestra_request_seconds", "orchestra_wait_seconds"}


async def scrape(server: Any) -> dict[str, Metric]:
    r = await server.request("GET", "/metrics")
    assert r.status == 200
    assert r.headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    text = r.body.decode()
    assert "_created" not in text
    return {family.name: family for family in text_string_to_metric_families(text)}


def value(families: dict[str, Metric], name: str, sample: str | None = None, **labels: str) -> float:
    family = families[name]
    found = [s.value for s in family.samples
             if s.name == (sample or (name + "_total" if family.type == "counter" else name))
             and all(s.labels.get(k) == v for k, v in labels.items())]
    assert found, (name, labels, family.samples)
    return sum(found)


async def test_names_types_and_the_standard_collectors(server):
    await server.request("POST", "/api/results", server.token(), result_body())
    families = await scrape(server)
    for name in COUNTERS:
        assert families[name].type == "counter", name
    for name in GAUGES:
        assert families[name].type == "gauge", name
    for name in HISTOGRAMS:
        assert families[name].type == "histogram", name
    # every counter's samples end in _total, and no gauge or other series does
    for family in families.values():
        for sample in family.samples:
            assert sample.name.endswith("_total") == (family.type == "counter"), sample.name
    assert any(n.startswith("process_") for n in families), sorted(families)
    assert any(n.startswith("python_") for n in families), sorted(families)
    assert value(families, "orchestra_build_info", version=__version__) == 1
    assert not [n for n in families if "rate" in n and n != "orchestra_rate_limited"]  # no ratios
    assert value(families, "orchestra_results_stored") == 1
    assert value(families, "orchestra_events_published") == 1  # agent_completed
    assert value(families, "orchestra_requests", op="result.store", status="200") == 1


async def test_waits_have_their_own_histogram(server):
    tok = server.token()
    assert (await server.request("GET", "/api/events/wait/x.y?timeout=0", tok)).status == 200
    await server.request("GET", "/api/results", tok)
    families = await scrape(server)
    assert value(families, "orchestra_wait_seconds", "orchestra_wait_seconds_count", op="event.wait") == 1
    assert not [s for s in families["orchestra_request_seconds"].samples if s.labels.get("op") == "event.wait"]
    assert value(families, "orchestra_request_seconds", "orchestra_request_seconds_count", op="result.query") == 1


async def test_gauges_follow_connections_subscriptions_and_waiters(server):
    tok = server.token()
    async with server.ws(tok) as ws, trio.open_nursery() as nursery:
        assert (await ws.call("event.subscribe", event_types=["a.b"]))["ok"]
        nursery.start_soon(server.request, "GET", "/api/events/wait/never.comes?timeout=20000", tok)
        with trio.fail_after(10):
            while True:
                families = await scrape(server)
                if value(families, "orchestra_waiters") == 1:
                    break
                await trio.sleep(0.01)
        assert value(families, "orchestra_sessions") == 1
        assert value(families, "orchestra_subscriptions") == 1
        assert value(families, "orchestra_connections") >= 3  # the WebSocket, the wait, this scrape
        nursery.cancel_scope.cancel()


async def test_websocket_closes_are_counted_by_code(server):
    async with server.ws(server.token()) as ws:
        await ws.call("ping")
    bad = await _unauthenticated_close(server)
    assert bad == 4001
    with trio.fail_after(10):
        while True:
            families = await scrape(server)
            codes = {s.labels["code"]: s.value for s in families["orchestra_websocket_closes"].samples}
            if codes.get("1000") == 1 and codes.get("4001") == 1:
                break
            await trio.sleep(0.01)


async def _unauthenticated_close(server: Any) -> int:
    import trio_websocket

    async with trio_websocket.open_websocket("127.0.0.1", server.port, "/ws", use_ssl=False) as ws:
        await ws.send_message('{"op":"auth","token":"nope"}')
        with pytest.raises(trio_websocket.ConnectionClosed) as closed:
            await ws.get_message()
    return closed.value.reason.code


async def test_two_servers_in_one_process_do_not_share_series(nursery, tmp_path):
    one = await start_server(nursery, tmp_path / "one")
    two = await start_server(nursery, tmp_path / "two")
    await one.request("POST", "/api/results", one.token(), result_body())
    assert value(await scrape(one), "orchestra_requests", op="result.store", status="200") == 1
    assert "orchestra_requests" not in await scrape(two) or not [
        s for s in (await scrape(two))["orchestra_requests"].samples if s.labels.get("op") == "result.store"
    ]


# -- /health --


async def _health_until(server: Any, status: int) -> dict[str, Any]:
    with trio.fail_after(10):
        while True:
            r = await server.request("GET", "/health")
            if r.status == status:
                return r.json()
            await trio.sleep(0.01)


async def test_health_is_503_while_the_store_restarts_and_200_after(server, monkeypatch):
    from orchestra.actors.store import StoreActor

    release = trio.Event()
    original = StoreActor.on_start

    async def held_start(self: StoreActor) -> None:
        await release.wait()  # the restarted store does not come up until released
        await original(self)

    assert (await server.request("GET", "/health")).json()["status"] == "healthy"
    monkeypatch.setattr(StoreActor, "on_start", held_start)
    admin = server.token("*", agent_type="ops", admin=True, sub="ops")
    r = await server.request("POST", "/api/admin/faults", admin, {"target": "store", "kind": "crash"})
    assert r.status == 200
    try:
        body = await _health_until(server, 503)
        assert body["status"] == "degraded" and body["checks"]["store"] == "restarting"
        assert "store is restarting" in body["reasons"]
    finally:
        release.set()
    body = await _health_until(server, 200)
    assert body["status"] == "healthy" and "reasons" not in body and body["checks"]["store"] == "ok"


async def test_health_is_degraded_while_draining(server):
    # (new connections are not read once draining has begun, so this asks the Api itself)
    server.api.shutting_down = True
    try:
        healthy, body = server.api.health()
        assert not healthy and body["status"] == "degraded"
        assert body["reasons"] == ["shutting down (draining)"] and body["checks"]["accepting"] is False
    finally:
        server.api.shutting_down = False
    assert server.api.health()[0]


async def test_health_is_503_while_a_project_restarts(server, monkeypatch):
    from orchestra.actors.project import ProjectActor

    tok = server.token()
    assert (await server.request("POST", "/api/results", tok, result_body())).status == 200
    release = trio.Event()
    original = ProjectActor.on_start

    async def held_start(self: ProjectActor) -> None:
        await release.wait()
        await original(self)

    monkeypatch.setattr(ProjectActor, "on_start", held_start)
    admin = server.token("*", agent_type="ops", admin=True, sub="ops")
    await server.request("POST", "/api/admin/faults", admin, {"target": "project:p1", "kind": "crash"})
    try:
        body = await _health_until(server, 503)
        assert body["reasons"] == ["project:p1 is restarting"] and body["checks"]["restarting"] == ["project:p1"]
    finally:
        release.set()
    await _health_until(server, 200)


async def test_a_first_start_is_not_degradation(server, monkeypatch):
    """A project starting for the first time (its state loading) is not restarting: 200."""
    from orchestra.actors.project import ProjectActor

    release = trio.Event()
    started = trio.Event()
    original = ProjectActor.on_start

    async def held_start(self: ProjectActor) -> None:
        started.set()
        await release.wait()
        await original(self)

    monkeypatch.setattr(ProjectActor, "on_start", held_start)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(server.request, "POST", "/api/results", server.token("p-new"), result_body())
        try:
            with trio.fail_after(10):
                await started.wait()
            r = await server.request("GET", "/health")
            assert r.status == 200 and r.json()["status"] == "healthy", r.json()
        finally:
            release.set()
