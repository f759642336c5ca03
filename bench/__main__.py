"""``python -m bench``: Orchestra's hot paths against bare baselines, in one run.

Every server (Orchestra and each baseline) runs in its own process; the clients run here.
Figures are medians of the run; ratios are Orchestra / baseline, so compare them with the goals
in DEVELOPERS.md, not the absolute numbers (the machine is shared and noisy).
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

import orjson
import trio
import trio_websocket
from rich.console import Console
from rich.table import Table

PY = sys.executable


@contextmanager
def process(args: list[str], env: dict[str, str] | None = None):
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                         env={**os.environ, **(env or {})})
    try:
        line = p.stdout.readline()
        if not line.startswith("listening on"):
            raise RuntimeError(f"{args} did not start: {line!r}")
        yield p, int(line.rsplit(":", 1)[1])
    finally:
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()


@contextmanager
def orchestra(data_dir: Path):
    env = {"ORCHESTRA_DATA_DIR": str(data_dir), "ORCHESTRA_JWT_SECRET": "bench-secret-bench-secret-bench-secret"}
    with process([PY, "-c", "import sys; from orchestra.transport.cli import main; sys.exit(main())",
                  "serve", "--port", "0", "--no-rate-limits", "--log-level", "WARNING"], env) as (p, port):
        yield p, port


def token(project: str = "bench", agent_type: str = "python-specialist", sub: str = "bench", admin: bool = False) -> str:
    import jwt
    claims = {"sub": sub, "agent_type": agent_type, "project_id": project, "exp": int(time.time()) + 3600}
    if admin:
        claims["permissions"] = ["admin", "read_context", "write_results", "publish_events"]
    return jwt.encode(claims, "bench-secret-bench-secret-bench-secret", algorithm="HS256")


def ws_open(port: int, tok: str | None = None):
    headers = [("authorization", f"Bearer {tok}")] if tok else []
    return trio_websocket.open_websocket("127.0.0.1", port, "/ws", use_ssl=False, extra_headers=headers,
                                         message_queue_size=1024)


def pct(data: list[float], p: float) -> float:
    data = sorted(data)
    return data[min(len(data) - 1, int(p * len(data)))]


# -- ping round trip --

async def ping_rtt(port: int, tok: str | None, n: int) -> list[float]:
    msg = '{"id":1,"op":"ping"}'
    async with ws_open(port, tok) as ws:
        for _ in range(200):
            await ws.send_message(msg)
            await ws.get_message()
        out = []
        for _ in range(n):
            t = time.perf_counter()
            await ws.send_message(msg)
            await ws.get_message()
            out.append(time.perf_counter() - t)
    return out


# -- publish -> deliver --

async def relay_latency(port: int, n: int) -> list[float]:
    async with ws_open(port) as pub, ws_open(port) as sub:
        await trio.sleep(0.1)
        out = []
        for i in range(n + 100):
            t = time.perf_counter()
            await pub.send_message(orjson.dumps({"op": "event.publish", "event_type": "x", "data": {"i": i}}).decode())
            await sub.get_message()
            if i >= 100:
                out.append(time.perf_counter() - t)
    return out


async def orchestra_latency(port: int, n: int) -> list[float]:
    async with ws_open(port, token(sub="pub")) as pub, ws_open(port, token(sub="sub")) as sub:
        await sub.send_message('{"id":1,"op":"event.subscribe","event_types":["lat"]}')
        await sub.get_message()
        out = []
        for i in range(n + 100):
            t = time.perf_counter()
            await pub.send_message(orjson.dumps({"id": i, "op": "event.publish", "event_type": "lat", "data": {"i": i}}).decode())
            while True:
                m = orjson.loads(await sub.get_message())
                if m.get("op") == "event":
                    break
            if i >= 100:
                out.append(time.perf_counter() - t)
            await pub.get_message()  # the publish ack
    return out


# -- fan-out --

async def fanout(port: int, subscribers: int, events: int, orchestra_mode: bool) -> float:
    ready = trio.Event()
    done = trio.Event()
    counts = [0]
    total = subscribers * events
    started = [0]

    async def subscriber(i: int) -> None:
        tok = token(sub=f"s{i}") if orchestra_mode else None
        async with ws_open(port, tok) as ws:
            if orchestra_mode:
                await ws.send_message('{"id":1,"op":"event.subscribe","event_types":["fan"]}')
                await ws.get_message()
            started[0] += 1
            if started[0] == subscribers:
                ready.set()
            got = 0
            while got < events:
                await ws.get_message()
                got += 1
                counts[0] += 1
            if counts[0] == total:
                done.set()

    async with trio.open_nursery() as n:
        for i in range(subscribers):
            n.start_soon(subscriber, i)
        await ready.wait()
        await trio.sleep(0.2)
        async with ws_open(port, token(sub="pub") if orchestra_mode else None) as pub:
            t = time.perf_counter()
            for i in range(events):
                if orchestra_mode:
                    await pub.send_message(orjson.dumps({"id": i, "op": "event.publish", "event_type": "fan", "data": {"i": i}}).decode())
                else:
                    await pub.send_message(orjson.dumps({"op": "event", "data": {"i": i}}).decode())
            with trio.fail_after(120):
                await done.wait()
            elapsed = time.perf_counter() - t
    return total / elapsed


# -- HTTP GET requests/s (client in its own process) --

async def http_rps(port: int, path: str, tok: str | None, seconds: float, connections: int) -> float:
    if shutil.which("wrk"):
        args = ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", f"http://127.0.0.1:{port}{path}"]
        if tok:
            args += ["-H", f"Authorization: Bearer {tok}"]
        out = await trio.run_process(args, capture_stdout=True)
        for line in out.stdout.decode().splitlines():
            if line.startswith("Requests/sec:"):
                return float(line.split()[1])
        raise RuntimeError(out.stdout.decode())
    out = await trio.run_process(
        [PY, "-m", "bench.httpload", str(port), path, tok or "", str(seconds), str(connections)],
        capture_stdout=True,
    )
    return float(out.stdout.decode().strip())


# -- durable results/s from many writers --

async def results_per_second(port: int, writers: int, per_writer: int, batch: int = 1) -> float:
    """Durable results/s: each writer keeps 8 requests in flight; ``batch`` results per request."""
    async def writer(i: int) -> None:
        async with ws_open(port, token(sub=f"w{i}")) as ws:
            result = {"agent_id": f"w{i}", "agent_type": "python-specialist",
                      "issue_id": "bench", "result": {"status": "success", "n": 0}}
            if batch == 1:
                body = {"op": "result.store", **result}
            else:
                body = {"op": "result.store_batch", "results": [result] * batch}
            requests = per_writer // batch
            window = 8
            sent = recv = 0
            while recv < requests:
                while sent < requests and sent - recv < window:
                    body["id"] = sent
                    await ws.send_message(orjson.dumps(body).decode())
                    sent += 1
                m = orjson.loads(await ws.get_message())
                assert m["ok"], m
                recv += 1

    t = time.perf_counter()
    async with trio.open_nursery() as n:
        for i in range(writers):
            n.start_soon(writer, i)
    return writers * per_writer / (time.perf_counter() - t)


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


async def connected_rss(p: subprocess.Popen, port: int, agents: int) -> float:
    async with trio.open_nursery() as n:
        ready = trio.Event()
        count = [0]
        hold = trio.Event()

        async def agent(i: int) -> None:
            async with ws_open(port, token(sub=f"a{i}")) as ws:
                await ws.send_message('{"id":1,"op":"event.subscribe","event_types":"*"}')
                await ws.get_message()
                count[0] += 1
                if count[0] == agents:
                    ready.set()
                await hold.wait()

        for i in range(agents):
            n.start_soon(agent, i)
        await ready.wait()
        await trio.sleep(0.5)
        value = rss_mb(p.pid)
        hold.set()
    return value


async def run(args: argparse.Namespace) -> None:
    console = Console()
    table = Table(title="Orchestra vs bare baselines (same run, same machine)")
    for col in ("figure", "orchestra", "baseline", "ratio", "goal"):
        table.add_column(col)
    tmp = Path(tempfile.mkdtemp(prefix="orchestra-bench-"))
    q = args.quick
    n = 500 if q else 3000

    with process([PY, "-m", "bench.baselines", "echo"]) as (_, port):
        base = statistics.median(await ping_rtt(port, None, n))
    with orchestra(tmp / "ping") as (_, port):
        ours = statistics.median(await ping_rtt(port, token(), n))
    table.add_row("ws ping round trip p50", f"{ours*1e3:.3f} ms", f"{base*1e3:.3f} ms (echo)", f"{ours/base:.2f}x", "<= 1.3x")

    with process([PY, "-m", "bench.baselines", "relay"]) as (_, port):
        base = statistics.median(await relay_latency(port, n // 2))
    with orchestra(tmp / "lat") as (_, port):
        ours = statistics.median(await orchestra_latency(port, n // 2))
    table.add_row("publish->deliver p50 (durable)", f"{ours*1e3:.3f} ms", f"{base*1e3:.3f} ms (relay)", f"{ours/base:.2f}x", "<= 2x")

    events = 50 if q else 200
    with process([PY, "-m", "bench.baselines", "relay"]) as (_, port):
        base = await fanout(port, 119, events, False)
    with orchestra(tmp / "fan") as (_, port):
        ours = await fanout(port, 119, events, True)
    table.add_row("fan-out to 119, deliveries/s", f"{ours:,.0f}", f"{base:,.0f} (broadcast)", f"{ours/base:.0%}", ">= 70%")

    seconds = 3 if q else 8
    with process([PY, "-m", "bench.baselines", "h11"]) as (_, port):
        base = await http_rps(port, "/api/results/x", None, seconds, 32)
    with orchestra(tmp / "get") as (_, port):
        tok = token()
        async with ws_open(port, tok) as ws:
            await ws.send_message('{"id":1,"op":"result.store","agent_id":"a","agent_type":"python-specialist","issue_id":"i","result":{"status":"success"}}')
            rid = orjson.loads(await ws.get_message())["result"]["id"]
        ours = await http_rps(port, f"/api/results/{rid}", tok, seconds, 32)
    tool = "wrk" if shutil.which("wrk") else "python client"
    table.add_row(f"GET /api/results/{{id}} req/s ({tool})", f"{ours:,.0f}", f"{base:,.0f} (bare h11)", f"{ours/base:.0%}", ">= 60%")

    with orchestra(tmp / "write") as (_, port):
        ours = await results_per_second(port, 119, 30 if q else 150)
    table.add_row("durable results/s, 119 writers, result.store", f"{ours:,.0f}", "-", "-", ">= 10,000/s")
    with orchestra(tmp / "write-batch") as (_, port):
        ours = await results_per_second(port, 119, 200 if q else 1000, batch=20)
    table.add_row("durable results/s, 119 writers, result.store_batch of 20", f"{ours:,.0f}", "-", "-", ">= 10,000/s")

    with orchestra(tmp / "rss") as (p, port):
        mb = await connected_rss(p, port, 119)
    table.add_row("RSS with 119 agents connected", f"{mb:.0f} MB", "-", "-", "< 150 MB")

    console.print(table)
    if not shutil.which("wrk"):
        console.print("skipped: wrk (apt-get install wrk) - HTTP load came from a Python client process instead")
    console.print("skipped: redis-benchmark baseline (not part of this table yet)")
    shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench")
    parser.add_argument("--quick", action="store_true", help="fewer iterations")
    trio.run(run, parser.parse_args())


if __name__ == "__main__":
    main()
