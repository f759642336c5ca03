"""``python -m bench``: every hot path of Orchestra next to the bare limit that bounds it, in one run.

Every server (Orchestra and each baseline) is started here, in its own process, pinned to one
core; the load generator (this process, wrk, the client processes) runs on the other. One table
comes out, with each ratio and goal; a JSON record and a growth plot go to ``--results``
(default ``bench/results/``); ``--readme`` also writes the table into ``bench/README.md``.
``--quick`` is the small profile the test suite runs: every figure, few iterations.

Ratios are Orchestra / baseline in the same run on the same machine: compare those, not the
absolute figures (the machine is shared).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson
import trio
from rich.console import Console

from . import httpload, report, seed_events, seed_load, shell_client, wsload
from .procs import PY, Pinning, Server, baseline, orchestra, pct, token
from .report import Row

HERE = Path(__file__).parent


@dataclass(frozen=True)
class Profile:
    name: str
    ping: int = 3000
    latency: int = 1500
    fanout_events: int = 200
    fanout_growth: tuple[tuple[int, int], ...] = ((10, 2000), (119, 200), (1000, 40))
    idle: tuple[int, ...] = (119, 1000, 5000)
    idle_pings: int = 2000
    writes_single: int = 150
    writes_batch: int = 1000
    http_seconds: float = 8
    http_connections: int = 64
    retained: tuple[int, ...] = (25_000, 50_000, 100_000)
    context_files: tuple[int, ...] = (1000, 5000, 20_000)
    context_queries: int = 50
    seed_count: int = 100
    seed_repo_files: int = 1000
    shell_runs: int = 20
    sqlite_seconds: float = 2
    broker_events: int = 400
    floor_rounds: int = 5000


FULL = Profile("full")
QUICK = Profile("quick", ping=300, latency=200, fanout_events=10, fanout_growth=((10, 20), (119, 10), (200, 5)),
                idle=(20, 50, 100), idle_pings=100, writes_single=10, writes_batch=40, http_seconds=1,
                http_connections=16, retained=(1000, 2000, 3000), context_files=(100, 200, 400),
                context_queries=10, seed_count=30, seed_repo_files=100, shell_runs=2, sqlite_seconds=0.3,
                broker_events=20, floor_rounds=500)

#: rounds that alternate the baseline and Orchestra in the latency figures
ROUNDS = 5

GET_BODY = b'{"agent_id":"a","agent_type":"python-specialist","issue_id":"i","result":{"status":"success","n":1}}'


def json_run(args: list[str], pinning: Pinning, timeout: float = 900) -> Any:
    """The JSON a bench script printed last (it runs on the servers' cores)."""
    out = subprocess.run(args, capture_output=True, text=True, check=True, timeout=timeout,
                         preexec_fn=pinning.server_preexec())
    return json.loads(out.stdout.strip().splitlines()[-1])


class Run:
    def __init__(self, profile: Profile, pinning: Pinning, tmp: Path, console: Console) -> None:
        self.p = profile
        self.pinning = pinning
        self.tmp = tmp
        self.console = console
        self.rows: list[Row] = []
        self.growth: dict[str, list[list[float]]] = {}
        self.skipped: list[str] = []

    def step(self, what: str) -> None:
        self.console.log(what)

    def add(self, *args: object, **kwargs: object) -> None:
        self.rows.append(Row(*args, **kwargs))

    # -- 1. the seed's three benchmarks --

    async def seeds(self) -> None:
        self.step("seed benchmarks (context, events, 119-agent load)")
        repo = self.tmp / "seed-repo"
        await trio.to_thread.run_sync(seed_load.seed_repo, repo, self.p.seed_repo_files)
        sec = "1. seed benchmarks (targets with a 5x margin)"
        with orchestra(self.tmp / "seed", self.pinning, "--project", f"bench={repo}") as s:
            for transport, fn in (("HTTP", seed_load.http_context), ("WS", seed_load.ws_context)):
                data = await fn(s.port, self.p.seed_count)
                p99 = pct(data, 0.99)
                self.add(sec, f"seed_context_{transport.lower()}_p99",
                         f"context injection, {len(data)} consecutive, p99 ({transport})", p99, "s",
                         goal="p99 < 20 ms (seed 100 ms / 5)", met=p99 < seed_load.SEED_CONTEXT_P99 / 5,
                         note=f"p50 {pct(data, 0.5) * 1e3:.1f} ms, p95 {pct(data, 0.95) * 1e3:.1f} ms")
            for transport, fn in (("HTTP", seed_events.http_publishes), ("WS", seed_events.ws_publishes)):
                data = await fn(s.port, self.p.seed_count)
                p99 = pct(data, 0.99)
                self.add(sec, f"seed_events_{transport.lower()}_p99",
                         f"event publish (durable), {len(data)} consecutive, p99 ({transport})", p99, "s",
                         goal="p99 < 10 ms (seed 50 ms / 5)", met=p99 < seed_events.SEED_P99 / 5,
                         note=f"p50 {pct(data, 0.5) * 1e3:.2f} ms, p95 {pct(data, 0.95) * 1e3:.2f} ms")
            for transport in ("http", "ws"):
                share, seconds = await seed_load.fleet(s.port, transport)
                self.add(sec, f"seed_load_{transport}", f"119 agents at once: context, work, result, event "
                         f"({transport.upper()}, {seconds:.2f} s)", share, "%",
                         goal=">= 99% succeed (seed 95%, 5x fewer failures)", met=share >= 0.99)

    # -- 2. WebSocket: ping, publish -> deliver, fan-out; 5. RSS with 119 agents; 6. growth --

    async def websocket(self) -> None:
        sec = "2. WebSocket against bare trio-websocket"
        self.step("ping and publish -> deliver: bare echo and relay, then orchestra, in alternating rounds")
        with orchestra(self.tmp / "ws", self.pinning) as s, baseline("echo", self.pinning) as echo, \
                baseline("relay", self.pinning) as relay, baseline("broadcast", self.pinning) as broadcast:
            self.step("RSS with 119 agents connected")
            rss = await wsload.connected_rss(s, 119)
            # alternating rounds: a busy moment of the shared machine falls on both sides alike
            base, ours = [], []
            for _ in range(ROUNDS):
                base += await wsload.ping_rtt(echo.port, None, self.p.ping // ROUNDS)
                ours += await wsload.ping_rtt(s.port, token(), self.p.ping // ROUNDS)
            med_o, med_b = statistics.median(ours), statistics.median(base)
            self.add(sec, "ping_p50", "ping round trip p50", med_o, "s", med_b, "bare echo",
                     goal="<= 1.1x echo", met=med_o <= 1.1 * med_b)
            self.add(sec, "ping_p99", "ping round trip p99", pct(ours, 0.99), "s", pct(base, 0.99), "bare echo")

            base, ours = [], []
            for _ in range(ROUNDS):
                base += await wsload.publish_deliver(relay.port, False, self.p.latency // ROUNDS)
                ours += await wsload.publish_deliver(s.port, True, self.p.latency // ROUNDS)
            med_o, med_b = statistics.median(ours), statistics.median(base)
            self.add(sec, "deliver_p50", "publish -> deliver p50 (durable)", med_o, "s", med_b, "bare relay",
                     goal="<= 1.5x relay", met=med_o <= 1.5 * med_b)
            self.add(sec, "deliver_p99", "publish -> deliver p99 (durable)", pct(ours, 0.99), "s",
                     pct(base, 0.99), "bare relay")

            self.step("fan-out: fair broadcast and sequential relay, then orchestra, at each size")
            for subs, events in sorted({(119, self.p.fanout_events), *self.p.fanout_growth}):
                b_rate, b_cpu = await wsload.fanout(broadcast, subs, events, False)
                ours_rate, ours_cpu = await wsload.fanout(s, subs, events, True, topic=f"fan{subs}")
                for series, value in (("fanout:orchestra", ours_rate), ("fanout:fair broadcast", b_rate),
                                      ("fanout_cpu:orchestra", ours_cpu), ("fanout_cpu:fair broadcast", b_cpu)):
                    self.growth.setdefault(series, []).append([subs, value])
                if subs == 119:
                    r_rate, r_cpu = await wsload.fanout(relay, subs, events, False)
                    self.add(sec, "fanout_119", "fan-out to 119 subscribers, deliveries/s", ours_rate, "/s",
                             b_rate, "fair broadcast")
                    self.add(sec, "fanout_119_cpu", "fan-out to 119: server CPU per delivery", ours_cpu, "us",
                             b_cpu, "fair broadcast", goal="<= fair broadcast", met=ours_cpu <= b_cpu)
                    self.add(sec, "fanout_119_relay", "  (the old baseline: relay awaiting each in turn)",
                             ours_rate, "/s", r_rate, "sequential relay", note=f"relay CPU {r_cpu * 1e6:.1f} µs")
                else:
                    self.add("6. growth", f"fanout_{subs}", f"fan-out to {subs}: deliveries/s, CPU per delivery",
                             ours_rate, "/s", b_rate, "fair broadcast",
                             note=f"CPU {ours_cpu * 1e6:.1f} µs vs {b_cpu * 1e6:.1f} µs")

            self.add("5. memory", "rss_119", "RSS with 119 agents connected (subscribed to *)", rss, "MB",
                     goal="< 100 MB", met=rss < 100)

            self.step("ping with idle agents connected")
            for idle in self.p.idle:
                data = await wsload.idle_ping(s, idle, self.p.idle_pings)
                self.growth.setdefault("idle_ping:orchestra p99", []).append([idle, pct(data, 0.99)])
                self.add("6. growth", f"idle_ping_{idle}", f"ping p99 with {idle:,} idle agents connected",
                         pct(data, 0.99), "s", note=f"p50 {statistics.median(data) * 1e3:.3f} ms; RSS {s.rss_mb():.0f} MB")

            await self.http(s)

    # -- 3. HTTP with wrk --

    async def http(self, s: Server) -> None:
        sec = f"3. HTTP at {self.p.http_connections} connections ({httpload.tool()}) against bare h11"
        if not shutil.which("wrk"):
            self.skipped.append("wrk: not installed (apt-get install wrk); HTTP load came from a Python client")
        self.step("HTTP: bare h11, then orchestra")
        tok = token()
        async with wsload.ws_open(s.port, tok) as ws:
            await ws.send_message('{"id":1,"op":"result.store","agent_id":"a","agent_type":"python-specialist",'
                                  '"issue_id":"i","result":{"status":"success"}}')
            rid = orjson.loads(await ws.get_message())["result"]["id"]
        secs, conns = self.p.http_seconds, self.p.http_connections
        with baseline("h11", self.pinning) as b:
            cpu, t = b.cpu_seconds(), time.perf_counter()
            base_get = await trio.to_thread.run_sync(httpload.requests_per_second, b.port, "GET", "/api/results/x",
                                                     None, secs, conns, self.pinning)
            base_get_cpu = (b.cpu_seconds() - cpu) / (base_get * (time.perf_counter() - t))
            cpu, t = b.cpu_seconds(), time.perf_counter()
            base_post = await trio.to_thread.run_sync(httpload.requests_per_second, b.port, "POST", "/api/results",
                                                      None, secs, conns, self.pinning, GET_BODY)
            base_post_cpu = (b.cpu_seconds() - cpu) / (base_post * (time.perf_counter() - t))
        cpu, t = s.cpu_seconds(), time.perf_counter()
        ours_get = await trio.to_thread.run_sync(httpload.requests_per_second, s.port, "GET", f"/api/results/{rid}",
                                                 tok, secs, conns, self.pinning)
        get_cpu = (s.cpu_seconds() - cpu) / (ours_get * (time.perf_counter() - t))
        cpu, t = s.cpu_seconds(), time.perf_counter()
        ours_post = await trio.to_thread.run_sync(httpload.requests_per_second, s.port, "POST", "/api/results",
                                                  tok, secs, conns, self.pinning, GET_BODY)
        post_cpu = (s.cpu_seconds() - cpu) / (ours_post * (time.perf_counter() - t))
        self.add(sec, "http_get", "GET /api/results/{id}, requests/s", ours_get, "/s", base_get, "bare h11",
                 goal=">= 75% of bare h11", met=ours_get >= 0.75 * base_get)
        self.add(sec, "http_post", "POST /api/results (durable), requests/s", ours_post, "/s", base_post,
                 "bare h11, no store")
        self.add(sec, "http_get_cpu", "GET: server CPU per request", get_cpu, "us", base_get_cpu, "bare h11",
                 note="CPU over the wrk run / requests answered (approximate: includes connection set-up)")
        self.add(sec, "http_post_cpu", "POST: server CPU per request", post_cpu, "us", base_post_cpu, "bare h11")

    # -- 4. durable writes --

    async def writes(self) -> None:
        sec = "4. durable writes from 119 writers (acknowledged after commit)"
        self.step("SQLite's own commit rate, then orchestra single and batched")
        bare = json_run([PY, "-m", "bench.sqlite_commit", str(self.p.sqlite_seconds), "NORMAL"], self.pinning)
        with orchestra(self.tmp / "w1", self.pinning) as s:
            single, single_cpu, single_wait = await wsload.results_per_second(s, 119, self.p.writes_single)
        with orchestra(self.tmp / "w20", self.pinning) as s:
            batched, batched_cpu, batched_wait = await wsload.results_per_second(
                s, 119, self.p.writes_batch, batch=20)
        self.add(sec, "writes_single", "result.store, results/s", single, "/s", float(bare["group_119"]),
                 "bare SQLite, 119 rows a commit", goal=">= 10,000/s", met=single >= 10_000,
                 note=f"the server's threads waited for a CPU {single_wait:.0%} of the run")
        self.add(sec, "writes_batch", "result.store_batch of 20, results/s", batched, "/s",
                 float(bare["group_2380"]), "bare SQLite, 2,380 rows a commit",
                 goal=">= 50,000/s", met=batched >= 50_000,
                 note=f"the server's threads waited for a CPU {batched_wait:.0%} of the run")
        self.add(sec, "writes_single_cpu", "result.store: server CPU per result", single_cpu, "us",
                 float(bare["group_119_cpu"]), "bare SQLite, 119 rows a commit",
                 note=f"at one whole core: {1 / single_cpu:,.0f}/s (CPU from /proc over the run, incl. opening "
                      "119 connections)")
        self.add(sec, "writes_batch_cpu", "result.store_batch of 20: server CPU per result", batched_cpu, "us",
                 float(bare["group_2380_cpu"]), "bare SQLite, 2,380 rows a commit",
                 note=f"at one whole core: {1 / batched_cpu:,.0f}/s")
        self.add(sec, "sqlite_single", "  (bare SQLite, one row a commit)", float(bare["single"]), "/s",
                 note="WAL, synchronous=NORMAL, the store's schema")

    # -- 5. retained events; 6. context growth --

    async def memory(self) -> None:
        total = max(self.p.retained)
        self.step(f"RSS with {total:,} retained events")
        with orchestra(self.tmp / "ret", self.pinning, "--event-retention", str(total + 10),
                       "--event-retention-bytes", str(1 << 34)) as s:
            points, encoded = await wsload.retained_rss(s, total, list(self.p.retained))
        self.growth["retained_rss:orchestra"] = [[n, mb] for n, mb in points]
        (n0, mb0), (n1, mb1) = points[0], points[-1]
        per_event = (mb1 - mb0) * 1024 * 1024 / (n1 - n0)
        self.add("5. memory", "rss_retained", f"RSS with {total:,} retained events", mb1, "MB",
                 note=f"{mb0:.0f} MB before")
        self.add("5. memory", "rss_per_event", "RSS per retained event", per_event, "B", float(encoded),
                 "its encoded size", goal="<= 2x encoded size", met=per_event <= 2 * encoded)

    async def context_growth(self) -> None:
        sizes = ",".join(str(f) for f in self.p.context_files)
        self.step(f"context uncached answers on {sizes} files")
        figures = await trio.to_thread.run_sync(lambda: json_run(
            [PY, "-m", "bench.growth_context", sizes, str(self.p.context_queries)], self.pinning))
        for fig in figures:
            files, p99 = int(fig["files"]), float(fig["p99"])
            self.growth.setdefault("context:uncached p99", []).append([files, p99])
            self.add("6. growth", f"context_{files}", f"context uncached p99, {files:,}-file code base", p99, "s",
                     note=f"p50 {float(fig['p50']) * 1e3:.1f} ms; cold index {float(fig['cold_index']):.1f} s")

    # -- 7. shell client --

    async def shell(self) -> None:
        self.step("shell client against curl")
        f = await trio.to_thread.run_sync(shell_client.figures, self.p.shell_runs)
        agent, curl = f["trip_agent"], f["trip_curl"]
        assert agent is not None
        med = statistics.median(agent)
        base = statistics.median(curl) if curl else None
        if base is None:
            self.skipped.append("curl: not installed, the shell client has no ratio")
        self.add("7. shell client", "shell_get", "orchestra agent get ID, start to exit", med, "s", base, "curl",
                 goal="<= 2x curl", met=(med <= 2 * base) if base else None)
        if f["bare"]:
            self.add("7. shell client", "shell_floor", "  (python -c pass)", statistics.median(f["bare"]), "s",
                     base, "curl")

    # -- what a request is made of --

    async def floors(self) -> None:
        self.step("unit costs: hand-off, thread hop, frame, JSON")
        sec = "8. unit costs on this machine (what bounds the figures above)"
        f = await trio.to_thread.run_sync(lambda: json_run([PY, "-m", "bench.floors", str(self.p.floor_rounds)], self.pinning))
        self.add(sec, "floor_handoff", "trio task hand-off (memory channel, one way)", f["handoff"] / 1e6, "us",
                 note="a durable result.store crosses 7 of them (bench/floors.py), 5 not shared with a batch")
        self.add(sec, "floor_thread_hop", "the store's thread hop (WorkerThread no-op round trip)",
                 f["thread_hop"] / 1e6, "us", note="once per group commit, on the publish -> deliver path")
        self.add(sec, "floor_frame_in", "wsproto: one client frame in", f["ws_frame_in"] / 1e6, "us")
        self.add(sec, "floor_frame_out", "wsproto: one frame out", f["ws_frame_out"] / 1e6, "us")
        self.add(sec, "floor_json", "orjson: a request in and its answer out", f["json"] / 1e6, "us")

    # -- references: Redis, NATS --

    async def brokers(self) -> None:
        sec = "references: Redis and NATS on this machine (not pinned: not ours)"
        for which in ("redis", "nats"):
            self.step(f"{which} reference figures")
            try:
                fig = await trio.to_thread.run_sync(lambda w=which: json_run(
                    [PY, "-m", "bench.brokers", w, "119", str(self.p.broker_events), str(self.p.latency)],
                    Pinning(self.pinning.load, self.pinning.load)))
            except (subprocess.CalledProcessError, subprocess.TimeoutExpired) as e:
                self.skipped.append(f"{which}: the reference client failed ({e})")
                continue
            if "skipped" in fig:
                self.skipped.append(f"{which}: {fig['skipped']}")
                continue
            name = str(fig["server"])
            self.add(sec, f"{which}_pubsub_p50", f"{name} pub/sub publish -> deliver p50", float(fig["pubsub_p50"]), "s")
            if "streams_p50" in fig:
                self.add(sec, f"{which}_streams_p50", f"{name} Streams XADD -> blocked XREAD p50",
                         float(fig["streams_p50"]), "s")
            cpu = fig.get("fanout_cpu_per_delivery")
            self.add(sec, f"{which}_fanout", f"{name} fan-out to 119, deliveries/s", float(fig["fanout_per_s"]), "/s",
                     note=f"server CPU {float(cpu) * 1e6:.2f} µs per delivery" if cpu else "",
                     )
            if which == "redis":
                self.rows[-1].note += "; bounded by the Python client here"


def machine(pinning: Pinning) -> dict[str, object]:
    return {"cores": os.cpu_count(), "pinning": pinning.describe(), "load_average": os.getloadavg(),
            "python": sys.version.split()[0]}


async def run(args: argparse.Namespace) -> int:
    console = Console(width=None if Console().is_terminal else 150)
    profile = QUICK if args.quick else FULL
    pinning = Pinning.plan()
    pinning.pin_self()
    started = time.time()
    meta = {"profile": profile.name, "started": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
            "machine": machine(pinning)}
    console.log(f"profile {profile.name}; {pinning.describe()}; load average {os.getloadavg()[0]:.2f}")
    with tempfile.TemporaryDirectory(prefix="orchestra-bench-") as tmp:
        r = Run(profile, pinning, Path(tmp), console)
        parts = {"seeds": r.seeds, "ws": r.websocket, "writes": r.writes, "memory": r.memory,
                 "context": r.context_growth, "shell": r.shell, "brokers": r.brokers, "floors": r.floors}
        for name in args.only or list(parts):
            await parts[name]()
    order = {s: i for i, s in enumerate(sorted({row.section for row in r.rows}))}
    rows = sorted(r.rows, key=lambda row: order[row.section])
    meta["seconds"] = round(time.time() - started, 1)
    results = Path(args.results)
    stamp = datetime.datetime.now(datetime.UTC).strftime("%Y%m%dT%H%M%S")
    png = results / f"growth-{profile.name}.png"
    reason = report.plot(png, r.growth)
    if reason:
        r.skipped.append(reason)
    out = results / f"{profile.name}-{stamp}.json"
    report.write_json(out, meta, rows, r.growth, r.skipped)
    title = f"Orchestra against bare baselines, one run ({profile.name}, {meta['seconds']} s, {pinning.describe()})"
    console.print(report.table(rows, title))
    for line in r.skipped:
        console.print(f"skipped: {line}")
    for row in rows:
        if row.note:
            console.print(f"[dim]{row.label.strip()}: {row.note}[/dim]")
    console.print(f"results: {out}" + ("" if reason else f"; plot: {png}"))
    if args.readme:
        met = [row for row in rows if row.met is not None]
        body = (f"Run of {meta['started']} ({profile.name} profile, {meta['seconds']} s; {pinning.describe()}; "
                f"load average at start {meta['machine']['load_average'][0]:.2f}): "  # type: ignore[index]
                f"{sum(1 for row in met if row.met)} of {len(met)} goals met.\n\n"
                + report.markdown(rows) + "\n\n"
                + "".join(f"- skipped: {line}\n" for line in r.skipped)
                + f"\n![growth](results/{png.name})\n")
        report.update_readme(HERE / "README.md", body)
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="the small profile (the test suite's)")
    parser.add_argument("--results", default=str(HERE / "results"), help="folder of the JSON record and the plot")
    parser.add_argument("--readme", action="store_true", help="write the table into bench/README.md")
    parser.add_argument("--only", action="append",
                        choices=["seeds", "ws", "writes", "memory", "context", "shell", "brokers", "floors"],
                        help="run only this part (repeatable)")
    return trio.run(run, parser.parse_args())


if __name__ == "__main__":
    raise SystemExit(main())
