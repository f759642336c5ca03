"""An answer must not depend on the process's hash seed: the same code base and request give
the same answer after a restart. Ties (equal scores) are where it showed: files whose only
match is a word of their path were scored in the order of a set of paths, and which of them
counted among the best few then decided which other files were raised."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ENV = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x",
       "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@x"}

ANSWER = """
import sys, orjson
from pathlib import Path
from orchestra.actors.context.engine import ContextEngine
from orchestra.actors.context.ranking import Signals
engine = ContextEngine(Path(sys.argv[1]), scan_in_child=False)
engine.refresh()
out = []
for task in ("handler", "fix the handler", "handler partner"):
    body = engine.build("ISS-1", "bench-agent", task, 200_000, [], Signals())
    out.append([(f["path"], f["relevance"]) for f in body["context"]["relevant_files"]])
sys.stdout.write(orjson.dumps(out).decode())
"""


def _git(root: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True, env=ENV)


def test_the_same_request_gets_the_same_answer_whatever_the_hash_seed(tmp_path):
    root = tmp_path / "repo"
    root.mkdir()
    _git(root, "init", "-q", "-b", "main")
    # twelve files that match the task by a word of their path only, with equal scores, each
    # changed twice together with a partner of its own (so the best few raise their partners)
    for round_ in range(2):
        for i in range(12):
            (root / "handlers" / f"h{i}").mkdir(parents=True, exist_ok=True)
            (root / "handlers" / f"h{i}" / "handler.go").write_text(f"package h{i}\n// {round_}\n")
            (root / "partners").mkdir(exist_ok=True)
            (root / "partners" / f"p{i}.go").write_text(f"package partners\n// {i} {round_}\n")
            _git(root, "add", "-A")
            _git(root, "commit", "-q", "-m", f"change {i} round {round_}")
    answers = set()
    for seed in ("0", "1", "2", "3"):
        run = subprocess.run([sys.executable, "-c", ANSWER, str(root)], capture_output=True, text=True,
                             env={**os.environ, "PYTHONHASHSEED": seed}, check=True)
        answers.add(run.stdout)
    assert len(answers) == 1


def test_the_best_few_are_picked_by_score_then_path():
    import heapq

    from hypothesis import given
    from hypothesis import strategies as st
    from orchestra.actors.context.ranking import _best, _best_first

    @given(st.dictionaries(st.text(max_size=3), st.sampled_from([0.0, 0.5, 1.0, 2.5, 1e-300]), max_size=30),
           st.integers(min_value=0, max_value=8))
    def check(scores: dict[str, float], most: int) -> None:
        assert _best(scores, most) == heapq.nsmallest(most, scores.items(), key=_best_first)

    check()
