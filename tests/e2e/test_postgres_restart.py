"""A restart of PostgreSQL under two `orchestra serve` processes: requests answer 503 while it is
down, nothing acknowledged is lost, the processes recover by themselves, and no process takes
the outage for the loss of another (their agents run on).

The test runs its own throwaway PostgreSQL cluster (``initdb`` + ``pg_ctl`` on a free port in a
tmp dir, as the ``postgres`` user when run as root), so restarting it disturbs nobody else's
tests. Skipped in one line where there are no PostgreSQL server binaries (or no way to run
them)."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest
import trio

from tests.e2e.test_postgres_multi import (
    Subscriber,
    _agent_args,
    _end_leftover,
    _record_until,
    _spawn_sleeper,
    _stop,
    _until,
)
from tests.e2e.test_process import Proc, client, token

pytest.importorskip("psycopg", reason="PostgreSQL tests skipped: psycopg is not installed")

from orchestra.actors.agents import ProcessIdentity, identity_of  # noqa: E402


class Cluster:
    """A PostgreSQL cluster of this test's own: ``start``, ``stop`` (fast: the connections are
    cut), ``url``."""

    def __init__(self, root: Path) -> None:
        found = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb")) or [shutil.which("initdb") or ""]
        if not found[-1]:
            pytest.skip("PostgreSQL restart test skipped: no initdb (PostgreSQL server binaries)")
        self.bin = Path(found[-1]).parent
        self.as_user: list[str] = []
        if os.geteuid() == 0:  # initdb and postgres refuse root: run them as postgres
            try:
                pwd.getpwnam("postgres")
            except KeyError:
                pytest.skip("PostgreSQL restart test skipped: running as root without a 'postgres' user")
            if shutil.which("runuser") is None:
                pytest.skip("PostgreSQL restart test skipped: running as root without runuser")
            self.as_user = ["runuser", "-u", "postgres", "--"]
            shutil.chown(root, "postgres")
        self.root = root
        self.data = root / "data"
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.url = f"postgresql://postgres@127.0.0.1:{self.port}/postgres"
        self._run("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres", "--no-sync")

    def _run(self, tool: str, *args: str) -> None:
        out = subprocess.run([*self.as_user, str(self.bin / tool), *args], capture_output=True,
                             text=True, timeout=120)
        assert out.returncode == 0, (tool, out.stdout, out.stderr)

    def start(self) -> None:
        options = (f"-p {self.port} -k {self.root} -c listen_addresses=127.0.0.1 -c fsync=off"
                   " -c max_connections=50")
        self._run("pg_ctl", "-D", str(self.data), "-o", options, "-l", str(self.root / "log"), "-w", "start")

    def stop(self, mode: str = "fast") -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", mode, "-w", "stop")


async def _stored(port: int, tok: str) -> list[str]:
    """Every stored ``tick`` event's cursor, read in pages from the process on ``port``."""
    out: list[str] = []
    since = "0"
    while True:
        r = await client(port).request("GET", f"/api/events/wait/tick?since={since}&limit=1000&timeout=0", tok)
        assert r.status == 200, r.body
        page = [e["cursor"] for e in r.json()["events"]]
        if not page:
            return out
        out += page
        since = page[-1]


@pytest.fixture
def cluster():
    # a directory of its own under the system's tmp (the postgres user must reach it: pytest's
    # tmp dirs are the running user's only)
    root = Path(tempfile.mkdtemp(prefix="orchestra-pg-"))
    try:
        c = Cluster(root)
        c.start()
        try:
            yield c
        finally:
            try:
                c.stop("immediate")
            except AssertionError:
                pass  # already stopped
    finally:
        shutil.rmtree(root, ignore_errors=True)


async def test_a_restart_of_postgresql_answers_503_meanwhile_loses_nothing_acknowledged_and_the_processes_recover(
        tmp_path, cluster):
    url = cluster.url
    args = _agent_args(tmp_path)
    a = Proc(tmp_path / "a", "--store", url, *args)
    procs = [a]
    ident: ProcessIdentity | None = None
    try:
        ports = [await a.ready()]
        (tmp_path / "b").mkdir()
        shutil.copy(tmp_path / "a" / "jwt.secret", tmp_path / "b" / "jwt.secret")
        procs.append(Proc(tmp_path / "b", "--store", url, *args))
        ports.append(await procs[1].ready())
        tok = token(tmp_path / "a", "--project", "p1", "--agent-type", "python-specialist")
        arch = token(tmp_path / "a", "--project", "p1", "--agent-type", "chief-architect", "--sub", "arch")
        agent = await _spawn_sleeper(ports[0], arch)
        ident = identity_of(agent["process_id"])

        acked: list[str] = []
        statuses: list[list[int]] = [[], [], [], []]
        done = trio.Event()

        async def writer(w: int) -> None:
            h = client(ports[w % 2])
            i = 0
            while not done.is_set():
                r = await h.request("POST", "/api/events/tick", tok, {"data": {"w": w, "i": i}})
                statuses[w].append(r.status)
                if r.status == 200:
                    acked.append(r.json()["cursor"])
                else:
                    assert r.status == 503, r.body
                i += 1
                await trio.sleep(0.01)

        sub = Subscriber(ports[1], tok)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(sub.run)
            await sub.ready.wait()
            async with trio.open_nursery() as writers:
                for w in range(4):
                    writers.start_soon(writer, w)
                await _until(lambda: len(acked) >= 40)
                await trio.to_thread.run_sync(cluster.stop)  # the database goes away
                down = [len(s) for s in statuses]
                await trio.sleep(2.0)
                # meanwhile every process answers, 503
                assert all(503 in s[n:] and 200 not in s[n + 2:] for s, n in zip(statuses, down, strict=True)), statuses
                await trio.to_thread.run_sync(cluster.start)
                back = len(acked)
                # both processes recover by themselves: every writer is answered 200 again
                await _until(lambda: all(s[-1] == 200 for s in statuses) and len(acked) >= back + 40, 60)
                done.set()
            everything = sorted(acked)
            assert len(everything) == len(set(everything))  # no cursor taken twice
            # every acknowledged event is stored, in cursor order, read from either process
            for port in ports:
                stored = await _stored(port, tok)
                assert stored == sorted(stored) and set(everything) <= set(stored)
            # the subscriber on the second process got every one, once, in order
            await _until(lambda: set(everything) <= set(sub.cursors), 30)
            assert sub.cursors == sorted(set(sub.cursors))
            nursery.cancel_scope.cancel()
        # no process took the outage for another's loss: the agent runs on, owned by the first
        await trio.sleep(4)  # more than the lease's expiry after the database came back
        record = await _record_until(ports[1], arch, agent["agent_id"], lambda r: True)
        assert record["state"] == "running", record
        assert all(code in (200, 503) for s in statuses for code in s)
    finally:
        _stop(procs)
        _end_leftover(ident)
    for p in procs:
        assert p.p.returncode in (0, -signal.SIGINT), p.stderr()[-2000:]
