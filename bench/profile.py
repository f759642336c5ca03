"""Where a hot path's time goes: ``python -m bench.profile single|batch|deliver|fanout|get|post``.

Starts ``orchestra serve`` (pinned like the bench), samples it with py-spy (the ``bench``
extra) while one load of the bench runs, and prints the server's CPU per operation and the
functions of its event-loop thread by inclusive and by own share of the samples, with the
store thread's share. Samples are taken without stopping the server (``--nonblocking``).
"""

from __future__ import annotations

import argparse
import collections
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import trio

from . import httpload, wsload
from .procs import Pinning, Server, orchestra, token


async def load(what: str, s: Server, pinning: Pinning, scale: int) -> int:
    """Run one load; the number of operations it made."""
    if what == "single":
        await wsload.results_per_second(s, 119, 100 * scale)
        return 119 * 100 * scale
    if what == "batch":
        await wsload.results_per_second(s, 119, 400 * scale, batch=20)
        return 119 * 400 * scale
    if what == "deliver":
        return len(await wsload.publish_deliver(s.port, True, 1000 * scale))
    if what == "fanout":
        await wsload.fanout(s, 119, 100 * scale, True)
        return 119 * 100 * scale
    tok = token()
    async with wsload.ws_open(s.port, tok) as ws:
        await ws.send_message('{"id":1,"op":"result.store","agent_id":"a","agent_type":"python-specialist",'
                              '"issue_id":"i","result":{"status":"success"}}')
        import orjson
        rid = orjson.loads(await ws.get_message())["result"]["id"]
    seconds = 3.0 * scale
    if what == "get":
        rps = await trio.to_thread.run_sync(httpload.requests_per_second, s.port, "GET", f"/api/results/{rid}", tok,
                                            seconds, 64, pinning)
    else:
        body = b'{"agent_id":"a","agent_type":"python-specialist","issue_id":"i","result":{"status":"success"}}'
        rps = await trio.to_thread.run_sync(httpload.requests_per_second, s.port, "POST", "/api/results", tok,
                                            seconds, 64, pinning, body)
    return int(rps * seconds)


def summarize(raw: Path, top: int, lines: bool = False, thread_name: str = "MainThread") -> None:
    inclusive: collections.Counter[str] = collections.Counter()
    own: collections.Counter[str] = collections.Counter()
    threads: collections.Counter[str] = collections.Counter()
    main = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        n = int(count)
        thread = re.sub(r"\(\d+\)", "", frames[0]).strip()
        threads[thread] += n
        if thread_name not in thread:
            continue
        main += n
        names = [re.sub(r" \(([^:]*)(:\d+)?\)", r" (\1)", f) for f in frames[1:]]
        for name in set(names):
            inclusive[name] += n
        if names:  # with --lines: the own share by line (where in a function its time goes)
            own[frames[-1] if lines and len(frames) > 1 else names[-1]] += n
    print("samples by thread: " + ", ".join(f"{t} {c}" for t, c in threads.most_common()))
    for title, counter in (("inclusive", inclusive), ("own", own)):
        print(f"\n{thread_name}, {title} share of its samples:")
        for name, c in counter.most_common(top):
            print(f"  {c / max(1, main):6.1%}  {name[:120]}")


async def main(args: argparse.Namespace) -> None:
    pinning = Pinning.plan()
    pinning.pin_self()
    spy = args.spy
    extra = ("--log-level", args.log_level)
    with tempfile.TemporaryDirectory() as tmp, orchestra(Path(tmp) / "data", pinning, *extra) as s:
        raw = Path(tmp) / "raw.txt"
        sampler = None
        if spy:
            sampler = subprocess.Popen(  # noqa: ASYNC220 - started once, before the load
                [spy, "record", "-p", str(s.pid), "-r", str(args.rate), "--nonblocking", "--threads",
                 "-f", "raw", "-o", str(raw)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            await trio.sleep(1)
        else:
            print("py-spy not installed (pip install -e '.[bench]'): CPU per operation only")
        cpu, t = s.cpu_seconds(), time.perf_counter()
        ops = await load(args.what, s, pinning, args.scale)
        cpu, wall = s.cpu_seconds() - cpu, time.perf_counter() - t
        print(f"{args.what}: {ops} operations in {wall:.2f} s ({ops / wall:,.0f}/s); server CPU {cpu:.2f} s "
              f"({cpu / wall:.0%} of one core), {cpu / ops * 1e6:.1f} µs per operation")
        if sampler is not None:
            sampler.send_signal(2)  # SIGINT: py-spy writes what it sampled and exits
            await trio.to_thread.run_sync(sampler.wait)
            if raw.exists():
                summarize(raw, args.top, args.lines, args.thread)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(prog="python -m bench.profile", description=__doc__)
    parser.add_argument("what", choices=["single", "batch", "deliver", "fanout", "get", "post"])
    parser.add_argument("--scale", type=int, default=2, help="multiplies the load's size")
    parser.add_argument("--rate", type=int, default=250, help="samples per second")
    parser.add_argument("--top", type=int, default=30)
    parser.add_argument("--log-level", default="INFO", choices=["DEBUG", "INFO", "WARNING", "ERROR"],
                        help="the server's log level (INFO, serve's default, writes an access line a request)")
    parser.add_argument("--lines", action="store_true", help="the own shares by source line")
    parser.add_argument("--thread", default="MainThread",
                        help="the thread whose samples are summarized (orchestra-store: the store's)")
    parser.add_argument("--no-spy", action="store_true", help="CPU per operation only, no sampling")
    arguments = parser.parse_args()
    beside = Path(sys.executable).parent / "py-spy"
    arguments.spy = None if arguments.no_spy else (shutil.which("py-spy") or (str(beside) if beside.exists() else None))
    trio.run(main, arguments)
