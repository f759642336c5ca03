"""The seed's context benchmark (100 consecutive context injections, target p99 < 100 ms) and
its load test (119 agents at once, each: context -> work -> result -> event; target > 95%
succeed), over HTTP and over WebSocket, against a server whose project has a generated code base.
"""

from __future__ import annotations

import time
import urllib.parse
from pathlib import Path

import orjson
import trio
import trio_websocket
from orchestra.transport.http_client import request

from .procs import token
from .wsload import ws_open

SEED_CONTEXT_P99 = 0.100
SEED_SUCCESS = 0.95
AGENTS = 119
WORDS = "token auth user session cache router handler parser config event queue worker".split()


def _task(i: int) -> str:
    return " ".join(WORDS[(i * k) % len(WORDS)] for k in (1, 3, 5))


def seed_repo(root: Path, files: int) -> None:
    """The seed benchmark's code base: bench/seed.py's small git project when that module is
    there (the context engine's own run of benchmark 1), else a generated one of ``files``."""
    try:
        from .seed import small_project  # type: ignore[import-not-found,unused-ignore]
    except ImportError:
        from .context_speed import generate

        generate(root, files)
    else:
        small_project(root)


async def http_context(port: int, count: int = 100) -> list[float]:
    """``count`` consecutive context requests, each a new issue (so none is cached) with no
    task text, as the seed wrote it; one request before them builds the code base's index (the
    seed measures answers, not indexing)."""
    tok = token(sub="seed-ctx")
    with trio.fail_after(120):
        await request("127.0.0.1", port, "GET", "/api/context/SEED-WARM/python-specialist", token=tok)
    out = []
    for i in range(count):
        target = f"/api/context/SEED-{i}/python-specialist"
        t = time.perf_counter()
        with trio.fail_after(60):
            answer = await request("127.0.0.1", port, "GET", target, token=tok)
        out.append(time.perf_counter() - t)
        if answer.status != 200:
            raise RuntimeError(f"context refused: {answer.status} {answer.body[:200]!r}")
    return out


async def ws_context(port: int, count: int = 100) -> list[float]:
    out = []
    async with ws_open(port, token(sub="seed-ctx-ws")) as ws:
        for i in range(count):
            frame = orjson.dumps({"id": i, "op": "context.get", "issue_id": f"SEEDWS-{i}",
                                  "agent_type": "python-specialist"}).decode()
            t = time.perf_counter()
            await ws.send_message(frame)
            m = orjson.loads(await ws.get_message())
            out.append(time.perf_counter() - t)
            if not m.get("ok"):
                raise RuntimeError(f"context refused: {str(m)[:200]}")
    return out


async def _http_agent(port: int, i: int, run: str) -> None:
    tok = token(sub=f"{run}-{i}")
    issue = f"{run}-{i % 12}"
    target = f"/api/context/{issue}/python-specialist?{urllib.parse.urlencode({'task': _task(i)})}"
    answer = await request("127.0.0.1", port, "GET", target, token=tok)
    if answer.status != 200:
        raise RuntimeError(f"context {answer.status}")
    await trio.sleep(0.01)  # the work
    result = {"agent_id": f"{run}-{i}", "agent_type": "python-specialist", "issue_id": issue,
              "result": {"status": "success", "files_changed": i % 5}}
    answer = await request("127.0.0.1", port, "POST", "/api/results", token=tok, body=orjson.dumps(result))
    if answer.status != 200:
        raise RuntimeError(f"result {answer.status}")
    answer = await request("127.0.0.1", port, "POST", "/api/events/agent_done", token=tok,
                           body=orjson.dumps({"data": {"agent": i, "issue": issue}}))
    if answer.status != 200:
        raise RuntimeError(f"event {answer.status}")


async def _ws_agent(port: int, i: int, run: str) -> None:
    issue = f"{run}-{i % 12}"
    async with ws_open(port, token(sub=f"{run}-{i}")) as ws:
        async def call(frame: dict[str, object]) -> None:
            await ws.send_message(orjson.dumps(frame).decode())
            m = orjson.loads(await ws.get_message())
            if not m.get("ok"):
                raise RuntimeError(f"{frame['op']}: {str(m)[:200]}")
        await call({"id": 1, "op": "context.get", "issue_id": issue, "agent_type": "python-specialist",
                    "task": _task(i)})
        await trio.sleep(0.01)
        await call({"id": 2, "op": "result.store", "agent_id": f"{run}-{i}", "agent_type": "python-specialist",
                    "issue_id": issue, "result": {"status": "success", "files_changed": i % 5}})
        await call({"id": 3, "op": "event.publish", "event_type": "agent_done",
                    "data": {"agent": i, "issue": issue}})


async def fleet(port: int, transport: str, agents: int = AGENTS) -> tuple[float, float]:
    """All ``agents`` at once: the share that completed every step, and the seconds it took."""
    ok = [0]
    agent = _http_agent if transport == "http" else _ws_agent
    run = f"load{transport}{time.monotonic_ns() % 100000}"

    async def one(i: int) -> None:
        try:
            with trio.fail_after(60):
                await agent(port, i, run)
        except (RuntimeError, OSError, trio.TooSlowError, trio.BrokenResourceError,
                trio_websocket.HandshakeError, trio_websocket.ConnectionClosed) as e:
            print(f"seed load agent {i} failed: {e}")
        else:
            ok[0] += 1

    t = time.perf_counter()
    async with trio.open_nursery() as n:
        for i in range(agents):
            n.start_soon(one, i)
    return ok[0] / agents, time.perf_counter() - t
