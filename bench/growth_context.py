"""How the context engine's uncached answer grows with the code base:
``python -m bench.growth_context FILES[,FILES...] QUERIES`` prints a JSON list, one object per
size: the cold index seconds and the p50/p99 seconds of QUERIES uncached answers (each a new task, as the server asks: with the
profile's globs and keywords) on a generated repository of FILES files (bench.context_speed's
generator). The engine runs in this process, as it runs in the server's.
"""

from __future__ import annotations

import json
import random
import sys
import tempfile
import time
from pathlib import Path

from orchestra.actors.context.engine import ContextEngine
from orchestra.actors.context.ranking import Signals
from orchestra.actors.profiles import Profiles

from .context_speed import WORDS, generate
from .procs import pct


def measure(files: int, queries: int) -> dict[str, float]:
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        generate(root, files)
        engine = ContextEngine(root)
        t = time.perf_counter()
        engine.refresh()
        cold = time.perf_counter() - t
        profile = Profiles().get("python-specialist")
        signals = Signals(globs=profile.context_globs, keywords=profile.context_keywords)
        rnd = random.Random(1)
        times = []
        for i in range(queries):
            task = " ".join(rnd.choices(WORDS, k=5))
            t = time.perf_counter()
            engine.build(f"GROW-{i}", "python-specialist", task, 262144, [], signals)
            times.append(time.perf_counter() - t)
    return {"files": files, "cold_index": cold, "p50": pct(times, 0.5), "p99": pct(times, 0.99)}


def main() -> None:
    sizes, queries = [int(f) for f in sys.argv[1].split(",")], int(sys.argv[2])
    print(json.dumps([measure(files, queries) for files in sizes]))


if __name__ == "__main__":
    main()
