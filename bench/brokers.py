"""Redis (pub/sub, Streams) and NATS as reference points, when their servers answer.

``python -m bench.brokers redis|nats SUBSCRIBERS EVENTS N`` prints one JSON object: publish to
delivery at one subscriber (p50/p99 seconds over N events), fan-out to SUBSCRIBERS
(deliveries/s) and the broker's CPU seconds per delivery (``/proc/<pid>/stat``), or
``{"skipped": reason}``. It runs on asyncio (the clients are asyncio libraries), in its own
process; it starts no server and installs nothing: the ``bench`` extra brings ``redis`` and
``nats-py``. The brokers are not ours to pin: they run wherever the machine put them.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from pathlib import Path

from .procs import cpu_seconds, pct

REDIS = ("127.0.0.1", 6379)
NATS = "nats://127.0.0.1:4222"


def _pid_named(name: str) -> int | None:
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                if (proc / "comm").read_text().strip() == name:
                    return int(proc.name)
            except OSError:
                continue
    return None


async def redis_figures(subscribers: int, events: int, n: int) -> dict[str, object]:
    try:
        import redis.asyncio as aioredis
    except ImportError:
        return {"skipped": "redis client not installed (pip install -e '.[bench]')"}
    client = aioredis.Redis(host=REDIS[0], port=REDIS[1])
    try:
        info = await asyncio.wait_for(client.info("server"), 2)
    except (TimeoutError, OSError, aioredis.ConnectionError) as e:
        return {"skipped": f"no Redis at {REDIS[0]}:{REDIS[1]} ({type(e).__name__})"}
    pid = int(info["process_id"])
    out: dict[str, object] = {"server": f"redis {info.get('redis_version')}"}

    # pub/sub: publish -> deliver at one subscriber
    sub = client.pubsub()
    await sub.subscribe("lat")
    await sub.get_message(timeout=1)
    lat = []
    for i in range(100 + n):
        t = time.perf_counter()
        await client.publish("lat", b'{"i":%d}' % i)
        while (await sub.get_message(timeout=5)) is None:
            pass
        if i >= 100:
            lat.append(time.perf_counter() - t)
    await sub.aclose()
    out["pubsub_p50"], out["pubsub_p99"] = pct(lat, 0.5), pct(lat, 0.99)

    # Streams: XADD -> a blocked XREAD returns it (the closest Redis has to a durable log)
    reader = aioredis.Redis(host=REDIS[0], port=REDIS[1])
    await client.delete("bench:lat")
    last: bytes | str = "0-0"
    lat = []
    for i in range(100 + n):
        pending = asyncio.ensure_future(reader.xread({"bench:lat": last}, block=5000, count=1))
        await asyncio.sleep(0.0005)  # let the read reach the server first (an explicit id: no race)
        t = time.perf_counter()
        await client.xadd("bench:lat", {"i": i})
        got = await pending
        last = got[0][1][-1][0]
        if i >= 100:
            lat.append(time.perf_counter() - t)
    await client.delete("bench:lat")
    await reader.aclose()
    out["streams_p50"], out["streams_p99"] = pct(lat, 0.5), pct(lat, 0.99)

    # fan-out
    subs = []
    for _ in range(subscribers):
        c = aioredis.Redis(host=REDIS[0], port=REDIS[1]).pubsub()
        await c.subscribe("fan")
        await c.get_message(timeout=1)
        subs.append(c)

    async def receive(c) -> None:  # type: ignore[no-untyped-def]
        got = 0
        while got < events:
            if await c.get_message(timeout=10) is not None:
                got += 1

    tasks = [asyncio.ensure_future(receive(c)) for c in subs]
    await asyncio.sleep(0.2)
    cpu = cpu_seconds(pid)
    t = time.perf_counter()
    for i in range(events):
        await client.publish("fan", b'{"i":%d}' % i)
    await asyncio.gather(*tasks)
    elapsed = time.perf_counter() - t
    total = subscribers * events
    out["fanout_per_s"] = total / elapsed
    out["fanout_cpu_per_delivery"] = (cpu_seconds(pid) - cpu) / total
    for c in subs:
        await c.aclose()
    await client.aclose()
    return out


async def nats_figures(subscribers: int, events: int, n: int) -> dict[str, object]:
    try:
        import nats
    except ImportError:
        return {"skipped": "nats-py not installed (pip install -e '.[bench]')"}
    try:
        nc = await nats.connect(NATS, connect_timeout=2, max_reconnect_attempts=0, allow_reconnect=False)
    except Exception as e:  # noqa: BLE001 - nats-py raises several unrelated classes for "no server"
        return {"skipped": f"no NATS at {NATS} ({type(e).__name__})"}
    pid = _pid_named("nats-server")
    out: dict[str, object] = {"server": "nats"}
    got: asyncio.Queue[bytes] = asyncio.Queue()

    async def on_lat(msg) -> None:  # type: ignore[no-untyped-def]
        got.put_nowait(msg.data)

    sub_conn = await nats.connect(NATS)
    await sub_conn.subscribe("lat", cb=on_lat)
    await sub_conn.flush()
    lat = []
    for i in range(100 + n):
        t = time.perf_counter()
        await nc.publish("lat", b'{"i":%d}' % i)
        await nc.flush()
        await got.get()
        if i >= 100:
            lat.append(time.perf_counter() - t)
    out["pubsub_p50"], out["pubsub_p99"] = pct(lat, 0.5), pct(lat, 0.99)
    await sub_conn.close()

    total = subscribers * events
    count = [0]
    done = asyncio.Event()

    async def on_fan(msg) -> None:  # type: ignore[no-untyped-def]
        count[0] += 1
        if count[0] == total:
            done.set()

    conns = []
    for _ in range(subscribers):
        c = await nats.connect(NATS)
        await c.subscribe("fan", cb=on_fan)
        await c.flush()
        conns.append(c)
    await asyncio.sleep(0.2)
    cpu = cpu_seconds(pid) if pid else 0.0
    t = time.perf_counter()
    for i in range(events):
        await nc.publish("fan", b'{"i":%d}' % i)
    await nc.flush()
    await asyncio.wait_for(done.wait(), 120)
    elapsed = time.perf_counter() - t
    out["fanout_per_s"] = total / elapsed
    out["fanout_cpu_per_delivery"] = (cpu_seconds(pid) - cpu) / total if pid else None
    for c in conns:
        await c.close()
    await nc.close()
    return out


def main() -> None:
    which, subscribers, events, n = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
    run = redis_figures if which == "redis" else nats_figures

    async def bounded() -> dict[str, object]:
        try:
            return await asyncio.wait_for(run(subscribers, events, n), 300)
        except (TimeoutError, OSError) as e:
            return {"skipped": f"{which} did not answer in time ({type(e).__name__}: {e})"}

    print(json.dumps(asyncio.run(bounded())))


if __name__ == "__main__":
    main()
