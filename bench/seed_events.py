"""The seed's event benchmark as written: 100 consecutive event publishes, p50/p95/p99
(target p99 < 50 ms), over HTTP (a new connection each, as the seed's client did) and over one
WebSocket. Each publish is durable: answered after its commit.
"""

from __future__ import annotations

import time

import orjson
import trio
from orchestra.transport.http_client import request

from .procs import pct, token
from .wsload import ws_open

SEED_P99 = 0.050
COUNT = 100


def summary(data: list[float]) -> dict[str, float]:
    return {"p50": pct(data, 0.5), "p95": pct(data, 0.95), "p99": pct(data, 0.99)}


async def http_publishes(port: int, count: int = COUNT) -> list[float]:
    tok = token(sub="seed-http")
    out = []
    for i in range(count):
        body = orjson.dumps({"data": {"i": i, "source": "seed"}})
        t = time.perf_counter()
        with trio.fail_after(30):
            answer = await request("127.0.0.1", port, "POST", "/api/events/seed_event", token=tok, body=body)
        out.append(time.perf_counter() - t)
        if answer.status != 200:
            raise RuntimeError(f"publish refused: {answer.status} {answer.body!r}")
    return out


async def ws_publishes(port: int, count: int = COUNT) -> list[float]:
    out = []
    async with ws_open(port, token(sub="seed-ws")) as ws:
        for i in range(count):
            frame = orjson.dumps({"id": i, "op": "event.publish", "event_type": "seed_event",
                                  "data": {"i": i, "source": "seed"}}).decode()
            t = time.perf_counter()
            await ws.send_message(frame)
            m = orjson.loads(await ws.get_message())
            out.append(time.perf_counter() - t)
            if not m.get("ok"):
                raise RuntimeError(f"publish refused: {m}")
    return out
