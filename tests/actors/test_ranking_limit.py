"""A ranking asked for its best few equals the head of the whole ranking: ties by path, the
source files first, whatever the number of files scored."""

from __future__ import annotations

from pathlib import Path

import pytest
from orchestra.actors.context.index import ProjectIndex
from orchestra.actors.context.ranking import DEFAULT_WEIGHTS, Signals, bm25, rank

from tests.actors.conftest import write_files


def project(root: Path) -> ProjectIndex:
    files: dict[str, str] = {}
    for i in range(500):  # many files of equal score: ties decided by path
        files[f"pkg/same{i:03}.go"] = "package pkg\n\n// parse the header\n"
    for i in range(40):  # fewer, better matches, some of them tests (not the source kind)
        files[f"pkg/best{i:02}.go"] = "package pkg\n\n// parse the header, the header again\n" + "x\n" * (i % 5)
        files[f"pkg/best{i:02}_test.go"] = "package pkg\n\n// parse the header, the header again\n"
    files["docs/header.md"] = "parse header header header\n"
    index = ProjectIndex(write_files(root, files))
    index.refresh()
    return index


@pytest.mark.parametrize("limit", [1, 5, 10, 41, 50, 170])
@pytest.mark.parametrize("prefer", [None, "test", "doc"])
def test_the_best_few_are_the_head_of_the_whole_ranking(tmp_path, limit, prefer):
    index = project(tmp_path)
    signals = Signals(task="parse the header", prefer_kind=prefer)
    whole = rank(index, signals)
    assert len(whole) > 8 * limit or limit == 170  # the pool is used but for 170
    assert rank(index, signals, limit=limit) == whole[:limit]


def test_per_file_factors_scale_bm25_and_leave_out_the_zeros(tmp_path):
    index = project(tmp_path)
    plain = bm25(index, ["parse", "header"])
    factor = {path: (0.0 if path.endswith(".md") else 2.0) for path in index.files}
    scaled = bm25(index, ["parse", "header"], factors=(("test", 1), factor))
    assert set(scaled) == {p for p in plain if not p.endswith(".md")}
    assert all(scaled[p] == pytest.approx(2 * plain[p]) for p in scaled)
    assert DEFAULT_WEIGHTS.path  # the path's words count too ("header" in docs/header.md)


def test_path_words_add_what_the_weight_and_the_factors_of_this_call_say(tmp_path):
    # the path words' bonus is kept per index generation: a call with another path weight or
    # other factors must not get what an earlier call's were
    from orchestra.actors.context.ranking import _B, _K1

    index = project(tmp_path)
    terms = ["parse", "header", "pkg"]
    norms = index.norms(_K1, _B)

    def expected(path_weight: float, factor: dict[str, float] | None) -> dict[str, float]:
        out: dict[str, float] = {}
        for path in index.files:
            f = 1.0 if factor is None else factor[path]
            if not f:
                continue
            score = 0.0
            for term in terms:
                tf = index.postings.get(term, {}).get(path, 0)
                score += index.idf(term) * (_K1 + 1) * tf / (tf + norms[path]) if tf else 0.0
                if path in index.path_postings.get(term, ()):
                    score += path_weight * index.idf(term)
            if score:
                out[path] = score * f
        return out

    halves = {path: (0.5 if "best" in path else 0.0 if path.endswith(".md") else 1.0) for path in index.files}
    doubles = {path: 2.0 for path in index.files}
    for path_weight, factors in [(1.0, None), (0.25, None), (1.0, (("halves",), halves)), (0.25, (("halves",), halves)),
                                 (1.0, (("doubles",), doubles)), (1.0, None)]:
        got = bm25(index, terms, path_weight, factors=factors)
        want = expected(path_weight, factors[1] if factors else None)
        assert got.keys() == want.keys()
        assert all(got[p] == pytest.approx(want[p]) for p in want), (path_weight, factors and factors[0])
