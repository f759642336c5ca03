"""WebSocket load: the clients of the bench, against Orchestra or a bare baseline.

Each function takes a :class:`~bench.procs.Server` and returns figures; ``orchestra`` says
whether the server speaks Orchestra's protocol (with a token, subscribe and acks) or is one of
the bare baselines (no token, every message relayed as it is).
"""

from __future__ import annotations

import time

import orjson
import trio
import trio_websocket

from .procs import Server, token

#: the client's own receive queue per connection (large: the client must never be the bound)
CLIENT_QUEUE = 4096
#: handshakes in flight at once when opening many connections
OPENING = 64


def ws_open(port: int, tok: str | None = None):  # type: ignore[no-untyped-def]
    """A client connection to ``/ws`` (an async context manager), with ``tok`` as bearer."""
    headers = [("authorization", f"Bearer {tok}")] if tok else []
    return trio_websocket.open_websocket("127.0.0.1", port, "/ws", use_ssl=False, extra_headers=headers,
                                         message_queue_size=CLIENT_QUEUE)


async def ping_rtt(port: int, tok: str | None, n: int, warm: int = 200) -> list[float]:
    msg = '{"id":1,"op":"ping"}'
    async with ws_open(port, tok) as ws:
        out = []
        for i in range(warm + n):
            t = time.perf_counter()
            await ws.send_message(msg)
            await ws.get_message()
            if i >= warm:
                out.append(time.perf_counter() - t)
    return out


async def publish_deliver(port: int, orchestra: bool, n: int, warm: int = 100) -> list[float]:
    """Seconds from sending one event to its delivery at one subscriber (Orchestra: durable,
    acknowledged to the publisher after commit; the ack is read after the delivery)."""
    async with ws_open(port, token(sub="pub") if orchestra else None) as pub, \
            ws_open(port, token(sub="sub") if orchestra else None) as sub:
        if orchestra:
            await sub.send_message('{"id":1,"op":"event.subscribe","event_types":["lat"]}')
            await sub.get_message()
        else:
            await trio.sleep(0.1)
        out = []
        for i in range(warm + n):
            body = {"id": i, "op": "event.publish", "event_type": "lat", "data": {"i": i}}
            t = time.perf_counter()
            await pub.send_message(orjson.dumps(body).decode())
            while True:
                m = orjson.loads(await sub.get_message())
                if not orchestra or m.get("op") == "event":
                    break
            if i >= warm:
                out.append(time.perf_counter() - t)
            if orchestra:
                await pub.get_message()
    return out


async def _open_many(port: int, count: int, tok_for, ready: trio.Event, hold: trio.Event,  # type: ignore[no-untyped-def]
                     on_open, nursery: trio.Nursery) -> None:
    """Open ``count`` connections (``OPENING`` handshakes at a time), run ``on_open(i, ws)`` on
    each, set ``ready`` when all have, and keep them open until ``hold`` is set."""
    limit = trio.Semaphore(OPENING)
    opened = [0]

    async def one(i: int) -> None:
        await limit.acquire()
        held = True
        try:
            async with ws_open(port, tok_for(i)) as ws:
                limit.release()
                held = False
                await on_open(i, ws)
                opened[0] += 1
                if opened[0] == count:
                    ready.set()
                await hold.wait()
        finally:
            if held:
                limit.release()

    for i in range(count):
        nursery.start_soon(one, i)


#: events the publisher may be ahead of the slowest subscriber in a fan-out (Orchestra cuts a
#: subscriber 1,000 frames behind, its outbox bound: a burst must not measure that instead)
FANOUT_LAG = 256


async def fanout(server: Server, subscribers: int, events: int, orchestra: bool, topic: str = "fan") -> tuple[float, float]:
    """Deliveries per second to ``subscribers`` connections, and the server's CPU seconds per
    delivery over the same span. The publisher stays at most ``FANOUT_LAG`` events ahead of
    the slowest subscriber (the same pacing for Orchestra and the baselines)."""
    total = subscribers * events
    counts = [0]
    got = [0] * subscribers
    done = trio.Event()
    ready = trio.Event()
    hold = trio.Event()

    async def on_open(i: int, ws: trio_websocket.WebSocketConnection) -> None:
        if orchestra:
            await ws.send_message(f'{{"id":1,"op":"event.subscribe","event_types":["{topic}"]}}')
            await ws.get_message()

        async def receive() -> None:
            for _ in range(events):
                await ws.get_message()
                counts[0] += 1
                got[i] += 1
            if counts[0] == total:
                done.set()
        nursery.start_soon(receive)

    async with trio.open_nursery() as nursery:
        await _open_many(server.port, subscribers, (lambda i: token(sub=f"s{i}")) if orchestra else (lambda i: None),
                         ready, hold, on_open, nursery)
        await ready.wait()
        await trio.sleep(0.2)
        async with ws_open(server.port, token(sub="pub") if orchestra else None) as pub:
            cpu = server.cpu_seconds()
            t = time.perf_counter()
            for i in range(events):
                if i % 32 == 0:
                    while i - min(got) >= FANOUT_LAG:  # noqa: ASYNC110 - a poll: one wake-up per 32 events
                        await trio.sleep(0.001)
                body = {"id": i, "op": "event.publish", "event_type": topic, "data": {"i": i}} if orchestra \
                    else {"op": "event", "data": {"i": i}}
                await pub.send_message(orjson.dumps(body).decode())
            with trio.fail_after(300):
                await done.wait()
            elapsed = time.perf_counter() - t
            cpu = server.cpu_seconds() - cpu
        hold.set()
    return total / elapsed, cpu / total


async def idle_ping(server: Server, idle: int, n: int) -> list[float]:
    """Ping round trips on one connection while ``idle`` other agents are connected."""
    ready = trio.Event()
    hold = trio.Event()

    async def on_open(i: int, ws: trio_websocket.WebSocketConnection) -> None:
        return None

    async with trio.open_nursery() as nursery:
        await _open_many(server.port, idle, lambda i: token(sub=f"idle{i}"), ready, hold, on_open, nursery)
        with trio.fail_after(600):
            await ready.wait()
        await trio.sleep(0.5)
        out = await ping_rtt(server.port, token(sub="pinger"), n)
        hold.set()
    return out


async def connected_rss(server: Server, agents: int) -> float:
    """The server's RSS (MB) with ``agents`` connected, each subscribed to every event."""
    ready = trio.Event()
    hold = trio.Event()

    async def on_open(i: int, ws: trio_websocket.WebSocketConnection) -> None:
        await ws.send_message('{"id":1,"op":"event.subscribe","event_types":"*"}')
        await ws.get_message()

    async with trio.open_nursery() as nursery:
        await _open_many(server.port, agents, lambda i: token(sub=f"a{i}"), ready, hold, on_open, nursery)
        await ready.wait()
        await trio.sleep(0.5)
        value = server.rss_mb()
        hold.set()
    return value


async def results_per_second(server: Server, writers: int, per_writer: int, batch: int = 1,
                             window: int = 8) -> tuple[float, float, float]:
    """Durable results/s: ``writers`` connections, each keeping ``window`` requests in flight;
    ``batch`` results per request; every answer is an acknowledgement after commit. Also the
    server's CPU seconds per result (the connections' opening included) and the share of the
    run its threads spent runnable but waiting for a CPU."""
    port = server.port
    async def writer(i: int) -> None:
        async with ws_open(port, token(sub=f"w{i}")) as ws:
            result = {"agent_id": f"w{i}", "agent_type": "python-specialist",
                      "issue_id": "bench", "result": {"status": "success", "n": 0}}
            body = {"op": "result.store", **result} if batch == 1 else \
                {"op": "result.store_batch", "results": [result] * batch}
            requests = per_writer // batch
            sent = recv = 0
            while recv < requests:
                while sent < requests and sent - recv < window:
                    body["id"] = sent
                    await ws.send_message(orjson.dumps(body).decode())
                    sent += 1
                m = orjson.loads(await ws.get_message())
                if not m.get("ok"):
                    raise RuntimeError(f"write refused: {m}")
                recv += 1

    cpu = server.cpu_seconds()
    _, waited = server.sched_seconds()
    t = time.perf_counter()
    async with trio.open_nursery() as n:
        for i in range(writers):
            n.start_soon(writer, i)
    total = writers * (per_writer // batch) * batch
    wall = time.perf_counter() - t
    return total / wall, (server.cpu_seconds() - cpu) / total, (server.sched_seconds()[1] - waited) / wall


async def retained_rss(server: Server, total: int, marks: list[int], size: int = 10) -> tuple[list[tuple[int, float]], int]:
    """Publish ``total`` events (``size`` bytes of data each) into one project and read the
    server's RSS (MB) after each count in ``marks``; also the encoded size of one event as
    delivered."""
    points = [(0, server.rss_mb())]
    async with ws_open(server.port, token(sub="sample")) as sample:
        await sample.send_message('{"id":1,"op":"event.subscribe","event_types":["sample"]}')
        await sample.get_message()
        connections = 8
        targets = sorted(set(marks))

        async def publisher(c: int, start: int, count: int) -> None:
            async with ws_open(server.port, token(sub=f"p{c}")) as ws:
                window, s, r = 32, 0, 0
                while r < count:
                    while s < count and s - r < window:
                        i = start + s
                        await ws.send_message(orjson.dumps(
                            {"id": s, "op": "event.publish", "event_type": "ret",
                             "data": {"pad": f"{i:08d}" + "x" * max(0, size - 8)}}).decode())
                        s += 1
                    m = orjson.loads(await ws.get_message())
                    if not m.get("ok"):
                        raise RuntimeError(f"publish refused: {m}")
                    r += 1

        done = 0
        for mark in targets:
            step = mark - done
            async with trio.open_nursery() as n:
                chunk = max(1, step // connections)
                for c in range(connections):
                    count = chunk if c < connections - 1 else step - chunk * (connections - 1)
                    if count > 0:
                        n.start_soon(publisher, c, done + c * chunk, count)
            done = mark
            await trio.sleep(0.3)
            points.append((mark, server.rss_mb()))
        await sample.send_message(orjson.dumps(
            {"id": 2, "op": "event.publish", "event_type": "sample", "data": {"pad": "0" * size}}).decode())
        encoded = 0
        while not encoded:
            m = await sample.get_message()
            if '"op":"event"' in m:
                encoded = len(m.encode())
    return points, encoded
