"""Server instructions per WebSocket operation under callgrind: ``python -m bench.ws_callgrind``.

Starts ``orchestra serve`` (this tree, and any ``--side NAME=PYTHONPATH``) under
``valgrind --tool=callgrind`` with instrumentation off, runs a warm-up load, then for each load
switches instrumentation on, zeroes the counters, runs it, dumps and reads the total
instructions of every thread of the server (the store's thread included), divided by the
operations. Instruction counts do not move with the machine's load the way CPU time does, so
old and new code compare in one run each (``valgrind`` is needed; each load runs 50-100x
slower than natively).

Loads: ``single`` (durable ``result.store`` from ``--writers`` connections, 8 in flight each),
``ping``, ``fanout`` (one publisher, ``--subscribers`` connections; per delivery).
"""

from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import tempfile
from contextlib import ExitStack
from pathlib import Path

import trio

from . import wsload
from .procs import PY, SECRET, Pinning, Server, server, token


def _start(stack: ExitStack, tmp: Path, name: str, pythonpath: str | None) -> Server:
    """Orchestra (``-P``: its package from ``pythonpath`` or the install, never the working
    directory), or with ``name`` "bare" the bare baselines' process (``pythonpath`` its mode)."""
    env = {"ORCHESTRA_DATA_DIR": str(tmp / name), "ORCHESTRA_JWT_SECRET": SECRET}
    out = tmp / f"cg-{name}.out"
    if name.startswith("bare"):
        program = [PY, "-m", "bench.baselines", pythonpath or "echo"]
    else:
        if pythonpath:
            env["PYTHONPATH"] = pythonpath
        program = [PY, "-P", "-c", "import sys; from orchestra.transport.cli import main; sys.exit(main())",
                   "serve", "--port", "0", "--no-rate-limits", "--log-level", "INFO"]
    args = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}", *program]
    return stack.enter_context(server(args, Pinning(frozenset(), frozenset()), env))


def _control(pid: int, *flags: str) -> str:
    return subprocess.run(["callgrind_control", *flags, str(pid)], capture_output=True, text=True,
                          check=True).stdout


def _total(out: Path) -> int:
    """The instructions of the newest dump of ``out``'s runs (every thread's part added)."""
    total = 0
    dumps = sorted(out.parent.glob(out.name + "*"), key=lambda p: p.stat().st_mtime)
    newest = dumps[-1]
    stem = re.sub(r"-\d+$", "", newest.name)  # a dump per thread: name.N-T
    for path in out.parent.glob(stem + "*"):
        for line in path.read_text(errors="replace").splitlines():
            if line.startswith("totals:") or line.startswith("summary:"):
                total += int(line.split()[1])
                break
        path.unlink()
    return total


async def _load(what: str, s: Server, args: argparse.Namespace, orchestra: bool) -> int:
    if what == "single":
        await wsload.results_per_second(s, args.writers, args.requests)
        return args.writers * args.requests
    if what == "ping":
        await wsload.ping_rtt(s.port, token() if orchestra else None, args.pings, warm=0)
        return args.pings
    await wsload.fanout(s, args.subscribers, args.events, orchestra)
    return args.subscribers * args.events


async def _measure(what: str, s: Server, out: Path, args: argparse.Namespace, orchestra: bool) -> float:
    _control(s.pid, "-i", "on")
    _control(s.pid, "-z")
    ops = await _load(what, s, args, orchestra)
    _control(s.pid, "-d")
    _control(s.pid, "-i", "off")
    await trio.sleep(0.5)
    return _total(out) / ops


async def main(args: argparse.Namespace) -> None:
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    Pinning.plan().pin_self()
    with tempfile.TemporaryDirectory() as tmpdir, ExitStack() as stack:
        tmp = Path(tmpdir)
        sides: dict[str, str | None] = {"new": None}
        for side in args.side:
            name, _, path = side.partition("=")
            sides[name] = path
        if args.bare:
            sides["bare-echo"], sides["bare-broadcast"] = "echo", "broadcast"
        servers = {name: _start(stack, tmp, name, path) for name, path in sides.items()}
        for name, s in servers.items():  # warm-up, uninstrumented: imports, caches, the first commit
            if name == "bare-broadcast":
                await wsload.fanout(s, 4, 20, False)
                continue
            if name != "bare-echo":
                await wsload.results_per_second(s, 4, 16)
            await wsload.ping_rtt(s.port, None if name == "bare-echo" else token(), 50, warm=0)
        for r in range(args.rounds):
            for what in args.loads or ["single", "ping", "fanout"]:
                row = []
                for name, s in servers.items():
                    if name.startswith("bare") and (what == "single" or (name == "bare-echo") != (what == "ping")):
                        continue
                    per_op = await _measure(what, s, tmp / f"cg-{name}.out", args, not name.startswith("bare"))
                    row.append(f"{name} {per_op / 1000:,.1f}k")
                print(f"round {r + 1} {what:7} instructions per op: " + ", ".join(row), flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.ws_callgrind", description=__doc__)
    # no default list here: argparse checks a list default against the choices and refuses it
    parser.add_argument("loads", nargs="*", choices=["single", "ping", "fanout"],
                        help="the loads to count (default: all three)")
    parser.add_argument("--side", action="append", default=[], metavar="NAME=PYTHONPATH",
                        help="one more Orchestra to compare (any number)")
    parser.add_argument("--bare", action="store_true",
                        help="also the bare echo (ping) and fair broadcast (fanout) of bench/baselines.py")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--writers", type=int, default=16)
    parser.add_argument("--requests", type=int, default=48, help="per writer")
    parser.add_argument("--pings", type=int, default=300)
    parser.add_argument("--subscribers", type=int, default=119)
    parser.add_argument("--events", type=int, default=30)
    trio.run(main, parser.parse_args())
