"""A/B of the WebSocket figures: ``python -m bench.ws_ab [--base PYTHONPATH] [--rounds N]``.

Runs ``ping``, durable publish->deliver and fan-out to 119 subscribers against the bare echo,
relay and fair broadcast and against
Orchestra (this tree, and with ``--base`` a second Orchestra whose package is found on that
``PYTHONPATH``: older code to compare with), in alternating rounds, so a busy moment of the
shared machine falls on every side alike. Prints per side the p50 and the server's CPU per
operation (``/proc/<pid>/task/*/schedstat``: the time every thread of the server ran on a
CPU over the load, in nanoseconds, divided by the operations), the steadier figure on a loaded machine.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from contextlib import ExitStack
from pathlib import Path

import trio

from . import wsload
from .procs import PY, SECRET, Pinning, Server, baseline, pct, server, token

WHAT = ("ping", "deliver", "fanout")


def _orchestra(stack: ExitStack, tmp: Path, name: str, pinning: Pinning, pythonpath: str | None) -> Server:
    env = {"ORCHESTRA_DATA_DIR": str(tmp / name), "ORCHESTRA_JWT_SECRET": SECRET}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    args = [PY, "-P", "-c", "import sys; from orchestra.transport.cli import main; sys.exit(main())",
            "serve", "--port", "0", "--no-rate-limits", "--log-level", "INFO"]
    return stack.enter_context(server(args, pinning, env))


async def main(args: argparse.Namespace) -> None:
    pinning = Pinning.plan()
    pinning.pin_self()
    with tempfile.TemporaryDirectory() as tmp, ExitStack() as stack:
        sides: dict[str, Server] = {"new": _orchestra(stack, Path(tmp), "new", pinning, None)}
        if args.base:
            sides["base"] = _orchestra(stack, Path(tmp), "base", pinning, args.base)
        for side in args.side:
            name, _, path = side.partition("=")
            sides[name] = _orchestra(stack, Path(tmp), name, pinning, path)
        echo = stack.enter_context(baseline("echo", pinning))
        relay = stack.enter_context(baseline("relay", pinning))
        broadcast = stack.enter_context(baseline("broadcast", pinning))
        lat: dict[tuple[str, str], list[float]] = {}
        cpu: dict[tuple[str, str], list[float]] = {}
        for r in range(args.rounds):
            order = list(sides.items())
            order = order[r % len(order):] + order[:r % len(order)]  # each side first in turn
            for what in WHAT:
                if what in args.skip:
                    continue
                bare = {"ping": echo, "deliver": relay, "fanout": broadcast}[what]
                for name, s in [("bare", bare), *order]:
                    orch = name != "bare"
                    c0 = s.sched_seconds()[0]  # ns resolution (/proc/<pid>/stat counts ticks)
                    if what == "ping":
                        data = await wsload.ping_rtt(s.port, token() if orch else None, args.ping)
                    elif what == "deliver":
                        data = await wsload.publish_deliver(s.port, orch, args.deliver)
                    else:  # deliveries/s, and the CPU per delivery over the publishing span
                        rate, per = await wsload.fanout(s, 119, args.events, orch)
                        lat.setdefault((what, name), []).append(rate)
                        cpu.setdefault((what, name), []).append(per * 1e6)
                        continue
                    used = s.sched_seconds()[0] - c0
                    lat.setdefault((what, name), []).extend(data)
                    ops = len(data) + (200 if what == "ping" else 100)  # with the warm-up
                    cpu.setdefault((what, name), []).append(used / ops * 1e6)
            row = []
            for (what, name), values in cpu.items():
                row.append(f"{what}/{name} {values[-1]:.0f}µs")
            print(f"round {r + 1}: server CPU per op " + ", ".join(row), flush=True)
        print()
        for what in WHAT:
            if what in args.skip:
                continue
            if what == "fanout":
                for name in ["bare", *sides]:
                    rates = " ".join(f"{v:,.0f}" for v in lat[(what, name)])
                    rounds = " ".join(f"{v:.1f}" for v in cpu[(what, name)])
                    print(f"fanout   {name:5} deliveries/s by round: {rates}; server CPU per delivery "
                          f"by round (µs, /proc/<pid>/stat): {rounds}")
                continue
            bare50 = statistics.median(lat[(what, "bare")])
            for name in ["bare", *sides]:
                data = lat[(what, name)]
                p50 = statistics.median(data)
                rounds = " ".join(f"{v:.0f}" for v in cpu[(what, name)])
                print(f"{what:8} {name:5} p50 {p50 * 1e3:.3f} ms ({p50 / bare50:.2f}x bare), "
                      f"p99 {pct(data, 0.99) * 1e3:.3f} ms; server CPU per op by round (µs): {rounds}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.ws_ab", description=__doc__)
    parser.add_argument("--base", help="PYTHONPATH holding the older orchestra package to compare with")
    parser.add_argument("--side", action="append", default=[], metavar="NAME=PYTHONPATH",
                        help="one more Orchestra to compare (any number)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--ping", type=int, default=1000)
    parser.add_argument("--deliver", type=int, default=500)
    parser.add_argument("--events", type=int, default=200, help="events of a fan-out to 119 subscribers")
    parser.add_argument("--skip", nargs="*", default=[], choices=list(WHAT))
    trio.run(main, parser.parse_args())
