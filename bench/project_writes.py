"""The durable write path without the transport: ``python -m bench.project_writes single|batch``.

One process, no sockets: the project actor and the store actor (SQLite in a temporary
directory, on its worker thread) under their supervisor, as the server runs them, and 119
writer tasks each keeping 8 calls in flight (``StoreResult``, or ``StoreResults`` of 20), as
``python -m bench``'s write load does over WebSocket. Prints results/s and the process's CPU
per result (every thread), so a change to actors/project.py or actors/store.py can be measured
apart from the frames and sessions around it. Pin it to one core (``taskset -c 0``) to compare
with the server's figure, and alternate old and new code: the machine is shared.

The collector is tuned as ``orchestra serve`` tunes it (``--no-gc`` turns it off, to see the
write path's own CPU apart from the collections it causes).
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import time
from pathlib import Path
from typing import Any

import trio
from orchestra.actors.events import EventFilter
from orchestra.actors.profiles import Profiles
from orchestra.actors.project import (
    ProjectActor,
    ProjectConfig,
    Publish,
    StoreResult,
    StoreResults,
    Subscribe,
)
from orchestra.actors.runtime import ActorRef, ChildSpec, Supervisor
from orchestra.actors.store import SQLiteBackend, StoreActor
from orchestra.transport.cli import GC_YOUNG_THRESHOLD

BODY = {"agent_id": "a1", "agent_type": "python-specialist", "issue_id": "i1",
        "result": {"status": "success", "summary": "did the thing", "n": 1}}


def _tree(tmp: Path) -> tuple[ActorRef, ActorRef, Supervisor]:
    """The store (SQLite in ``tmp``) and one project under a supervisor, as the server runs them."""
    store, project = ActorRef("store", 4096), ActorRef("project:bench", 1024)
    sup = Supervisor("root", [
        ChildSpec.actor("store", store, lambda: StoreActor(SQLiteBackend(tmp / "o.db"))),
        ChildSpec.actor("project:bench", project,
                        lambda: ProjectActor("bench", store, Profiles(), ProjectConfig())),
    ])
    return store, project, sup


async def run(writers: int, calls: int, batch: int, in_flight: int = 8) -> tuple[int, float, float]:
    """Results stored, wall seconds and CPU seconds of the process."""
    with tempfile.TemporaryDirectory() as tmp:
        store, project, sup = _tree(Path(tmp))
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)

            async def lane() -> None:
                for _ in range(calls):
                    msg: Any = (StoreResults(tuple(dict(BODY) for _ in range(batch))) if batch
                                else StoreResult(dict(BODY)))
                    await project.call(msg)

            cpu, t = time.process_time(), time.perf_counter()
            async with trio.open_nursery() as lanes:
                for _ in range(writers * in_flight):
                    lanes.start_soon(lane)
            cpu, wall = time.process_time() - cpu, time.perf_counter() - t
            nursery.cancel_scope.cancel()
    return writers * in_flight * calls * max(1, batch), wall, cpu


class _Sink:
    """A subscriber whose task wakes at each delivery, as a session's writer does."""

    session_key = "sub#1"
    agent_id = "sub"

    def __init__(self) -> None:
        self.send, self.recv = trio.open_memory_channel[float](1000)

    def subscribed(self, reply_id: Any, reply: dict[str, Any]) -> None:
        pass

    def deliver(self, sid: str, cursor: str, event: bytes) -> bool:
        self.send.send_nowait(time.perf_counter())
        return True

    def begin(self, sid: str, cursor: str) -> None:
        pass

    def replay(self, sid: str, cursor: str, event: bytes) -> bool:
        return False

    def want_more(self, ref: Any, msg: Any) -> None:
        pass

    def behind(self, sid: str) -> None:
        pass


async def deliver(n: int, warm: int = 200) -> tuple[list[float], float]:
    """Seconds from a publish's call to its subscriber's task waking with the delivery (one
    publisher, one at a time, as ``bench.wsload.publish_deliver`` without the sockets); and
    the process's CPU per publish."""
    with tempfile.TemporaryDirectory() as tmp:
        store, project, sup = _tree(Path(tmp))
        sink = _Sink()
        out: list[float] = []
        async with trio.open_nursery() as nursery:
            await nursery.start(sup.run)
            await project.call(Subscribe(sink, frozenset({"lat"}), None, EventFilter.parse(None), None))
            cpu = 0.0
            for i in range(warm + n):
                if i == warm:
                    cpu = time.process_time()
                t = time.perf_counter()
                async with trio.open_nursery() as once:
                    once.start_soon(project.call, Publish("lat", {"data": {"i": i}, "ttl_seconds": 3600}, "pub", None))
                    await sink.recv.receive()
                    if i >= warm:
                        out.append(time.perf_counter() - t)
            cpu = time.process_time() - cpu
            nursery.cancel_scope.cancel()
    return out, cpu / n


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.project_writes", description=__doc__)
    parser.add_argument("what", choices=["single", "batch", "deliver"])
    parser.add_argument("--writers", type=int, default=119)
    parser.add_argument("--calls", type=int, default=0, help="calls per in-flight lane (default 10 single, 8 batch)")
    parser.add_argument("--no-gc", action="store_true", help="the collector off")
    args = parser.parse_args()
    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, 20, 10)
    if args.no_gc:
        gc.disable()
    if args.what == "deliver":
        lat, per = trio.run(deliver, args.calls or 2000)
        lat.sort()
        print(f"deliver: p50 {lat[len(lat) // 2] * 1e6:.0f} µs, p99 {lat[int(len(lat) * 0.99)] * 1e6:.0f} µs;"
              f" CPU {per * 1e6:.1f} µs per publish")
        return
    batch = 20 if args.what == "batch" else 0
    calls = args.calls or (8 if batch else 10)
    n, wall, cpu = trio.run(run, args.writers, calls, batch)
    print(f"{args.what}: {n} results in {wall:.2f} s ({n / wall:,.0f}/s); CPU {cpu / n * 1e6:.1f} µs per result")


if __name__ == "__main__":
    main()
