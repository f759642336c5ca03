"""``python -m bench.pg_store``: single-process durable writes, PostgreSQL store against SQLite.

Two levels, each on both backends:

* the backend alone: ``apply`` of appends (one result and its event each) from one thread, one
  transaction per call of 1 or 64 appends, as the store actor's group commit makes them;
  SQLite in both of its modes: NORMAL does not sync the disk at each commit, FULL does, as
  PostgreSQL does by default (``synchronous_commit = on``): compare PostgreSQL with FULL;
* the whole server: ``orchestra serve`` (SQLite in its data dir, or ``--store postgresql://``),
  writers over WebSocket ``result.store`` (8 in flight each), as ``python -m bench`` measures;
* PostgreSQL only: writers on connections of their own (as processes would be) taking cursors
  in the database (``AllocatedAppend``), all on one project or each on its own: the cost of
  one hot project's lock.

Besides writes/s it prints CPU per write: of this process or the server, and of the PostgreSQL
backend serving it (read from /proc, so the database must run on this machine). On a shared
2-core machine the client, the server and PostgreSQL compete for the cores: compare CPU per
write as well as the rates. Needs a PostgreSQL at ``--url`` (default the tests' one, trust
authentication); the bench works in a schema of its own, dropped at the end.
"""

from __future__ import annotations

import argparse
import os
import secrets
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson
import psycopg
import trio
from orchestra.actors.store import AppendBatch, EventRow, ResultRow, SQLiteBackend
from orchestra.actors.store_postgres import AllocatedAppend, PostgresBackend
from rich.console import Console
from rich.table import Table

from bench.procs import Pinning, Server, orchestra
from bench.wsload import results_per_second

TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process so far (its threads included)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


@contextmanager
def schema(base: str) -> Iterator[tuple[str, str]]:
    """A store URL in a fresh schema, and the application_name its connections carry."""
    name = f"bench_{secrets.token_hex(4)}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {name}")
    sep = "&" if "?" in base else "?"
    try:
        yield f"{base}{sep}options={quote(f'-csearch_path={name}')}&application_name={name}", name
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA {name} CASCADE")


def pg_cpu(base: str, application_name: str) -> float:
    """CPU seconds so far of the PostgreSQL backends serving ``application_name``."""
    with psycopg.connect(base, autocommit=True) as conn:
        pids = [r[0] for r in conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE application_name = %s", (application_name,))]
    total = 0.0
    for pid in pids:
        try:
            total += cpu_seconds(pid)
        except (FileNotFoundError, PermissionError):  # not on this machine
            return float("nan")
    return total


# -- the backend alone --


def appends(n: int, batch: int, start: int = 0) -> Iterator[list[Any]]:
    """``n`` appends of one result and its event, in transactions of ``batch``."""
    body = orjson.dumps({"agent_id": "a", "agent_type": "python-specialist", "issue_id": "bench",
                         "result": {"status": "success", "n": 0}, "pad": "x" * 200})
    cursor = start
    for first in range(0, n, batch):
        writes = []
        for i in range(first, min(n, first + batch)):
            cursor += 1
            rid = f"r{start}-{i}"
            writes.append(AppendBatch(
                "bench", cursor,
                (ResultRow(rid, "bench", "bench", "python-specialist", "a", "success", "t", body),),
                (EventRow("bench", cursor, "agent_completed", 9e9, body),),
            ))
        yield writes


def backend_rate(backend: Any, n: int, batch: int, pg_cpu_now: Callable[[], float] | None) -> tuple[float, float, float]:
    """(writes/s, this process's CPU µs per write, PostgreSQL's CPU µs per write)."""
    backend.open()
    try:
        # warm up, and take the cursors the measured run continues from
        for writes in appends(min(n, 256), batch, start=0):
            backend.apply(writes, [])
        pg0 = pg_cpu_now() if pg_cpu_now else float("nan")
        cpu0, t0 = time.process_time(), time.perf_counter()
        for writes in appends(n, batch, start=10**9):
            outcomes, _ = backend.apply(writes, [])
            assert all(o is None for o in outcomes), outcomes[:1]
        elapsed, cpu = time.perf_counter() - t0, time.process_time() - cpu0
        pg = (pg_cpu_now() - pg0) if pg_cpu_now else float("nan")
    finally:
        backend.close()
    return n / elapsed, cpu / n * 1e6, pg / n * 1e6


# -- several connections taking cursors of one project (AllocatedAppend) --


def allocating_rate(url: str, connections: int, per_connection: int, hot: bool) -> tuple[float, float]:
    """(appends/s, p99 ms of one append) of ``connections`` writers, each its own connection
    (as separate processes would be), appending single events with cursors the database takes:
    all to one project (``hot``) or each to its own."""
    latencies: list[float] = []
    errors: list[BaseException] = []
    start = threading.Barrier(connections + 1)

    def writer(n: int) -> None:
        b = PostgresBackend(url)
        b.open()
        project = "hot" if hot else f"p{n}"
        body = orjson.dumps({"cursor": "0", "n": n})
        try:
            start.wait()
            for _ in range(per_connection):
                t = time.perf_counter()
                (first,), _ = b.apply([AllocatedAppend(project, 0, (), (EventRow(project, 1, "tick", 9e9, body),))], [])
                latencies.append(time.perf_counter() - t)
                assert isinstance(first, int), first
        except BaseException as exc:  # reported by the caller
            errors.append(exc)
        finally:
            b.close()

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(connections)]
    for t in threads:
        t.start()
    start.wait()
    t0 = time.perf_counter()
    for t in threads:
        t.join()
    elapsed = time.perf_counter() - t0
    if errors:
        raise errors[0]
    latencies.sort()
    return connections * per_connection / elapsed, latencies[int(0.99 * (len(latencies) - 1))] * 1e3


# -- the whole server --


@contextmanager
def server(extra: list[str]) -> Iterator[Server]:
    """``orchestra serve`` in a fresh data dir (not pinned: PostgreSQL shares the cores)."""
    with orchestra(Path(tempfile.mkdtemp(prefix="orchestra-bench-")), Pinning(frozenset(), frozenset()),
                   *extra) as s:
        yield s


def server_rate(extra: list[str], writers: int, per_writer: int,
                pg_cpu_now: Callable[[], float] | None) -> tuple[float, float, float]:
    """(durable results/s, server CPU µs per result, PostgreSQL's CPU µs per result)."""
    with server(extra) as s:
        trio.run(results_per_second, s, writers, max(8, per_writer // 10))  # warm up
        pg0 = pg_cpu_now() if pg_cpu_now else float("nan")
        cpu0 = cpu_seconds(s.pid)
        rate, _ = trio.run(results_per_second, s, writers, per_writer)
        cpu = cpu_seconds(s.pid) - cpu0
        pg = (pg_cpu_now() - pg0) if pg_cpu_now else float("nan")
    n = writers * per_writer
    return rate, cpu / n * 1e6, pg / n * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.pg_store", description=__doc__.split("\n")[0])
    parser.add_argument("--url", default=os.environ.get("ORCHESTRA_TEST_POSTGRES", "postgresql://127.0.0.1:5432/test"))
    parser.add_argument("--appends", type=int, default=5000, help="appends per backend run")
    parser.add_argument("--writers", type=int, default=32)
    parser.add_argument("--per-writer", type=int, default=200)
    parser.add_argument("--connections", type=int, default=8, help="writers taking cursors at once")
    args = parser.parse_args()
    console = Console(width=150)
    table = Table(title="durable writes, one process: PostgreSQL store vs SQLite")
    for column in ("what", "store", "writes/s", "client/server CPU µs per write", "PostgreSQL CPU µs per write"):
        table.add_column(column, justify="right" if column != "what" else "left")

    for batch in (1, 64):
        what = f"backend apply, {batch} append{'s' if batch > 1 else ''} per transaction"
        for sync in ("NORMAL", "FULL"):
            with tempfile.TemporaryDirectory() as tmp:
                rate, cpu, _ = backend_rate(SQLiteBackend(Path(tmp) / "b.db", sync), args.appends, batch, None)
            table.add_row(what, f"SQLite ({sync})", f"{rate:,.0f}", f"{cpu:,.0f}", "-")
        with schema(args.url) as (url, name):
            rate, cpu, pg = backend_rate(PostgresBackend(url), args.appends, batch,
                                         lambda a=name: pg_cpu(args.url, a))
        table.add_row(what, "PostgreSQL", f"{rate:,.0f}", f"{cpu:,.0f}", f"{pg:,.0f}")
        console.print(f"  {what}: measured")

    what = f"orchestra serve, {args.writers} writers, result.store"
    for sync in ("normal", "full"):
        rate, cpu, _ = server_rate(["--sync", sync], args.writers, args.per_writer, None)
        table.add_row(what, f"SQLite ({sync.upper()})", f"{rate:,.0f}", f"{cpu:,.0f}", "-")
    with schema(args.url) as (url, name):
        rate, cpu, pg = server_rate(["--store", url], args.writers, args.per_writer,
                                    lambda: pg_cpu(args.url, name))
    table.add_row(what, "PostgreSQL", f"{rate:,.0f}", f"{cpu:,.0f}", f"{pg:,.0f}")
    console.print(table)

    hot = Table(title="cursors taken by the database (AllocatedAppend), one event per transaction")
    for column in ("writers (own connections)", "projects", "appends/s", "p99 ms"):
        hot.add_column(column, justify="right")
    for projects in ("one (hot)", "one each"):
        with schema(args.url) as (url, _):
            rate, p99 = allocating_rate(url, args.connections, args.appends // 10, projects == "one (hot)")
        hot.add_row(str(args.connections), projects, f"{rate:,.0f}", f"{p99:,.1f}")
    console.print(hot)
    console.print(f"machine: {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; "
                  f"threads here: {threading.active_count()}")


if __name__ == "__main__":
    main()
