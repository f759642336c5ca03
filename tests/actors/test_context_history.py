"""What a repository's own history says a file is about: the words of the commits that touched
it (ranking.Weights.history, ProjectIndex.history_words); and which files count as source."""

from __future__ import annotations

import os
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest
from orchestra.actors.context.files import file_kind, language_of
from orchestra.actors.context.index import HistoryWords, ProjectIndex
from orchestra.actors.context.ranking import DEFAULT_WEIGHTS, Signals, rank

from tests.actors.conftest import write_files

#: the ranking without what the history's words add
NO_HISTORY = replace(DEFAULT_WEIGHTS, history=0.0, similar=0.0)

ENV = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x",
       "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@x"}


def git(root: Path, *args: str) -> None:
    subprocess.run(["git", "-C", str(root), *args], check=True, capture_output=True, env=ENV)


def _repo(root: Path) -> Path:
    write_files(root, {
        # what the task is about, in words the code does not use
        "app/store.py": "def put(slot, value):\n    slots[slot] = value\n\ndef drop_oldest():\n    slots.pop(0)\n",
        # the task's words, once, in a file nobody changes for them
        "app/notes.py": "# eviction of the cache is done elsewhere\nNOTE = 1\n",
        "app/other.py": "def unrelated():\n    return 2\n",
    })
    git(root, "init", "-q", "-b", "main")
    git(root, "add", "-A")
    git(root, "commit", "-qm", "initial import")
    for i in range(3):
        (root / "app" / "store.py").write_text((root / "app" / "store.py").read_text() + f"\n# {i}\n")
        git(root, "commit", "-qam", f"cache eviction: keep the newest entries ({i})")
        (root / "app" / "other.py").write_text((root / "app" / "other.py").read_text() + f"\n# {i}\n")
        git(root, "commit", "-qam", f"tidy the unrelated helper {i}")
    return root


def _ranked(index: ProjectIndex, task: str, history: float) -> list[str]:
    return [p for _, p, _ in rank(index, Signals(task=task), replace(NO_HISTORY, history=history))]


def test_the_words_of_the_commits_that_touched_a_file_rank_it(tmp_path):
    index = ProjectIndex(_repo(tmp_path))
    index.refresh()
    task = "Cache eviction drops entries too early"
    without = _ranked(index, task, 0.0)
    assert without[0] == "app/notes.py" and "app/store.py" not in without[:1]
    assert _ranked(index, task, 1.0)[0] == "app/store.py"


def test_history_words_count_a_word_once_per_commit_and_skip_bulk_commits():
    bulk = tuple(f"f{i}.py" for i in range(31))
    words = HistoryWords.of([
        ("cache cache cache eviction", ("a.py", "b.py")),
        ("cache again", ("a.py",)),
        ("cache everywhere", bulk),  # a bulk commit (formatting, renames) says nothing
    ])
    assert words.postings["cache"] == {"a.py": 2, "b.py": 1}
    assert "everywhere" not in words.postings
    scores = words.scores({"cache": 1.0, "eviction": 1.0})
    assert scores["b.py"] > 0 and scores["a.py"] > 0
    assert words.scores({"absent": 1.0}) == {}


@pytest.mark.parametrize("path", ["src/Text/Pandoc/Readers/Markdown.hs", "include/nlohmann/json.hpp",
                                  "src/format.cc", "src/os.cxx", "lib/util.hh", "packages/app/App.vue",
                                  "lib/Module.pm", "scripts/tool.pl", "src/init.lua", "src/mod.mts"])
def test_the_languages_a_user_would_call_source(path):
    assert file_kind(path, language_of(path)) == "source"


def test_the_reason_says_what_the_commits_that_changed_it_said(tmp_path):
    from orchestra.actors.context.ranking import explain

    index = ProjectIndex(_repo(tmp_path))
    index.refresh()
    task = "Cache eviction drops entries too early"
    weights = replace(NO_HISTORY, history=1.0)
    why = explain(index, Signals(task=task), ["app/store.py", "app/notes.py"], set(), weights)
    assert "its commits said: " in why["app/store.py"]
    assert {"cache", "eviction", "entries"} >= set(why["app/store.py"].split("its commits said: ")[1].split(", "))
    assert "its commits said" not in why["app/notes.py"]
    without = explain(index, Signals(task=task), ["app/store.py"], set(), replace(weights, history=0.0))
    assert "its commits said" not in without["app/store.py"]


def test_the_files_of_the_past_commits_most_like_the_task_rank(tmp_path):
    index = ProjectIndex(_repo(tmp_path))
    index.refresh()
    task = "Cache eviction drops entries too early"
    ranked = [p for _, p, _ in rank(index, Signals(task=task), replace(NO_HISTORY, similar=1.0))]
    assert ranked[0] == "app/store.py"
    words = HistoryWords.of([("cache eviction", ("a.py", "b.py")), ("cache", ("c.py",)), ("other", ("d.py",))])
    found = words.similar({"cache": 1.0, "eviction": 1.0}, most=1)
    assert set(found) == {"a.py", "b.py"}  # the best commit's files, its score shared
    assert found["a.py"] == found["b.py"] > 0
    assert set(words.similar({"cache": 1.0}, most=5)) == {"a.py", "b.py", "c.py"}


def test_history_words_of_the_first_lines_alone():
    commits = [("cache eviction\n\nthe body says router", ("a.py",))]
    assert "router" in HistoryWords.of(commits).postings
    assert "router" not in HistoryWords.of(commits, title_only=True).postings
    assert HistoryWords.of(commits, title_only=True).postings["eviction"] == {"a.py": 1}


def test_the_reason_names_the_past_change_like_the_task(tmp_path):
    from orchestra.actors.context.ranking import explain

    index = ProjectIndex(_repo(tmp_path))
    index.refresh()
    task = "Cache eviction drops entries too early"
    why = explain(index, Signals(task=task), ["app/store.py", "app/notes.py"], set(),
                  replace(NO_HISTORY, similar=0.5))
    assert "a past change like this one changed it: 'cache eviction: keep the newest entries (" in why["app/store.py"]
    assert "past change" not in why["app/notes.py"]
    assert "past change" not in explain(index, Signals(task=task), ["app/store.py"], set(), NO_HISTORY)["app/store.py"]
