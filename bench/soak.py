"""``python -m bench.soak``: SIGKILL ``orchestra serve`` again and again under load.

Each round starts a load (HTTP writers, an SDK writer, SDK subscribers resuming by cursor),
kills the server with SIGKILL at a moment drawn from the seed, restarts it on the same data
dir and checks every invariant (orchestra.testing's ``sigkill_soak``): every acknowledged result
readable and intact, every subscriber's events without gap or duplicate, no request hung.
Prints the figures (docs/reliability.md keeps the last run's) as one JSON object.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import tempfile
from pathlib import Path

import trio

from orchestra.testing import ServerProcess, sigkill_soak


async def soak(kills: int, seed: int, data_dir: Path) -> dict[str, object]:
    server = ServerProcess(data_dir)
    try:
        figures = await sigkill_soak(server, kills=kills, seed=seed)
    finally:
        await server.aclose()
    restarts = sorted(figures.restart_seconds)
    return {
        "seed": figures.seed,
        "kills": figures.kills,
        "acknowledged_results": figures.acknowledged,
        "acknowledged_lost": 0,  # sigkill_soak raises on any
        "requests_cut_by_a_kill": figures.cut,
        "answers_by_status": {str(k): v for k, v in sorted(figures.statuses.items())},
        "events_received_by_subscribers": figures.events_received,
        "restart_seconds_median": round(statistics.median(restarts), 3),
        "restart_seconds_max": round(restarts[-1], 3),
        "seconds": round(figures.seconds, 1),
        "python": platform.python_version(),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=25, help="SIGKILLs (default 25)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the kill moments (default: fresh)")
    parser.add_argument("--data-dir", type=Path, default=None, help="default: a temporary directory")
    args = parser.parse_args(argv)
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(2**32)
    with tempfile.TemporaryDirectory(prefix="orchestra-soak-") as tmp:
        figures = trio.run(soak, args.kills, seed, args.data_dir or Path(tmp))
    json.dump(figures, sys.stdout, indent=2)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main())
