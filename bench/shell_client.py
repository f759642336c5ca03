"""``python -m bench.shell_client``: the start-up cost of ``orchestra agent`` next to ``curl``.

Two figures, each over N runs of a fresh process (what a shell script pays per call):

- *first request*: from starting the process to the first bytes of its request arriving at a
  listening socket (a stub that answers at once), so the server's work is not in it. Goal:
  under 150 ms for ``orchestra agent``.
- *round trip*: ``orchestra agent get ID`` and ``curl`` fetching the same stored result from a
  real ``orchestra serve`` until the process has exited. Goal: at most 2x curl. The floor row,
  the interpreter starting and exiting with nothing to do, shows how much of it any Python
  client pays before its first line runs.

The machine is shared and noisy: compare the ratios, not the absolute numbers.
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

SECRET = "bench-secret-bench-secret-bench-secret"
GOAL_FIRST_REQUEST_MS = 150.0
GOAL_RATIO = 2.0


def orchestra_command() -> list[str]:
    script = Path(sys.executable).parent / "orchestra"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from orchestra.console import main; sys.exit(main())"]


def child_env() -> dict[str, str]:
    """The environment of the measured processes: bytecode may be written and read, as it is for
    an installed package (a PYTHONDONTWRITEBYTECODE environment would otherwise make every run
    of a source checkout compile the client again)."""
    return {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}


def pct(data: list[float], p: float) -> float:
    data = sorted(data)
    return data[min(len(data) - 1, int(p * len(data)))]


@contextmanager
def server(data_dir: Path) -> Iterator[int]:
    env = {**os.environ, "ORCHESTRA_DATA_DIR": str(data_dir), "ORCHESTRA_JWT_SECRET": SECRET}
    p = subprocess.Popen([*orchestra_command(), "serve", "--port", "0", "--no-rate-limits", "--log-level", "WARNING"],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    try:
        line = p.stdout.readline() if p.stdout else ""
        if not line.startswith("listening on"):
            raise RuntimeError(f"orchestra serve did not start: {line!r}")
        yield int(line.rsplit(":", 1)[1])
    finally:
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()


def token(data_dir: Path) -> str:
    env = {**os.environ, "ORCHESTRA_DATA_DIR": str(data_dir), "ORCHESTRA_JWT_SECRET": SECRET}
    out = subprocess.run([*orchestra_command(), "token", "--project", "bench", "--agent-type", "python-specialist",
                          "--sub", "bench-1"], env=env, capture_output=True, text=True, check=True)
    return out.stdout.strip()


def round_trips(argvs: list[list[str]], env: dict[str, str], n: int) -> list[list[float]]:
    """Seconds from start to exit of each of ``argvs``, n times each (each must exit 0); the
    commands take turns, so that a busy moment of the machine falls on all of them alike."""
    out: list[list[float]] = [[] for _ in argvs]
    for _ in range(n):
        for argv, times in zip(argvs, out, strict=True):
            t = time.perf_counter()
            subprocess.run(argv, env=env, stdout=subprocess.DEVNULL, check=True)
            times.append(time.perf_counter() - t)
    return out


def first_requests(argv_for: callable, n: int) -> list[float]:
    """Seconds from start of ``argv_for(port)`` to the first bytes of its request at a stub server."""
    body = b'{"ok":true}'
    answer = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s" % (len(body), body)
    out = []
    arrived: list[float] = []
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]

        def serve_one() -> None:
            conn, _ = listener.accept()
            with conn:
                data = conn.recv(65536)
                arrived.append(time.perf_counter())
                while b"\r\n\r\n" not in data:
                    data += conn.recv(65536)
                conn.sendall(answer)

        for _ in range(n):
            thread = threading.Thread(target=serve_one)
            thread.start()
            t = time.perf_counter()
            subprocess.run(argv_for(port), stdout=subprocess.DEVNULL, check=True,
                           env={**child_env(), "ORCHESTRA_URL": f"http://127.0.0.1:{port}", "ORCHESTRA_TOKEN": "t.t.t"})
            thread.join()
            out.append(arrived[-1] - t)
    return out


def row(name: str, data: list[float], base: list[float] | None) -> str:
    p50, p99 = pct(data, 0.5) * 1000, pct(data, 0.99) * 1000
    ratio = f"{statistics.median(data) / statistics.median(base):.2f}x" if base else "-"
    return f"| {name:<34} | {p50:8.1f} | {p99:8.1f} | {ratio:>8} |"


def figures(n: int) -> dict[str, list[float] | None]:
    """Seconds of each run: ``first_agent``/``first_curl`` (start to first request bytes at a
    stub), ``trip_agent``/``trip_curl`` (start to exit, fetching a stored result from a real
    server) and ``bare`` (the interpreter doing nothing); the curl figures are None without curl."""
    curl = shutil.which("curl")
    agent = [*orchestra_command(), "agent"]
    with tempfile.TemporaryDirectory() as tmp, server(Path(tmp)) as port:
        tok = token(Path(tmp))
        url = f"http://127.0.0.1:{port}"
        env = {**child_env(), "ORCHESTRA_URL": url, "ORCHESTRA_TOKEN": tok, "ORCHESTRA_ISSUE_ID": "bench-1"}
        stored = subprocess.run([*agent, "result", "--status", "success"], env=env, capture_output=True, check=True)
        rid = stored.stdout.split(b'"id":"', 1)[1].split(b'"', 1)[0].decode()
        get = [*agent, "get", rid]
        curl_get = [curl, "-sf", "-H", f"Authorization: Bearer {tok}", f"{url}/api/results/{rid}"] if curl else None
        argvs = [get, [sys.executable, "-c", "pass"], *([curl_get] if curl_get else [])]
        round_trips(argvs, env, 2)  # warm the page cache (and write the client's bytecode)
        trip_agent, bare, *rest = round_trips(argvs, env, n)
        trip_curl = rest[0] if rest else None
    first_agent = first_requests(lambda port: [*agent, "get", "x"], n)
    first_curl = first_requests(lambda port: [curl, "-sf", f"http://127.0.0.1:{port}/api/results/x"], n) \
        if curl else None

    return {"first_agent": first_agent, "first_curl": first_curl, "trip_agent": trip_agent,
            "trip_curl": trip_curl, "bare": bare}


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.shell_client", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=30, help="runs of each command (default 30)")
    args = parser.parse_args()
    if shutil.which("curl") is None:
        print("curl not found: measuring orchestra agent alone (no ratio)")
    f = figures(args.n)
    first_agent, first_curl, trip_agent, trip_curl, bare = (
        f["first_agent"], f["first_curl"], f["trip_agent"], f["trip_curl"], f["bare"])
    assert first_agent is not None and trip_agent is not None and bare is not None
    print(f"\n{args.n} runs each, milliseconds (ratio: median / curl's median)\n")
    print(f"| {'what':<34} | {'p50':>8} | {'p99':>8} | {'ratio':>8} |")
    print(f"|{'-' * 36}|{'-' * 10}|{'-' * 10}|{'-' * 10}|")
    print(row("first request: orchestra agent", first_agent, first_curl))
    if first_curl:
        print(row("first request: curl", first_curl, None))
    print(row("round trip: orchestra agent get", trip_agent, trip_curl))
    if trip_curl:
        print(row("round trip: curl", trip_curl, None))
    print(row("floor: python -c pass", bare, trip_curl))
    first_p50 = pct(first_agent, 0.5) * 1000
    print(f"\nfirst request p50 {first_p50:.1f} ms (goal < {GOAL_FIRST_REQUEST_MS:.0f} ms): "
          f"{'met' if first_p50 < GOAL_FIRST_REQUEST_MS else 'NOT met'}")
    if trip_curl:
        ratio = statistics.median(trip_agent) / statistics.median(trip_curl)
        print(f"round trip {ratio:.2f}x curl (goal <= {GOAL_RATIO:g}x): {'met' if ratio <= GOAL_RATIO else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
