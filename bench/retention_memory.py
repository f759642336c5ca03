"""Resident memory per retained event: publish N events into one project, measure RSS.

    python bench/retention_memory.py [--small N] [--large N]

Runs a real actor system (SQLite store in a temporary directory) in this process, publishes
through the project actor's mailbox, and reports the growth of RSS divided by the events
retained, next to the encoded size of one event. The store's own memory (SQLite page cache) is
included, as in a server.
"""

from __future__ import annotations

import argparse
import gc
import tempfile
import tracemalloc
from pathlib import Path

import trio
import trio.lowlevel
from orchestra.actors.project import ProjectConfig, ProjectStats, Publish
from orchestra.actors.system import ActorSystem, SystemConfig


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096


async def measure(count: int, size: int) -> tuple[float, float, int]:
    with tempfile.TemporaryDirectory() as tmp:
        system = ActorSystem(SystemConfig(
            data_dir=Path(tmp), synchronous="OFF",
            project=ProjectConfig(max_events=count + 10, **_bytes_cap()),
        ))
        async with trio.open_nursery() as nursery:
            await nursery.start(system.run)
            ref = await system.project("p1")
            def body(i: int) -> dict[str, object]:
                # a fresh payload per event, as each request parses its own
                return {"topic": "t", "data": {"pad": f"{i:08d}" + "x" * (size - 8)}, "ttl_seconds": 3600}

            await ref.call(Publish("warm", body(0), "bench", None))
            gc.collect()
            before = rss()
            traced_before = tracemalloc.get_traced_memory()[0]
            async with trio.open_nursery() as pubs:
                for chunk in range(0, count, 50):
                    for i in range(chunk, min(chunk + 50, count)):
                        pubs.start_soon(ref.call, Publish("e", body(i), "bench", None))
                    await trio.lowlevel.checkpoint()
            stats = await ref.call(ProjectStats())
            gc.collect()
            after = rss()
            traced = tracemalloc.get_traced_memory()[0] - traced_before
            encoded = stats.get("retained_bytes", 0) // max(1, stats["retained_events"])
            nursery.cancel_scope.cancel()
    return (after - before) / count, traced / count, encoded


def _bytes_cap() -> dict[str, int]:
    fields = ProjectConfig.__dataclass_fields__
    return {"max_event_bytes": 1 << 40} if "max_event_bytes" in fields else {}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--small", type=int, default=50_000)
    parser.add_argument("--large", type=int, default=50)
    parser.add_argument("--traced", action="store_true",
                        help="also count Python allocations still held (tracemalloc; slower)")
    args = parser.parse_args()
    if args.traced:
        tracemalloc.start()
    for count, size in [(args.small, 10), (args.large, 1 << 20)]:
        per_event, traced, encoded = trio.run(measure, count, size)
        line = (f"{count} events with {size} bytes of data: RSS +{per_event / 1024:.1f} KiB per "
                f"retained event (encoded size {encoded / 1024:.1f} KiB)")
        if args.traced:
            line += f"; Python heap +{traced / 1024:.1f} KiB per event"
        print(line)


if __name__ == "__main__":
    main()
