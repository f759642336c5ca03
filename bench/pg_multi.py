"""``python -m bench.pg_multi``: one against two ``orchestra serve`` processes on one PostgreSQL.

* Durable writes (WebSocket ``result.store``, ``--window`` in flight per writer), the writers
  spread over the processes: over many projects (a project per writer), then all on one hot
  project (where the processes' appends meet on the project's lock: conflicts, then cursors
  taken by the database). Besides writes/s: the servers' CPU per write (summed over the
  processes) and PostgreSQL's, read from /proc.
* Publish -> deliver latency: a subscriber on the first process; the publisher on the same
  process, then on the other (the event reaches the subscriber through NOTIFY and a read of the
  committed rows). p50 / p99 of the time from sending the publish to receiving the event.

On a shared 2-core machine the bench, PostgreSQL and the servers compete for the cores, so two
processes cannot add throughput here; compare the CPU per write (what scales with cores when each
process gets its own). Needs a PostgreSQL at ``--url`` on this machine; works in a schema of its
own, dropped at the end.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import orjson
import trio
from rich.console import Console
from rich.table import Table

from bench.pg_store import cpu_seconds, pg_cpu, schema
from bench.procs import Pinning, Server, orchestra, pct, token
from bench.wsload import ws_open


@contextmanager
def servers(n: int, url: str) -> Iterator[list[Server]]:
    """``n`` processes on the store ``url`` (not pinned: PostgreSQL shares the cores)."""
    with ExitStack() as stack:
        yield [stack.enter_context(orchestra(Path(tempfile.mkdtemp(prefix="orchestra-bench-")),
                                             Pinning(frozenset(), frozenset()), "--store", url))
               for _ in range(n)]


async def writes(procs: list[Server], writers: int, per_writer: int, projects: int, window: int) -> float:
    """Durable results/s; writer ``i`` on process ``i % len(procs)``, project ``i % projects``."""
    async def writer(i: int) -> None:
        port = procs[i % len(procs)].port
        async with ws_open(port, token(project=f"p{i % projects}", sub=f"w{i}")) as ws:
            body = {"op": "result.store", "agent_id": f"w{i}", "agent_type": "python-specialist",
                    "issue_id": "bench", "result": {"status": "success"}}
            sent = recv = 0
            while recv < per_writer:
                while sent < per_writer and sent - recv < window:
                    body["id"] = sent
                    await ws.send_message(orjson.dumps(body).decode())
                    sent += 1
                m = orjson.loads(await ws.get_message())
                if not m.get("ok"):
                    raise RuntimeError(f"write refused: {m}")
                recv += 1

    t = time.perf_counter()
    async with trio.open_nursery() as n:
        for i in range(writers):
            n.start_soon(writer, i)
    return writers * per_writer / (time.perf_counter() - t)


async def latency(sub_port: int, pub_port: int, n: int) -> list[float]:
    """Seconds from sending each publish to the subscriber receiving its event."""
    got: list[float] = []
    async with ws_open(sub_port, token(sub="sub")) as sub, ws_open(pub_port, token(sub="pub")) as pub:
        await sub.send_message('{"id":1,"op":"event.subscribe","event_types":["lat"]}')
        await sub.get_message()
        for i in range(n + 20):
            sent = time.perf_counter()
            await pub.send_message(orjson.dumps(
                {"id": i, "op": "event.publish", "event_type": "lat", "data": {"i": i}}).decode())
            while True:  # the event (its answer to the publisher may come before or after)
                m = orjson.loads(await sub.get_message())
                if m.get("op") == "event":
                    break
            if i >= 20:  # warm-up left out
                got.append(time.perf_counter() - sent)
            await pub.get_message()
    return got


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.pg_multi", description=__doc__.split("\n")[0])
    parser.add_argument("--url", default=os.environ.get("ORCHESTRA_TEST_POSTGRES", "postgresql://127.0.0.1:5432/test"))
    parser.add_argument("--writers", type=int, default=16)
    parser.add_argument("--per-writer", type=int, default=150)
    parser.add_argument("--window", type=int, default=4, help="writes in flight per writer")
    parser.add_argument("--samples", type=int, default=300, help="publishes timed per latency row")
    args = parser.parse_args()
    console = Console(width=150)

    table = Table(title="durable writes (result.store over WebSocket), processes on one PostgreSQL")
    for column in ("load", "processes", "writes/s", "servers' CPU µs per write", "PostgreSQL CPU µs per write"):
        table.add_column(column, justify="right" if column != "load" else "left")
    for load, projects in ((f"{args.writers} projects", args.writers), ("one hot project", 1)):
        for n in (1, 2):
            with schema(args.url) as (url, name), servers(n, url) as procs:
                trio.run(writes, procs, args.writers, 10, projects, args.window)  # warm up
                cpu0 = sum(cpu_seconds(p.pid) for p in procs)
                pg0 = pg_cpu(args.url, name)
                rate = trio.run(writes, procs, args.writers, args.per_writer, projects, args.window)
                cpu = sum(cpu_seconds(p.pid) for p in procs) - cpu0
                pg = pg_cpu(args.url, name) - pg0
            total = args.writers * args.per_writer
            table.add_row(load, str(n), f"{rate:,.0f}", f"{cpu / total * 1e6:,.0f}", f"{pg / total * 1e6:,.0f}")
            console.print(f"  {load}, {n} process(es): measured")
    console.print(table)

    lat = Table(title="publish -> deliver, one subscriber, publishes one at a time")
    for column in ("publisher", "p50 ms", "p99 ms"):
        lat.add_column(column, justify="right" if column != "publisher" else "left")
    with schema(args.url) as (url, _), servers(2, url) as procs:
        for what, pub in (("same process", procs[0]), ("other process", procs[1])):
            got = trio.run(latency, procs[0].port, pub.port, args.samples)
            lat.add_row(what, f"{pct(got, 0.5) * 1e3:.2f}", f"{pct(got, 0.99) * 1e3:.2f}")
    console.print(lat)
    console.print(f"machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
