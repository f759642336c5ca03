"""``python -m bench.shell_client``: the start-up cost of ``orchestra agent`` next to ``curl``.

Two figures, each over N runs of a fresh process (what a shell script pays per call):

- *first request*: from starting the process to the first bytes of its request arriving at a
  listening socket (a stub that answers at once), so the server's work is not in it. Goal:
  under 150 ms for ``orchestra agent``.
- *round trip*: ``orchestra agent get ID`` and ``curl`` fetching the same stored result from a
  real ``orchestra serve`` until the process has exited. Goal: at most 2x curl. With
  ``--wheel``, the same command once more from a wheel of this tree installed by pip in a fresh
  venv (what ``pip install orchestra-sidecar`` gives an agent), next to the console script of
  this venv (an editable install during development, whose import hook costs every Python
  process of the venv more than curl's whole request).

The floor rows show what any Python client pays before its first line runs: the interpreter
starting and exiting with nothing to do (``python -c pass``, with the venv's .pth files), the
same without the site module (``-S``: no .pth files, no site-packages), and with ``argparse``
imported (which imports ``re``, as pip's console-script wrapper itself does).

Each run's CPU time (user + system, from the kernel's accounting of the exited child) is shown
next to its wall time: the machine is shared and noisy, and CPU time is the steadier of the two.
Compare the ratios, not the absolute numbers.
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
import tomllib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
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


def timed_run(argv: list[str], env: dict[str, str]) -> tuple[float, float]:
    """Seconds from start to exit of ``argv`` (which must exit 0), and its CPU seconds (user +
    system, from the kernel's accounting of the exited child)."""
    t = time.perf_counter()
    with subprocess.Popen(argv, env=env, stdout=subprocess.DEVNULL) as p:
        _, status, usage = os.wait4(p.pid, 0)
        wall = time.perf_counter() - t
        p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        raise subprocess.CalledProcessError(p.returncode, argv)
    return wall, usage.ru_utime + usage.ru_stime


def round_trips(argvs: list[list[str]], env: dict[str, str], n: int) -> list[tuple[list[float], list[float]]]:
    """Wall and CPU seconds from start to exit of each of ``argvs``, n times each (each must exit
    0); the commands take turns, so that a busy moment of the machine falls on all of them alike."""
    out: list[tuple[list[float], list[float]]] = [([], []) for _ in argvs]
    for _ in range(n):
        for argv, (walls, cpus) in zip(argvs, out, strict=True):
            wall, cpu = timed_run(argv, env)
            walls.append(wall)
            cpus.append(cpu)
    return out


@contextmanager
def wheel_install() -> Iterator[Path]:
    """The ``orchestra`` console script of a wheel of this tree, installed by pip (without its
    dependencies: ``orchestra agent`` needs none) in a fresh venv; built from a copy of the tree,
    so that the build leaves nothing in it."""
    layout = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["setuptools"]["package-dir"]
    with tempfile.TemporaryDirectory() as tmp:
        source, dist, venv = Path(tmp) / "src", Path(tmp) / "dist", Path(tmp) / "venv"
        source.mkdir()
        for name in ("pyproject.toml", "README.md", "LICENSE"):
            shutil.copy(ROOT / name, source / name)
        for folder in set(layout.values()):
            shutil.copytree(ROOT / folder, source / folder, ignore=shutil.ignore_patterns("__pycache__"))
        def run(*argv: str) -> None:
            subprocess.run(argv, capture_output=True, check=True, timeout=600)

        run(sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(dist), str(source))
        run(sys.executable, "-m", "venv", str(venv))
        (wheel,) = dist.glob("*.whl")
        run(str(venv / "bin" / "python"), "-m", "pip", "install", "-q", "--no-deps", str(wheel))
        yield venv / "bin" / "orchestra"


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


def row(name: str, data: list[float], base: list[float] | None, cpu: list[float] | None = None,
        cpu_base: list[float] | None = None) -> str:
    p50, p99 = pct(data, 0.5) * 1000, pct(data, 0.99) * 1000
    ratio = f"{statistics.median(data) / statistics.median(base):.2f}x" if base else "-"
    cpu_p50 = f"{statistics.median(cpu) * 1000:.1f}" if cpu else "-"
    cpu_ratio = f"{statistics.median(cpu) / statistics.median(cpu_base):.2f}x" if cpu and cpu_base else "-"
    return f"| {name:<62} | {p50:8.1f} | {p99:8.1f} | {ratio:>8} | {cpu_p50:>8} | {cpu_ratio:>8} |"


#: The floors: what an interpreter of the venv pays with nothing to do, with what pip's
#: console-script wrapper imports before it calls ``main`` (re), and with argparse; key suffix,
#: row name, arguments.
_FLOORS = (("", "python -c pass", ["-c", "pass"]),
           ("_nosite", "python -S -c pass (no site, no .pth)", ["-S", "-c", "pass"]),
           ("_re", "python -c 'import re' (pip's wrapper)", ["-c", "import re"]),
           ("_argparse", "python -c 'import argparse'", ["-c", "import argparse"]))

#: Not shipped, for comparison: the wheel's client run by ``python -S`` with its site-packages
#: put on sys.path by hand (what a launcher without the site module could reach).
_NOSITE_CLIENT = "import sys; sys.path.insert(0, {!r}); from orchestra.console import main; sys.exit(main())"


def figures(n: int, wheel: bool = False) -> dict[str, list[float] | None]:
    """Seconds of each run: ``first_agent``/``first_curl`` (start to first request bytes at a
    stub), ``trip_agent``/``trip_curl`` (start to exit, fetching a stored result from a real
    server), ``bare`` (the interpreter doing nothing) and the other floors of ``_FLOORS``
    (``bare_nosite``, ...); with ``wheel``, ``trip_wheel`` (a wheel install's ``orchestra agent
    get``), ``trip_wheel_nosite`` (``_NOSITE_CLIENT``) and the floors of its venv's interpreter
    (``wheel_bare``, ...). ``cpu_KEY``: the CPU seconds of each run of KEY (round trips and
    floors). The curl figures are None without curl, the wheel's without ``wheel``."""
    curl = shutil.which("curl")
    agent = [*orchestra_command(), "agent"]
    out: dict[str, list[float] | None] = {}
    with tempfile.TemporaryDirectory() as tmp, server(Path(tmp)) as port, \
            (wheel_install() if wheel else _nothing()) as wheel_script:
        tok = token(Path(tmp))
        url = f"http://127.0.0.1:{port}"
        env = {**child_env(), "ORCHESTRA_URL": url, "ORCHESTRA_TOKEN": tok, "ORCHESTRA_ISSUE_ID": "bench-1"}
        stored = subprocess.run([*agent, "result", "--status", "success"], env=env, capture_output=True, check=True)
        rid = stored.stdout.split(b'"id":"', 1)[1].split(b'"', 1)[0].decode()
        runs = {"trip_agent": [*agent, "get", rid], **{f"bare{key}": [sys.executable, *args] for key, _, args in _FLOORS}}
        if wheel_script is not None:
            python = str(wheel_script.parent / "python")
            site = subprocess.run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                                  capture_output=True, text=True, check=True).stdout.strip()
            runs["trip_wheel"] = [str(wheel_script), "agent", "get", rid]
            runs["trip_wheel_nosite"] = [python, "-S", "-c", _NOSITE_CLIENT.format(site), "agent", "get", rid]
            runs.update({f"wheel_bare{key}": [python, *args] for key, _, args in _FLOORS if key != "_nosite"})
        if curl:
            runs["trip_curl"] = [curl, "-sf", "-H", f"Authorization: Bearer {tok}", f"{url}/api/results/{rid}"]
        round_trips(list(runs.values()), env, 2)  # warm the page cache (and write the client's bytecode)
        for key, (walls, cpus) in zip(runs, round_trips(list(runs.values()), env, n), strict=True):
            out[key], out[f"cpu_{key}"] = walls, cpus
    out.setdefault("trip_curl", None)
    out["first_agent"] = first_requests(lambda port: [*agent, "get", "x"], n)
    out["first_curl"] = first_requests(lambda port: [curl, "-sf", f"http://127.0.0.1:{port}/api/results/x"], n) \
        if curl else None
    return out


@contextmanager
def _nothing() -> Iterator[None]:
    yield None


def main() -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.shell_client", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", type=int, default=30, help="runs of each command (default 30)")
    parser.add_argument("--wheel", action="store_true",
                        help="also measure a wheel of this tree installed by pip in a fresh venv (builds it: pip "
                             "fetches the build backend unless it is cached)")
    args = parser.parse_args()
    if shutil.which("curl") is None:
        print("curl not found: measuring orchestra agent alone (no ratio)")
    f = figures(args.n, args.wheel)
    first_agent, first_curl, trip_agent, trip_curl = f["first_agent"], f["first_curl"], f["trip_agent"], f["trip_curl"]
    assert first_agent is not None and trip_agent is not None
    cpu_curl = f.get("cpu_trip_curl")
    print(f"\n{args.n} runs each, milliseconds (ratio: median / curl's median; cpu: the process's user + "
          "system time)\n")
    print(f"| {'what':<62} | {'p50':>8} | {'p99':>8} | {'ratio':>8} | {'cpu p50':>8} | {'cpu ratio':>8} |")
    print(f"|{'-' * 64}|{'-' * 10}|{'-' * 10}|{'-' * 10}|{'-' * 10}|{'-' * 11}|")
    print(row("first request: orchestra agent", first_agent, first_curl))
    if first_curl:
        print(row("first request: curl", first_curl, None))
    print(row("round trip: orchestra agent get (this venv)", trip_agent, trip_curl,
              f["cpu_trip_agent"], cpu_curl))
    if f.get("trip_wheel"):
        print(row("round trip: orchestra agent get (wheel, pip)", f["trip_wheel"] or [], trip_curl,
                  f["cpu_trip_wheel"], cpu_curl))
        print(row("  not shipped: the same by python -S + sys.path", f["trip_wheel_nosite"] or [], trip_curl,
                  f["cpu_trip_wheel_nosite"], cpu_curl))
    if trip_curl:
        print(row("round trip: curl", trip_curl, None, cpu_curl))
    for prefix, where in (("", "this venv"), ("wheel_", "the wheel's venv")):
        for key, name, _ in _FLOORS:
            if f.get(f"{prefix}bare{key}"):
                print(row(f"floor, {where}: {name}", f[f"{prefix}bare{key}"] or [], trip_curl,
                          f[f"cpu_{prefix}bare{key}"], cpu_curl))
    first_p50 = pct(first_agent, 0.5) * 1000
    print(f"\nfirst request p50 {first_p50:.1f} ms (goal < {GOAL_FIRST_REQUEST_MS:.0f} ms): "
          f"{'met' if first_p50 < GOAL_FIRST_REQUEST_MS else 'NOT met'}")
    if trip_curl:
        for key, what in (("trip_agent", "this venv's"), ("trip_wheel", "the wheel's")):
            if f.get(key):
                ratio = statistics.median(f[key] or []) / statistics.median(trip_curl)
                print(f"round trip ({what} console script) {ratio:.2f}x curl (goal <= {GOAL_RATIO:g}x): "
                      f"{'met' if ratio <= GOAL_RATIO else 'NOT met'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
