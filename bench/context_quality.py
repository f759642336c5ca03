"""How well the context engine finds the files a real change touched.

``python -m bench.context_quality --repo PATH [--repo PATH ...] [--commits 40] [--in-process]``

For each repository: non-merge commits that change 1-4 source files (and at most 8 files in
all) are sampled evenly from its history. For each, the parent is checked out, the commit
message is the task, and the source files the commit changed that existed in the parent are
the answer (tests, docs, changelogs and configs changed alongside are not). Three rankings are scored on the same checkout: the context endpoint of a real
``orchestra serve`` (or the engine in-process with ``--in-process``), plain BM25 over paths and
contents, and the same BM25 with source files ranked above docs, changelogs, configs and tests.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass, field
from pathlib import Path

import orjson
from orchestra.actors.context.files import file_kind, language_of
from orchestra.actors.context.index import ProjectIndex
from orchestra.actors.context.ranking import Signals, bm25, rank
from rich.console import Console
from rich.table import Table

_TRAILER = re.compile(r"^(Signed-off-by|Co-authored-by|Reviewed-by|Change-Id|Closes|Fixes|Refs):.*$", re.M | re.I)
_ISSUE = re.compile(r"#(\d+)")


@dataclass
class Case:
    sha: str
    parent: str
    message: str
    targets: list[str]


@dataclass
class Score:
    r5: list[float] = field(default_factory=list)
    r10: list[float] = field(default_factory=list)
    all10: list[float] = field(default_factory=list)

    def add(self, ranked: list[str], targets: list[str]) -> None:
        t = set(targets)
        self.r5.append(len(t & set(ranked[:5])) / len(t))
        self.r10.append(len(t & set(ranked[:10])) / len(t))
        self.all10.append(1.0 if t <= set(ranked[:10]) else 0.0)

    def row(self) -> tuple[str, str, str]:
        def avg(x: list[float]) -> str:
            return f"{sum(x) / len(x):.3f}" if x else "-"
        return avg(self.r5), avg(self.r10), avg(self.all10)

    def mean(self, which: str) -> float:
        x = getattr(self, which)
        return sum(x) / len(x) if x else 0.0


def git(repo: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(repo), *args], capture_output=True, check=True).stdout.decode("utf-8", "replace")


def select_cases(repo: Path, wanted: int, scan: int) -> list[Case]:
    log = git(repo, "log", "--no-merges", f"-n{scan}", "--format=%x1e%H%x1f%P%x1f%B%x1f", "--name-status")
    cases = []
    for block in log.split("\x1e"):
        if not block.strip():
            continue
        sha, parents, message, changes = block.split("\x1f", 3)
        if len(parents.split()) != 1:
            continue
        changed, targets = [], []
        for line in changes.strip().splitlines():
            parts = line.split("\t")
            status, paths = parts[0], parts[1:]
            if not paths:
                continue
            changed.append(paths[-1])
            if status[0] in "MDR" and file_kind(paths[0], language_of(paths[0])) == "source":
                targets.append(paths[0])  # a source file that existed in the parent
        sources = [p for p in changed if file_kind(p, language_of(p)) == "source"]
        message = _TRAILER.sub("", message).strip()
        if not 1 <= len(sources) <= 4 or len(changed) > 8 or not targets or len(message) < 15:
            continue
        cases.append(Case(sha, parents.strip(), message, targets))
    if len(cases) > wanted:
        step = len(cases) / wanted
        cases = [cases[int(i * step)] for i in range(wanted)]
    return cases


def baseline_rankings(index: ProjectIndex, task: str) -> tuple[list[str], list[str]]:
    from orchestra.actors.context.index import tokenize

    scores = bm25(index, tokenize(task), 1.0)
    plain = [p for p, _ in sorted(scores.items(), key=lambda kv: (-kv[1], kv[0])) if not index.files[p].binary]
    source_first = sorted(plain, key=lambda p: (index.files[p].kind != "source", -scores[p], p))
    return plain, source_first


class Endpoint:
    """A real ``orchestra serve`` whose project ``q`` is the checkout."""

    def __init__(self, root: Path, data_dir: Path) -> None:
        env = {**os.environ, "ORCHESTRA_DATA_DIR": str(data_dir), "ORCHESTRA_JWT_SECRET": "quality-bench-secret-0123456789-abcdef"}
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "import sys; from orchestra.transport.cli import main; sys.exit(main())",
             "serve", "--port", "0", "--no-rate-limits", "--project", f"q={root}", "--context-sweep", "0",
             "--log-level", "WARNING"],
            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env,
        )
        line = self.proc.stdout.readline()
        self.base = line.strip().removeprefix("listening on ")
        import jwt
        self.token = jwt.encode({"sub": "bench", "agent_type": "bench-agent", "project_id": "q",
                                 "exp": int(time.time()) + 86400}, "quality-bench-secret-0123456789-abcdef", algorithm="HS256")

    def ranked(self, issue_id: str, task: str) -> tuple[list[str], float]:
        query = urllib.parse.urlencode({"task": task[:4000], "max_bytes": 4_194_304})
        req = urllib.request.Request(f"{self.base}/api/context/{urllib.parse.quote(issue_id)}/bench-agent?{query}",
                                     headers={"Authorization": f"Bearer {self.token}"})
        t = time.perf_counter()
        with urllib.request.urlopen(req, timeout=120) as resp:
            body = orjson.loads(resp.read())
        return [f["path"] for f in body["context"]["relevant_files"]], time.perf_counter() - t

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def evaluate(repo: Path, commits: int, scan: int, in_process: bool) -> dict[str, Score]:
    work = Path(tempfile.mkdtemp(prefix="ctxq-"))
    clone = work / "clone"
    subprocess.run(["git", "clone", "-q", "--no-checkout", str(repo), str(clone)], check=True)
    cases = select_cases(clone, commits, scan)
    scores = {"orchestra": Score(), "bm25": Score(), "bm25+source-first": Score()}
    index = ProjectIndex(clone)
    endpoint = None if in_process else Endpoint(clone, work / "data")
    skipped = 0
    try:
        for case in cases:
            done = subprocess.run(["git", "-C", str(clone), "checkout", "-q", "--detach", "-f", case.parent],
                                  capture_output=True)
            if done.returncode != 0:  # e.g. a copy of the repository without its largest blobs
                skipped += 1
                continue
            subprocess.run(["git", "-C", str(clone), "clean", "-qfdx"], check=True)
            index.refresh()
            existing = [t for t in case.targets if t in index.files]
            if not existing:
                continue
            issue = _ISSUE.search(case.message)
            issue_id = f"#{issue.group(1)}" if issue else f"bench-{case.sha[:8]}"
            if endpoint is not None:
                ours, _ = endpoint.ranked(issue_id, case.message)
            else:
                ours = [p for _, p, _ in rank(index, Signals(task=case.message))]
            plain, source_first = baseline_rankings(index, case.message)
            scores["orchestra"].add(ours, existing)
            scores["bm25"].add(plain, existing)
            scores["bm25+source-first"].add(source_first, existing)
    finally:
        if endpoint is not None:
            endpoint.close()
        shutil.rmtree(work, ignore_errors=True)
    if skipped:
        print(f"{repo}: {skipped} commit(s) skipped: their parent could not be checked out", file=sys.stderr)
    return scores


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.context_quality")
    parser.add_argument("--repo", action="append", required=True, type=Path)
    parser.add_argument("--commits", type=int, default=40)
    parser.add_argument("--scan", type=int, default=3000, help="newest commits to choose from")
    parser.add_argument("--in-process", action="store_true", help="rank in-process instead of through the endpoint")
    args = parser.parse_args()
    console = Console()
    table = Table(title="Context quality: files a real commit changed, found from its message")
    for col in ("repository", "commits", "method", "recall@5", "recall@10", "all-files@10"):
        table.add_column(col)
    gains: list[tuple[str, float, float]] = []
    for repo in args.repo:
        scores = evaluate(repo, args.commits, args.scan, args.in_process)
        n = len(scores["orchestra"].r10)
        for name, score in scores.items():
            table.add_row(repo.name if repo.name not in ("repo", ".git") else repo.parent.name, str(n), name, *score.row())
        gain = scores["orchestra"].mean("r10") - scores["bm25+source-first"].mean("r10")
        gains.append((repo.name if repo.name not in ("repo", ".git") else repo.parent.name,
                      scores["orchestra"].mean("r5") - scores["bm25+source-first"].mean("r5"), gain))
        table.add_row("", "", "[bold]orchestra - bm25+source-first[/]",
                      f"{scores['orchestra'].mean('r5') - scores['bm25+source-first'].mean('r5'):+.3f}", f"{gain:+.3f}",
                      f"{scores['orchestra'].mean('all10') - scores['bm25+source-first'].mean('all10'):+.3f}")
    console.print(table)
    if gains:
        below = [f"{name} (@5 {g5:+.3f}, @10 {g10:+.3f})" for name, g5, g10 in gains if g5 < 0 or g10 < 0]
        console.print(f"mean gain over bm25+source-first across {len(gains)} repositories: "
                      f"recall@5 {sum(g[1] for g in gains) / len(gains):+.3f}, "
                      f"recall@10 {sum(g[2] for g in gains) / len(gains):+.3f}; "
                      f"below it on: {', '.join(below) or 'none'}")


if __name__ == "__main__":
    main()
