"""The seed's benchmark 1, as written: context injection latency.

100 consecutive context requests for new issues of one project, no task text, through a real
``orchestra serve`` over HTTP; percentiles of the client-side time. Targets from the seed:
p50 < 50 ms, p95 < 80 ms, p99 < 100 ms. Exits 1 when a target is missed.

``python -m bench.seed [--root PATH] [--requests 100] [--agent-type python-specialist]``

Without ``--root`` the project is a generated small Python code base of 112 files with a few
git commits (the size of the project the figures in issue 18 came from); with it, any code
base (a git repository, or a folder holding one).
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import jwt
import orjson
import trio
from orchestra.transport.http_client import request

SECRET = "seed-bench-secret-0123456789-abcdefgh"
TARGETS_MS = {"p50": 50.0, "p95": 80.0, "p99": 100.0}
_WORDS = ("client request response session token header cookie stream timeout retry proxy auth "
          "cache decode encode parse url query param json form upload download limit pool").split()


def small_project(root: Path, files: int = 112, commits: int = 4, seed: int = 18) -> Path:
    """A small Python project: a package of modules, its tests, docs, manifests and a README,
    committed in ``commits`` steps."""
    rnd = random.Random(seed)
    root.mkdir(parents=True, exist_ok=True)

    def module(n: int) -> str:
        out = [f'"""The {rnd.choice(_WORDS)} {rnd.choice(_WORDS)} part of the package."""\n\nimport os\n\n']
        for j in range(rnd.randint(4, 30)):
            name = f"{rnd.choice(_WORDS)}_{rnd.choice(_WORDS)}_{j}"
            body = "\n".join(f"    {rnd.choice(_WORDS)} = {rnd.choice(_WORDS)!r}  # {' '.join(rnd.choices(_WORDS, k=5))}"
                             for _ in range(rnd.randint(3, 12)))
            out.append(f"def {name}(value, *, {rnd.choice(_WORDS)}=None):\n    \"\"\"{' '.join(rnd.choices(_WORDS, k=8))}.\"\"\"\n{body}\n    return value\n\n\n")
        return "".join(out)

    made: list[Path] = []

    def write(rel: str, text: str) -> None:
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
        made.append(path)

    write("README.md", "# seedpkg\n\nA small HTTP client library.\n\n## Usage\n\n```python\nimport seedpkg\n```\n")
    write("pyproject.toml", '[project]\nname = "seedpkg"\nversion = "1.0"\ndependencies = ["idna", "certifi", "sniffio"]\n')
    write(".gitignore", "__pycache__/\n*.pyc\n/dist\n")
    write("CHANGELOG.md", "# Changes\n\n## 1.0\n- first release\n")
    write("seedpkg/__init__.py", '"""seedpkg."""\nfrom ._client import *  # noqa\n')
    write("seedpkg/__main__.py", "from ._cli import main\n\nmain()\n")
    fixed = len(made)
    sources = (files - fixed) * 6 // 10
    for i in range(sources):
        write(f"seedpkg/{'_' if i % 3 else ''}{rnd.choice(_WORDS)}_{i}.py" if i % 4 else
              f"seedpkg/{rnd.choice(_WORDS)}/{rnd.choice(_WORDS)}_{i}.py", module(i))
    tests = (files - fixed - sources) * 2 // 3
    for i in range(tests):
        write(f"tests/test_{rnd.choice(_WORDS)}_{i}.py", module(i).replace("def ", "def test_"))
    while len(made) < files:
        i = len(made)
        write(f"docs/{rnd.choice(_WORDS)}_{i}.md", f"# {rnd.choice(_WORDS)}\n\n" + " ".join(rnd.choices(_WORDS, k=300)) + "\n")
    env = {**os.environ, "GIT_AUTHOR_NAME": "seed", "GIT_AUTHOR_EMAIL": "seed@example.org",
           "GIT_COMMITTER_NAME": "seed", "GIT_COMMITTER_EMAIL": "seed@example.org"}
    subprocess.run(["git", "init", "-q", "-b", "main", str(root)], check=True, env=env)
    batch = -(-len(made) // commits)
    for c in range(commits):
        part = made[c * batch:(c + 1) * batch]
        if c:  # later commits also touch some earlier files
            for path in rnd.sample(made[:c * batch], k=min(5, c * batch)):
                with path.open("a") as f:
                    f.write(f"\n# change {c}\n")
                part.append(path)
        subprocess.run(["git", "-C", str(root), "add", *map(str, part)], check=True, env=env)
        subprocess.run(["git", "-C", str(root), "commit", "-qm", f"step {c}: {' '.join(rnd.choices(_WORDS, k=4))}"],
                       check=True, env=env)
    return root


def percentile(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, max(0, round(q * len(sorted_values)) - 1))]


async def run(root: Path, requests: int, agent_type: str, data_dir: Path) -> dict[str, float]:
    env = {**os.environ, "ORCHESTRA_DATA_DIR": str(data_dir), "ORCHESTRA_JWT_SECRET": SECRET}
    proc = subprocess.Popen(  # noqa: ASYNC220 - started once, before anything is measured
        [sys.executable, "-c", "import sys; from orchestra.transport.cli import main; sys.exit(main())",
         "serve", "--port", "0", "--no-rate-limits", "--project", f"seed={root}", "--log-level", "WARNING"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    try:
        assert proc.stdout is not None
        port = int(proc.stdout.readline().rsplit(":", 1)[1])
        token = jwt.encode({"sub": "seed-bench", "agent_type": agent_type, "project_id": "seed",
                            "exp": int(time.time()) + 3600}, SECRET, algorithm="HS256")
        # the project's index is made by its first request (an issue that is not counted)
        t = time.perf_counter()
        first = await request("127.0.0.1", port, "GET", f"/api/context/SEED-WARMUP/{agent_type}", token=token)
        cold = time.perf_counter() - t
        assert first.status == 200, first.body[:300]
        times: list[float] = []
        files: list[int] = []
        run_id = f"{os.getpid()}-{int(time.time())}"
        for i in range(requests):
            t = time.perf_counter()
            answer = await request("127.0.0.1", port, "GET", f"/api/context/SEED-{run_id}-{i}/{agent_type}", token=token)
            times.append(time.perf_counter() - t)
            assert answer.status == 200, answer.body[:300]
            body = orjson.loads(answer.body)
            assert body["cache_hit"] is False  # every issue is new: nothing comes from the cache
            files.append(sum(1 for f in body["context"]["relevant_files"] if f.get("content")))
        times.sort()
        return {"cold_s": cold, "requests": requests,
                **{name: percentile(times, q) * 1000 for name, q in (("p50", .50), ("p95", .95), ("p99", .99))},
                "max": times[-1] * 1000, "files_inlined_median": sorted(files)[len(files) // 2],
                "bytes": len(answer.body), "indexed_files": body["context"]["project_structure"]["total_files"]}
    finally:
        proc.terminate()
        proc.wait(10)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=None, help="the code base (default: a generated one)")
    parser.add_argument("--requests", type=int, default=100)
    parser.add_argument("--agent-type", default="python-specialist")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = args.root.resolve() if args.root else small_project(Path(tmp) / "project")
        figures = trio.run(run, root, args.requests, args.agent_type, Path(tmp) / "data")
    print(f"seed benchmark 1 (context injection latency) on {root if args.root else 'a generated project'}: "
          f"{figures['indexed_files']} files, {figures['requests']} consecutive requests for new issues, no task")
    print(f"  first request (cold index) {figures['cold_s']:.2f} s; answers of {figures['bytes']} bytes, "
          f"{figures['files_inlined_median']} files inlined (median)")
    ok = True
    for name, target in TARGETS_MS.items():
        met = figures[name] < target
        ok &= met
        print(f"  {name} {figures[name]:6.1f} ms   target < {target:.0f} ms   {'met' if met else 'MISSED'}")
    print(f"  max {figures['max']:6.1f} ms")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
