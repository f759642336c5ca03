"""Context engine speed on a generated repository: cold index, uncached and cached answers.

``python -m bench.context_speed [--files 5000]`` (figures are server-side, in-process).
"""

from __future__ import annotations

import argparse
import random
import statistics
import tempfile
import time
from pathlib import Path

from orchestra.actors.context.engine import ContextEngine
from orchestra.actors.context.ranking import Signals

WORDS = ("token auth user session cache router handler invoice parser config event queue worker "
         "retry timeout socket stream buffer schema migrate index search rank score").split()


def generate(root: Path, files: int, seed: int = 7) -> None:
    rnd = random.Random(seed)
    for i in range(files):
        pkg = f"pkg{i % 50}/sub{i % 7}"
        path = root / pkg / f"mod_{i}_{rnd.choice(WORDS)}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        lines = [f"def {rnd.choice(WORDS)}_{rnd.choice(WORDS)}_{j}(x):\n    return x  # {' '.join(rnd.choices(WORDS, k=6))}\n"
                 for j in range(rnd.randint(5, 40))]
        path.write_text("".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--files", type=int, default=5000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        generate(root, args.files)
        engine = ContextEngine(root, sweep_interval=3600)
        t = time.perf_counter()
        engine.refresh(force=True)
        cold = time.perf_counter() - t
        t = time.perf_counter()
        engine.refresh(force=True)
        sweep = time.perf_counter() - t
        rnd = random.Random(1)
        times = []
        for _ in range(50):
            task = " ".join(rnd.choices(WORDS, k=5))
            t = time.perf_counter()
            engine.build("ISS-1", "python-specialist", task, 262144, [], Signals())
            times.append(time.perf_counter() - t)
        times.sort()
        print(f"files: {len(engine.index.files)}")
        print(f"cold index: {cold:.2f} s; stat sweep with no change: {sweep*1000:.0f} ms")
        print(f"uncached answer (indexed): p50 {statistics.median(times)*1000:.1f} ms, p99 {times[int(0.99*len(times))-1]*1000:.1f} ms")


if __name__ == "__main__":
    main()
