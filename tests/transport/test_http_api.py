"""The HTTP API over a real socket: results, events, auth, errors, limits."""

from __future__ import annotations

import time

import jwt
import orjson
import trio
from orchestra.actors.events import decode_cursor

from tests.conftest import SECRET, HeldBuilds, result_body, start_context_server, start_server
from tests.waiting import until, until_waiters


async def test_health_and_status_without_token(server):
    r = await server.request("GET", "/health")
    assert r.status == 200 and r.json()["status"] == "healthy"
    assert r.json()["checks"]["store"] == "ok"
    r = await server.request("GET", "/status")
    assert r.status == 200
    assert set(r.json()) >= {"agents", "storage", "events", "performance", "actors"}
    assert "tree" not in r.json()["actors"]  # detail only for admin tokens


async def test_store_get_and_the_agent_completed_event(server):
    tok = server.token()
    r = await server.request("POST", "/api/results", tok, result_body(notes="hello"))
    assert r.status == 200, r.body
    stored = r.json()
    assert stored["stored"] is True and stored["event_published"] is True
    assert stored["next_agents"] == ["test-engineer", "code-reviewer"]
    assert stored["storage_path"].startswith(str(server.data_dir / "orchestra.db"))
    r = await server.request("GET", f"/api/results/{stored['id']}", tok)
    assert r.status == 200
    record = r.json()
    assert record["id"] == stored["id"] and record["project_id"] == "p1"
    assert record["result"] == {"status": "success", "notes": "hello"}
    assert record["stored_at"].endswith("Z")
    # the agent_completed event was committed with it
    r = await server.request("GET", "/api/events/wait/agent_completed?timeout=0&since=0", tok)
    events = r.json()["events"]
    assert [e["data"]["result_id"] for e in events] == [stored["id"]]
    assert events[0]["publisher"] == "orchestra" and events[0]["topic"] == "coordination"


async def test_validation_names_the_field(server):
    tok = server.token()
    for body, field in [
        ({"agent_type": "x", "issue_id": "i", "result": {"status": "s"}}, "agent_id"),
        ({**result_body(), "result": {"no": "status"}}, "result.status"),
        ({**result_body(), "result": "text"}, "result"),
        ({**result_body(), "issue_id": 5}, "issue_id"),
    ]:
        r = await server.request("POST", "/api/results", tok, body)
        assert r.status == 400, body
        err = r.json()
        assert err["code"] == "REQ_001" and err["field"] == field
        assert field in err["message"]
        assert err["request_id"] and err["timestamp"] and err["error"] == "invalid_request"
    r = await server.request("POST", "/api/results", tok, raw=b"{not json")
    assert r.status == 400 and r.json()["code"] == "REQ_001"


async def test_project_isolation_and_scoping(server):
    a, b = server.token("alpha"), server.token("beta")
    stored = (await server.request("POST", "/api/results", a, result_body())).json()
    missing = await server.request("GET", "/api/results/does-not-exist", b)
    other = await server.request("GET", f"/api/results/{stored['id']}", b)
    assert other.status == missing.status == 404
    assert other.json()["code"] == missing.json()["code"] == "NOT_FOUND"
    r = await server.request("POST", "/api/results", a, {**result_body(), "project_id": "beta"})
    assert r.status == 403 and r.json()["code"] == "AUTH_003"
    r = await server.request("GET", "/api/results", b)
    assert r.json()["results"] == []


async def test_auth_errors(server):
    r = await server.request("GET", "/api/results")
    assert r.status == 401 and r.json()["code"] == "AUTH_001"
    r = await server.request("GET", "/api/results", "not-a-jwt")
    assert r.status == 401 and r.json()["code"] == "AUTH_001"
    expired = jwt.encode({"sub": "a", "agent_type": "t", "project_id": "p1", "exp": int(time.time()) - 10},
                         SECRET, algorithm="HS256")
    r = await server.request("GET", "/api/results", expired)
    assert r.status == 401 and r.json()["code"] == "AUTH_002"
    none_alg = jwt.encode({"sub": "a", "agent_type": "t", "project_id": "p1", "exp": int(time.time()) + 60},
                          None, algorithm="none")
    r = await server.request("GET", "/api/results", none_alg)
    assert r.status == 401 and r.json()["code"] == "AUTH_001"
    no_exp = jwt.encode({"sub": "a", "agent_type": "t", "project_id": "p1"}, SECRET, algorithm="HS256")
    assert (await server.request("GET", "/api/results", no_exp)).status == 401
    wrong_key = jwt.encode({"sub": "a", "agent_type": "t", "project_id": "p1", "exp": int(time.time()) + 60},
                           b"another-secret-of-enough-length-000", algorithm="HS256")
    assert (await server.request("GET", "/api/results", wrong_key)).status == 401
    reader = server.token(permissions=["read_context"])
    r = await server.request("POST", "/api/results", reader, result_body())
    assert r.status == 403 and r.json()["code"] == "AUTH_003"


async def test_query_filters_and_paging(server):
    tok = server.token()
    ids = []
    for i in range(7):
        body = result_body(agent_id=f"a{i % 2}", issue="iss-A" if i < 5 else "iss-B",
                           status="success" if i % 3 else "failed", marker=f"needle-{i}")
        ids.append((await server.request("POST", "/api/results", tok, body)).json()["id"])
    r = (await server.request("GET", "/api/results?issue_id=iss-A&limit=2", tok)).json()
    assert [x["id"] for x in r["results"]] == [ids[4], ids[3]]  # newest first
    page2 = (await server.request("GET", f"/api/results?issue_id=iss-A&limit=2&cursor={r['next_cursor']}", tok)).json()
    assert [x["id"] for x in page2["results"]] == [ids[2], ids[1]]
    page3 = (await server.request("GET", f"/api/results?issue_id=iss-A&limit=2&cursor={page2['next_cursor']}", tok)).json()
    assert [x["id"] for x in page3["results"]] == [ids[0]] and page3["next_cursor"] is None
    r = (await server.request("GET", "/api/results?status=failed", tok)).json()
    assert {x["id"] for x in r["results"]} == {ids[0], ids[3], ids[6]}
    r = (await server.request("GET", "/api/results?agent_id=a1", tok)).json()
    assert {x["id"] for x in r["results"]} == {ids[1], ids[3], ids[5]}
    r = (await server.request("GET", "/api/results?q=NEEDLE-5", tok)).json()
    assert [x["id"] for x in r["results"]] == [ids[5]]
    r = (await server.request("GET", "/api/results?since=2000-01-01T00:00:00Z&until=2000-01-02T00:00:00Z", tok)).json()
    assert r["results"] == []
    for bad in ["limit=0", "limit=1001", "limit=x", "since=yesterday", "cursor=zzz"]:
        r = await server.request("GET", f"/api/results?{bad}", tok)
        assert r.status == 400 and r.json()["code"] == "REQ_001", bad


async def test_publish_and_wait(server):
    tok = server.token(sub="pub")
    r = await server.request("POST", "/api/events/build_done", tok,
                             {"data": {"score": 95}, "topic": "ci", "publisher": "spoofed", "event_type": "x"})
    assert r.status == 200, r.body
    pub = r.json()
    assert pub["published"] is True and decode_cursor(pub["cursor"]) == 1
    waiter = server.token(sub="waiter")
    r = (await server.request("GET", "/api/events/wait/build_done?timeout=0", waiter)).json()
    [event] = r["events"]
    assert event["publisher"] == "pub" and event["event_type"] == "build_done"  # path and token decide
    assert event["data"] == {"score": 95}
    # the server-side cursor: the next wait does not repeat it, and times out
    r = (await server.request("GET", "/api/events/wait/build_done?timeout=50", waiter)).json()
    assert r["events"] == [] and r["timeout"] is True
    # a new filter is a new server-side cursor: it starts with the retained matching events
    r = (await server.request("GET", "/api/events/wait/build_done?timeout=0&filter=score:>90", waiter)).json()
    assert [e["data"]["score"] for e in r["events"]] == [95]
    # a wait in progress returns as soon as a matching event is published
    got = []

    async def wait():
        got.append((await server.request("GET", "/api/events/wait/build_done?timeout=10000&filter=score:>90", waiter)).json())

    async with trio.open_nursery() as n:
        n.start_soon(wait)
        await until_waiters(server, 1)
        await server.request("POST", "/api/events/build_done", tok, {"data": {"score": 10}})
        await server.request("POST", "/api/events/build_done", tok, {"data": {"score": 99}})
    assert [e["data"]["score"] for e in got[0]["events"]] == [99]
    for bad in ["timeout=-1", "timeout=300001", "timeout=abc", "since=abc"]:
        r = await server.request("GET", f"/api/events/wait/build_done?{bad}", waiter)
        assert r.status == 400 and r.json()["code"] == "REQ_001", bad
    r = await server.request("GET", "/api/events/wait/build_done?filter=score:>abc", waiter)
    assert r.status == 400 and r.json()["code"] == "EVT_003" and r.json()["position"] == 7
    r = await server.request("POST", "/api/events/bad%20type", tok, {})
    assert r.status == 400 and r.json()["code"] == "EVT_002"
    r = await server.request("POST", "/api/events/x", tok, {"ttl_seconds": -1})
    assert r.status == 400 and r.json()["code"] == "EVT_002" and r.json()["field"] == "ttl_seconds"


async def test_no_event_lost_or_repeated_between_waits(server):
    tok, waiter = server.token(sub="pub"), server.token(sub="w")
    seen = []
    for batch in range(5):
        for i in range(3):
            await server.request("POST", "/api/events/tick", tok, {"data": {"n": batch * 3 + i}})
        while True:
            r = (await server.request("GET", "/api/events/wait/tick?timeout=0&limit=2", waiter)).json()
            seen.extend(e["data"]["n"] for e in r["events"])
            if not r["more_available"]:
                break
    assert seen == list(range(15))


async def test_rate_limits(nursery, tmp_path, monkeypatch):
    h = await start_server(nursery, tmp_path / "d", rate_limits=True)
    # the limiter's clock stands still unless the test moves it: how many of 45 requests pass
    # must not depend on how fast a loaded machine sends them (at 20/s, 0.25 s refills 5)
    clock = [1000.0]
    take = h.api.limiter.take
    monkeypatch.setattr(h.api.limiter, "take", lambda key, rate, burst, now: take(key, rate, burst, clock[0]))
    tok = h.token(agent_type="some-new-type")  # default profile: 20/s, burst 40
    statuses = [(await h.request("GET", "/api/results", tok)) for _ in range(45)]
    ok = [r for r in statuses if r.status == 200]
    limited = [r for r in statuses if r.status == 429]
    assert (len(ok), len(limited)) == (40, 5) and statuses[:40] == ok
    r = limited[0]
    err = r.json()
    assert err["code"] == "RATE_001" and err["limit"] == 40 and err["retry_after_seconds"] == 0.05
    assert int(r.headers["retry-after"]) == 1
    assert r.headers["x-ratelimit-limit"] == "40" and r.headers["x-ratelimit-remaining"] == "0"
    assert r.headers["x-ratelimit-reset"] == "2"  # 40 tokens at 20/s
    assert ok[0].headers["x-ratelimit-remaining"] == "39" and ok[-1].headers["x-ratelimit-remaining"] == "0"
    # another agent has its own bucket
    assert (await h.request("GET", "/api/results", h.token(sub="other"))).status == 200
    # the bucket refills at the profile's rate: 0.1 s later, two more
    clock[0] += 0.1
    again = [(await h.request("GET", "/api/results", tok)).status for _ in range(3)]
    assert again == [200, 200, 429]


async def test_body_limit_and_http_errors(nursery, tmp_path):
    h = await start_server(nursery, tmp_path / "d", max_body_bytes=1000)
    tok = h.token()
    r = await h.request("POST", "/api/results", tok, {**result_body(), "pad": "x" * 2000})
    assert r.status == 413 and r.json()["code"] == "REQ_002"
    r = await h.request("GET", "/nope", tok)
    assert r.status == 404 and r.json()["code"] == "NOT_FOUND"
    r = await h.request("PUT", "/api/results", tok, {})
    assert r.status == 405 and "allow" in r.headers and r.json()["request_id"]


async def test_metrics_exposition(server):
    await server.request("POST", "/api/results", server.token(), result_body())
    r = await server.request("GET", "/metrics")
    assert r.status == 200
    text = r.body.decode()
    assert 'orchestra_requests_total{op="result.store",status="200"} 1.0' in text
    assert "orchestra_request_seconds_bucket" in text


async def test_admin_status_detail_and_faults(server):
    admin = server.token("*", agent_type="dashboard", admin=True, sub="dash")
    await server.request("POST", "/api/results", server.token(), result_body())
    r = (await server.request("GET", "/status", admin)).json()
    assert "p1" in r["projects"]["detail"] and r["actors"]["tree"]["name"] == "root"
    r = await server.request("POST", "/api/admin/faults", server.token(), {"target": "store", "kind": "crash"})
    assert r.status == 403 and r.json()["code"] == "AUTH_003"  # not admin (PROTOCOL.md)
    r = await server.request("POST", "/api/admin/faults", admin, {"target": "nothing", "kind": "crash"})
    assert r.status == 400
    r = await server.request("POST", "/api/admin/faults", admin, {"target": "store", "kind": "melt"})
    assert r.status == 400


async def test_profiles_drive_chaining_and_rate_limits(nursery, tmp_path):
    from orchestra.actors.profiles import Profiles

    path = tmp_path / "profiles.toml"
    path.write_text('[profiles.planner]\nnext_agents = ["builder", "checker"]\nrate_per_second = 1\nburst = 2\n')
    h = await start_server(nursery, tmp_path / "d", rate_limits=True, profiles=Profiles.load(path))
    tok = h.token(agent_type="planner", sub="planner-1")
    body = {**result_body(), "agent_type": "planner"}
    r = await h.request("POST", "/api/results", tok, body)
    assert r.json()["next_agents"] == ["builder", "checker"]
    r = await h.request("GET", "/api/events/wait/agent_completed?timeout=0", tok)
    assert r.json()["events"][0]["data"]["next_agents"] == ["builder", "checker"]
    r = await h.request("GET", "/api/results", tok)
    assert r.status == 429 and r.json()["limit"] == 2


async def test_spawn_and_agent_status(server):
    arch = server.token(agent_type="chief-architect", sub="arch")
    r = await server.request("POST", "/api/agents/spawn", arch, {"agent_type": "python-specialist", "issue_id": "i"})
    assert r.status == 409 and r.json()["code"] == "AGENT_001"
    r = await server.request("POST", "/api/agents/spawn", server.token(), {"agent_type": "x", "issue_id": "i"})
    assert r.status == 403 and r.json()["code"] == "AUTH_003"
    r = await server.request("GET", "/api/agents/nobody/status", arch)
    assert r.status == 404 and r.json()["code"] == "NOT_FOUND"


async def test_full_bounds_answer_503_not_a_hang(nursery, tmp_path):
    h = await start_server(nursery, tmp_path / "d", max_waiters=1)
    results = []

    async def wait(sub):
        results.append(await h.request("GET", "/api/events/wait/never?timeout=1000", h.token(sub=sub)))

    async with trio.open_nursery() as n:
        n.start_soon(wait, "first")
        await until_waiters(h, 1)  # the first wait holds the only place
        for i in range(2):
            n.start_soon(wait, f"more{i}")
    refused = [r for r in results if r.status == 503]
    assert len(refused) == 2
    assert all(r.json()["code"] == "UNAVAILABLE" and r.json()["retry_after_seconds"] > 0 for r in refused)
    assert all(r.headers["retry-after"] == "1" for r in refused)
    [served] = [r for r in results if r.status == 200]
    assert served.json()["timeout"] is True


async def test_admin_queries_every_project(server):
    await server.request("POST", "/api/results", server.token("alpha"), result_body())
    await server.request("POST", "/api/results", server.token("beta"), result_body())
    admin = server.token("*", agent_type="dashboard", admin=True, sub="dash")
    r = (await server.request("GET", "/api/results", admin)).json()
    assert {x["project_id"] for x in r["results"]} == {"alpha", "beta"}
    r = (await server.request("GET", "/api/results?project_id=beta", admin)).json()
    assert {x["project_id"] for x in r["results"]} == {"beta"}


async def test_context_route_cache_and_invalidation(nursery, tmp_path):
    h = await start_context_server(nursery, tmp_path)
    repo = h.system.config.roots["p1"]
    tok = h.token()
    url = "/api/context/ISS-9/python-specialist?task=jwt%20token%20expiry&max_bytes=65536"
    first = await h.request("GET", url, tok)
    assert first.status == 200, first.body
    body = first.json()
    assert body["cache_hit"] is False and body["context"]["relevant_files"][0]["path"] == "app/auth/tokens.py"
    assert body["context"]["metadata"]["agent_profile"]["capabilities"] == ["python"]
    assert body["context"]["metadata"]["agent_profile"]["next_agents"] == ["test-engineer", "code-reviewer"]
    assert len(first.body) <= 65536
    again = await h.request("GET", url, tok)
    assert again.json()["cache_hit"] is True
    # a new result for the issue invalidates
    await h.request("POST", "/api/results", tok, {**result_body(issue="ISS-9"), "result": {"status": "ok", "touched": "app/http/router.py"}})
    third = (await h.request("GET", url, tok)).json()
    assert third["cache_hit"] is False and third["context"]["previous_agent_outputs"][0]["issue_id"] == "ISS-9"
    # a changed file invalidates (after the next sweep)
    (repo / "app/auth/tokens.py").write_text("def verify_jwt_token(token):\n    return 'changed'\n")
    with trio.fail_after(10):  # the background sweep (every 2 s) finds it
        while True:
            await trio.sleep(0.5)
            fourth = (await h.request("GET", url, tok)).json()
            if not fourth["cache_hit"]:
                break
    assert "changed" in fourth["context"]["relevant_files"][0]["content"]
    r = await h.request("DELETE", "/api/cache/context/ISS-9", tok)
    assert r.json()["cleared"] is True and r.json()["entries_removed"] >= 1
    for bad, code in [("max_bytes=10", "REQ_001"), ("max_bytes=x", "REQ_001"), ("max_bytes=5000000", "CTX_002")]:
        r = await h.request("GET", f"/api/context/ISS-9/python-specialist?{bad}", tok)
        assert r.json()["code"] == code, bad
    assert (await h.request("GET", "/api/context/ISS-9/python-specialist?max_bytes=5000000", tok)).status == 413
    status = (await h.request("GET", "/status")).json()
    assert status["context_cache"]["hits"] >= 1
    metrics = (await h.request("GET", "/metrics")).body.decode()
    hits = float(metrics.split("\norchestra_context_cache_hits_total ")[1].split()[0])
    misses = float(metrics.split("\norchestra_context_cache_misses_total ")[1].split()[0])
    assert hits == status["context_cache"]["hits"] >= 1 and misses == status["context_cache"]["misses"] >= 1
    assert "hit_rate" not in metrics  # a ratio is the query's business, not a series
    async with h.ws(tok) as ws:
        r = await ws.call("context.get", issue_id="ISS-9", task="jwt", max_bytes=4096)
        assert r["ok"] and len(orjson.dumps(r["result"])) <= 4096
        r = await ws.call("context.get", issue_id="ISS-9", max_bytes=4096.5)
        assert r["error"]["code"] == "REQ_001" and r["error"]["field"] == "max_bytes"
        r = await ws.call("context.get", issue_id="ISS-9", max_bytes=5_000_000)
        assert r["error"]["code"] == "CTX_002"


async def test_context_builds_once_for_identical_requests_and_hits_never_wait_for_a_build(nursery, tmp_path, monkeypatch):
    from orchestra.actors.context_actor import ContextStats

    held = HeldBuilds(monkeypatch, "invoice pdf")
    h = await start_context_server(nursery, tmp_path)
    tok = h.token()
    fast = "/api/context/ISS-1/python-specialist?task=jwt%20token&max_bytes=65536"
    slow = "/api/context/ISS-2/python-specialist?task=invoice%20pdf&max_bytes=65536"
    first = await h.request("GET", fast, tok)
    assert first.json()["cache_hit"] is False
    fast_body = first.body
    answers = []

    async def ask_slow():
        answers.append(await h.request("GET", slow, tok))

    with held:
        async with trio.open_nursery() as waiting:
            for _ in range(5):
                waiting.start_soon(ask_slow)
            with trio.fail_after(5):
                assert await held.wait_started()
                # the build is held; a cached answer for another issue comes back meanwhile
                assert (await h.request("GET", fast, tok)).json()["cache_hit"] is True
            held.release()
    assert held.tasks.count("invoice pdf") == 1  # five identical requests, one build
    assert len({r.body for r in answers}) == 1 and answers[0].status == 200
    assert answers[0].json()["context"]["relevant_files"][0]["path"] == "app/billing/invoice.py"
    stats = (await h.request("GET", "/status")).json()["context_cache"]
    assert stats["misses"] == 2 and stats["hits"] == 5  # computed twice; four shared, one cached
    actor_stats = await h.system.actor_ref("context:p1").call(ContextStats(), timeout=2)
    assert actor_stats["shared"] == 4 and actor_stats["entries"] == 2
    assert actor_stats["bytes"] == sum(len(r.body) for r in answers[:1]) + len(fast_body)


async def test_an_answer_built_while_its_issue_is_cleared_is_not_kept(nursery, tmp_path, monkeypatch):
    held = HeldBuilds(monkeypatch, "invoice pdf")
    h = await start_context_server(nursery, tmp_path)
    tok = h.token()
    url = "/api/context/ISS-2/python-specialist?task=invoice%20pdf"
    answers = []

    async def ask():
        answers.append(await h.request("GET", url, tok))

    with held, trio.fail_after(10):
        async with trio.open_nursery() as waiting:
            waiting.start_soon(ask)
            assert await held.wait_started()
            cleared = await h.request("DELETE", "/api/cache/context/ISS-2", tok)
            assert cleared.json() == {"cleared": True, "entries_removed": 0}
            held.release()
    assert answers[0].status == 200 and answers[0].json()["cache_hit"] is False
    again = await h.request("GET", url, tok)
    assert again.json()["cache_hit"] is False  # built again: the cleared build was not kept
    assert (await h.request("GET", url, tok)).json()["cache_hit"] is True


async def test_the_context_cache_is_bounded_in_bytes(nursery, tmp_path, monkeypatch):
    from orchestra.actors.context_actor import ContextActor, ContextStats

    # the bound is read when the actor starts: measure one answer on a first server, then
    # serve with a bound of one and a half such answers
    probe = await start_context_server(nursery, tmp_path / "a")
    first = await probe.request("GET", "/api/context/ISS-1/python-specialist?task=jwt", probe.token())
    monkeypatch.setattr(ContextActor, "cache_bytes", len(first.body) * 3 // 2)
    h = await start_context_server(nursery, tmp_path / "b")
    tok = h.token()
    assert len((await h.request("GET", "/api/context/ISS-1/python-specialist?task=jwt", tok)).body) == len(first.body)
    await h.request("GET", "/api/context/ISS-2/python-specialist?task=invoice", tok)
    stats = await h.system.actor_ref("context:p1").call(ContextStats(), timeout=2)
    assert stats["entries"] == 1 and stats["bytes"] <= len(first.body) * 3 // 2
    again = await h.request("GET", "/api/context/ISS-1/python-specialist?task=jwt", tok)
    assert again.json()["cache_hit"] is False  # the older answer was dropped


async def test_a_failing_context_build_fails_that_answer_only(nursery, tmp_path, monkeypatch):
    from orchestra.actors.context.engine import ContextEngine

    original = ContextEngine.build

    def build(self, issue_id, agent_type, task, *args, **kwargs):
        if task == "boom":
            raise ValueError("a bug in ranking")
        return original(self, issue_id, agent_type, task, *args, **kwargs)

    monkeypatch.setattr(ContextEngine, "build", build)
    h = await start_context_server(nursery, tmp_path)
    tok = h.token()
    bad = await h.request("GET", "/api/context/ISS-1/python-specialist?task=boom", tok)
    assert bad.status == 500 and bad.json()["code"] == "INTERNAL"
    good = await h.request("GET", "/api/context/ISS-1/python-specialist?task=jwt", tok)
    assert good.status == 200 and good.json()["context"]["relevant_files"]
    ref = h.system.actor_ref("context:p1")
    assert ref is not None and ref.incarnation == 1  # the warm index was kept: no restart


async def test_store_batch_extension(server):
    tok = server.token()
    bodies = [result_body(agent_id=f"a{i}", n=i) for i in range(5)]
    r = await server.request("POST", "/api/results/batch", tok, {"results": bodies})
    assert r.status == 200, r.body
    reply = r.json()
    assert reply["stored"] == 5 and len(reply["results"]) == 5
    ids = [x["id"] for x in reply["results"]]
    for rid, body in zip(ids, bodies, strict=True):
        record = (await server.request("GET", f"/api/results/{rid}", tok)).json()
        assert record["result"] == body["result"]
    events = (await server.request("GET", "/api/events/wait/agent_completed?timeout=0&since=0", tok)).json()["events"]
    assert [e["data"]["result_id"] for e in events] == ids  # one event per result, in order
    bad = [*bodies[:2], {"agent_id": "x", "agent_type": "t", "issue_id": "i", "result": {}}]
    r = await server.request("POST", "/api/results/batch", tok, {"results": bad})
    assert r.status == 400 and r.json()["field"] == "results[2].result.status"
    r = await server.request("POST", "/api/results/batch", tok, {"results": [{**bodies[0], "project_id": "other"}]})
    assert r.status == 403
    r = await server.request("POST", "/api/results/batch", tok, {"results": []})
    assert r.status == 400 and r.json()["field"] == "results"
    async with server.ws(tok) as ws:
        r = await ws.call("result.store_batch", results=bodies[:2])
        assert r["ok"] and r["result"]["stored"] == 2


async def test_a_bug_answers_500_with_the_object_and_the_server_keeps_serving(server, monkeypatch, caplog):
    from orchestra.transport import ops as ops_module

    async def broken(c, args):
        raise RuntimeError("deliberate bug")

    monkeypatch.setitem(ops_module.OPS, "agent.status", ops_module.Op("agent.status", broken))
    r = await server.request("GET", "/api/agents/x/status", server.token())
    assert r.status == 500
    err = r.json()
    assert err["code"] == "INTERNAL" and err["request_id"] in err["message"]
    assert err["request_id"] in caplog.text  # the same id is in the server log
    assert (await server.request("GET", "/health")).status == 200


async def test_oversized_headers_get_431_with_the_error_object(server):
    r = await server.request("GET", "/health", headers=[("x-big", "y" * 40000)])
    assert r.status == 431 and r.json()["code"] == "REQ_002"


async def test_metrics_show_restarts_per_actor(server):
    admin = server.token("*", agent_type="ops", admin=True, sub="ops")
    await server.request("POST", "/api/results", server.token(), result_body())
    await server.request("POST", "/api/admin/faults", admin, {"target": "project:p1", "kind": "crash"})
    await until(lambda: server.system.projects.total_restarts() == 1, "the project restarted")
    text = (await server.request("GET", "/metrics")).body.decode()
    assert 'orchestra_actor_child_restarts_total{child="project:p1",supervisor="projects"} 1.0' in text


async def test_head_requests_and_bad_inputs_never_take_the_server_down(server):
    r = await server.request("HEAD", "/health")
    assert r.status == 200 and r.body == b"" and int(r.headers["content-length"]) > 0
    r = await server.request("HEAD", "/api/results", server.token())
    assert r.status == 200 and r.body == b""
    # a WebSocket upgrade without a key, garbage bytes, a truncated request: each dies alone
    for raw in [
        b"GET /ws HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage-tls-hello\r\n\r\n",
        b"POST /api/results HTTP/1.1\r\nHost: x\r\nContent-Length: 100\r\n\r\n{\"trunc",
        b"GET /health HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    ]:
        stream = await trio.open_tcp_stream("127.0.0.1", server.port)
        await stream.send_all(raw)
        with trio.move_on_after(0.5):
            while await stream.receive_some(65536):
                pass
        await stream.aclose()
    assert (await server.request("GET", "/health")).json()["status"] == "healthy"
    async with server.ws(server.token()) as ws:
        assert (await ws.call("ping"))["ok"]


async def test_a_body_dripping_too_slowly_is_cut_off(nursery, tmp_path):
    from orchestra.transport.server import ServerConfig

    h = await start_server(nursery, tmp_path / "d")
    h.server.config = ServerConfig(max_body_bytes=h.server.config.max_body_bytes, request_timeout=0.5)
    stream = await trio.open_tcp_stream("127.0.0.1", h.port)
    await stream.send_all(b"POST /api/results HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n")
    t0 = trio.current_time()
    closed = False
    with trio.fail_after(10):
        for _ in range(40):  # one byte every 0.2 s: each read is in time, the whole is not
            try:
                await stream.send_all(b"x")
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                closed = True
                break
            with trio.move_on_after(0.2):
                if await stream.receive_some(1024) == b"":
                    closed = True
                    break
    assert closed and trio.current_time() - t0 < 2
    assert (await h.request("GET", "/health")).status == 200


async def test_wait_positions_are_bounded(nursery, tmp_path):
    from orchestra.actors.project import ProjectStats

    h = await start_server(nursery, tmp_path / "d", max_wait_positions=3)
    tok = h.token()
    await h.request("POST", "/api/events/e", tok, {"data": {"n": 1}})
    for i in range(6):
        r = (await h.request("GET", f"/api/events/wait/e?timeout=0&filter=n:1|x:{i}", tok)).json()
        assert len(r["events"]) == 1  # each distinct filter is its own position
    ref = await h.system.project("p1")
    assert (await ref.call(ProjectStats()))["wait_positions"] == 3
    # the oldest position was dropped: that filter starts again (a repeat, never a loss)
    r = (await h.request("GET", "/api/events/wait/e?timeout=0&filter=n:1|x:0", tok)).json()
    assert len(r["events"]) == 1
    r = (await h.request("GET", "/api/events/wait/e?timeout=0&filter=n:1|x:5", tok)).json()
    assert r["events"] == []  # a kept position continues after what it was given


async def test_file_changes_arrive_through_the_watcher_not_the_sweep(nursery, tmp_path):
    from tests.actors.test_context import make_repo

    repo = make_repo(tmp_path / "repo")
    h = await start_server(nursery, tmp_path / "d", context_sweep=30.0)  # no sweep in this test
    h.system.config.roots["p1"] = repo
    tok = h.token()
    url = "/api/context/ISS-1/python-specialist?task=invoice+pdf+rendering&max_bytes=65536"
    first = (await h.request("GET", url, tok)).json()
    assert first["context"]["relevant_files"][0]["path"] == "app/billing/invoice.py"
    (repo / "app/billing/pdf_renderer.py").write_text("def render_invoice_pdf(invoice):\n    # invoice pdf rendering\n    pass\n")
    with trio.fail_after(8):
        while True:
            await trio.sleep(0.2)
            body = (await h.request("GET", url, tok)).json()
            paths = [f["path"] for f in body["context"]["relevant_files"]]
            if "app/billing/pdf_renderer.py" in paths:
                break
    (repo / "app/billing/pdf_renderer.py").unlink()
    with trio.fail_after(8):
        while True:
            await trio.sleep(0.2)
            body = (await h.request("GET", url, tok)).json()
            if "app/billing/pdf_renderer.py" not in body["context"]["project_structure"]["files"]:
                break


async def test_idle_waits_cost_no_cpu(server):
    import resource

    from orchestra.actors.events import EventFilter
    from orchestra.actors.project import Wait

    tok = server.token()
    ref = await server.system.project("p1")
    waiting = 300
    async with trio.open_nursery() as n:
        for i in range(waiting):
            n.start_soon(ref.call, Wait(f"w{i}", "never", EventFilter.parse(None), None, 10, 30.0))
        await until_waiters(server, waiting)  # all registered
        before = resource.getrusage(resource.RUSAGE_SELF)
        await trio.sleep(1.0)
        after = resource.getrusage(resource.RUSAGE_SELF)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        assert cpu < 0.05, f"{cpu:.3f} s of CPU in 1 s with {waiting} idle waits"
        await server.request("POST", "/api/events/never", tok, {})  # answers them all
    assert (await server.request("GET", "/health")).status == 200
