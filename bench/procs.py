"""The processes of a bench run: servers pinned to one core, the load generator to the other.

Every server (Orchestra and each bare baseline) is a child process that prints
``listening on http://127.0.0.1:PORT``; its CPU time and resident memory are read from
``/proc/<pid>``. With two or more cores the servers run on core 0 and this process (and the
load tools it starts, such as wrk) on the others, so client and server do not take turns on one
core; with one core nothing is pinned and the run says so.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import jwt

PY = sys.executable
SECRET = "bench-secret-bench-secret-bench-secret"
TICK = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class Pinning:
    """Which cores the servers and the load generator run on (empty: not pinned)."""

    server: frozenset[int]
    load: frozenset[int]

    @classmethod
    def plan(cls) -> Pinning:
        cores = sorted(os.sched_getaffinity(0))
        if len(cores) < 2:
            return cls(frozenset(), frozenset())
        return cls(frozenset(cores[:1]), frozenset(cores[1:]))

    def describe(self) -> str:
        if not self.server:
            return "not pinned (one core available)"
        return f"servers on core {sorted(self.server)}, load generator on {sorted(self.load)}"

    def pin_self(self) -> None:
        if self.load:
            os.sched_setaffinity(0, self.load)

    def server_preexec(self):  # type: ignore[no-untyped-def]
        cores = self.server
        if not cores:
            return None
        return lambda: os.sched_setaffinity(0, cores)

    def load_preexec(self):  # type: ignore[no-untyped-def]
        cores = self.load
        if not cores:
            return None
        return lambda: os.sched_setaffinity(0, cores)


@dataclass
class Server:
    proc: subprocess.Popen[str]
    port: int

    @property
    def pid(self) -> int:
        return self.proc.pid

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.pid)

    def rss_mb(self) -> float:
        return rss_mb(self.pid)

    def sched_seconds(self) -> tuple[float, float]:
        return sched_seconds(self.pid)


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of every thread of ``pid`` so far (``/proc/<pid>/stat``)."""
    raw = Path(f"/proc/{pid}/stat").read_text()
    fields = raw.rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICK


def sched_seconds(pid: int) -> tuple[float, float]:
    """Seconds the threads of ``pid`` ran on a CPU and waited, runnable, for one
    (``/proc/<pid>/task/*/schedstat``): a server that waited long for a CPU was held back by
    its neighbours on the core, not by its own work. Threads that ended are not counted."""
    run = wait = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            on_cpu, runnable, _ = (task / "schedstat").read_text().split()
        except (OSError, ValueError):
            continue
        run += int(on_cpu)
        wait += int(runnable)
    return run / 1e9, wait / 1e9


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


@contextmanager
def server(args: list[str], pinning: Pinning, env: dict[str, str] | None = None) -> Iterator[Server]:
    p = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                         env={**os.environ, **(env or {})}, preexec_fn=pinning.server_preexec())
    try:
        assert p.stdout is not None
        line = p.stdout.readline()
        if not line.startswith("listening on"):
            raise RuntimeError(f"{args} did not start: {line!r}")
        yield Server(p, int(line.rsplit(":", 1)[1]))
    finally:
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


@contextmanager
def orchestra(data_dir: Path, pinning: Pinning, *extra: str) -> Iterator[Server]:
    env = {"ORCHESTRA_DATA_DIR": str(data_dir), "ORCHESTRA_JWT_SECRET": SECRET}
    args = [PY, "-c", "import sys; from orchestra.transport.cli import main; sys.exit(main())",
            "serve", "--port", "0", "--no-rate-limits", "--log-level", "INFO", *extra]  # serve's default: an access line a request
    with server(args, pinning, env) as s:
        yield s


@contextmanager
def baseline(mode: str, pinning: Pinning) -> Iterator[Server]:
    with server([PY, "-m", "bench.baselines", mode], pinning) as s:
        yield s


def token(project: str = "bench", agent_type: str = "python-specialist", sub: str = "bench") -> str:
    claims = {"sub": sub, "agent_type": agent_type, "project_id": project, "exp": int(time.time()) + 3600}
    return jwt.encode(claims, SECRET, algorithm="HS256")


def pct(data: list[float], p: float) -> float:
    data = sorted(data)
    return data[min(len(data) - 1, int(p * len(data)))]
