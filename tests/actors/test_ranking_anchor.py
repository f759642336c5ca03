"""The anchor to the plain lexical ranking (Weights.anchor): the first files by BM25 alone stay
among the first few of the ranking, whatever the other signals raise."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from orchestra.actors.context.index import ProjectIndex
from orchestra.actors.context.ranking import DEFAULT_WEIGHTS, Signals, rank

from tests.actors.conftest import write_files

OTHERS = [f"app/other{i}.py" for i in range(6)]


def _index(root: Path, crowd: int = 0) -> ProjectIndex:
    files = {
        **{f"app/crowd{i}.py": f"def crowd{i}():\n    return {i}\n" for i in range(crowd)},
        "app/eviction.py": "def evict_oldest(cache):\n    cache.evict(cache.oldest)\n",
        "app/cache.py": "class Cache:\n    def oldest(self):\n        return self.entries[0]\n",
        "app/notes.md": "eviction of the oldest entries\n",
        **{path: f"def helper{i}():\n    return {i}\n" for i, path in enumerate(OTHERS)},
    }
    index = ProjectIndex(write_files(root, files))
    index.refresh()
    return index


def _ranked(index: ProjectIndex, signals: Signals, *anchor: tuple[int, int]) -> list[str]:
    return [p for _, p, _ in rank(index, signals, replace(DEFAULT_WEIGHTS, anchor=anchor), limit=10)]


def _without(ranked: list[str], *paths: str) -> list[str]:
    return [p for p in ranked if p not in paths]


def test_the_lexical_first_files_stay_among_the_first_five(tmp_path):
    index = _index(tmp_path)
    # files an earlier result named, none holding the task's words, crowd out the matches; the
    # path word "cache" puts cache.py above eviction.py, BM25 alone the other way round
    signals = Signals(task="Evict the oldest cache entries", mentioned=frozenset(OTHERS))
    plain = _ranked(index, signals)
    assert plain[:6] == sorted(OTHERS) and plain.index("app/cache.py") == 6 and plain.index("app/eviction.py") == 7
    kept = _ranked(index, signals, (1, 5))
    assert "app/eviction.py" in kept[:5] and "app/cache.py" not in kept[:5]
    assert _without(kept, "app/eviction.py") == _without(plain, "app/eviction.py")  # the rest as it was
    both = _ranked(index, signals, (2, 5))
    assert {"app/eviction.py", "app/cache.py"} <= set(both[:5])
    assert _without(both, "app/eviction.py", "app/cache.py") == _without(plain, "app/eviction.py", "app/cache.py")
    assert _ranked(index, signals, (2, 10)) == plain  # already among the first ten


def test_the_anchor_leaves_a_ranking_alone_that_already_holds_them(tmp_path):
    index = _index(tmp_path)
    signals = Signals(task="Evict the oldest cache entries")
    assert _ranked(index, signals, (2, 5)) == _ranked(index, signals)


def test_named_files_take_their_slots_first(tmp_path):
    index = _index(tmp_path)
    signals = Signals(task="Evict the oldest cache entries (see app/other5.py)", mentioned=frozenset(OTHERS[:5]))
    assert _ranked(index, signals, (1, 1)) == _ranked(index, signals)  # no slot left
    ranked = _ranked(index, signals, (1, 2))
    assert ranked[:2] == ["app/other5.py", "app/eviction.py"]  # named by the task, then the anchor


def test_a_wider_anchor_keeps_more_among_the_first_ten(tmp_path):
    index = _index(tmp_path, crowd=10)
    signals = Signals(task="Evict the oldest entries", mentioned=frozenset(f"app/crowd{i}.py" for i in range(10)))
    plain = _ranked(index, signals)
    assert not {"app/eviction.py", "app/cache.py"} & set(plain)
    narrow = _ranked(index, signals, (1, 5))
    assert "app/eviction.py" in narrow[:5] and "app/cache.py" not in narrow
    both = _ranked(index, signals, (1, 5), (2, 10))
    assert "app/eviction.py" in both[:5] and "app/cache.py" in both[5:10]
    assert _without(both, "app/eviction.py", "app/cache.py") == _without(plain, "app/eviction.py", "app/cache.py")[:8]
