"""Query understanding: what of a task's text counts as words to look for (ranking.query_terms)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

from hypothesis import given
from hypothesis import strategies as st
from orchestra.actors.context.index import ProjectIndex
from orchestra.actors.context.ranking import DEFAULT_WEIGHTS, Signals, Weights, query_terms, rank

from tests.actors.conftest import write_files

PLAIN = replace(DEFAULT_WEIGHTS, clean=False, stop=False, qtf_cap=0, body=1.0, idents=0.0, title=0.0, anchor=())


def _repo(root: Path) -> Path:
    files = {
        # a file full of the words every commit message uses
        "app/fix_update.py": "def fix_and_update():\n    # fix add update remove when the handling of it\n"
                                 + "    fix = update = add = remove = when = 1\n" * 12,
        "app/config.py": "def load_config(path):\n    raise MissingConfig(path)\n",
        "app/codes.py": "TABLE = {4512: 'x', 4513: 'y'}\n",
        "app/pool.py": "def close_idle_connections(pool):\n    for conn in pool.idle:\n        conn.close()\n",
    }
    return write_files(root, files)


def _ranked(index: ProjectIndex, task: str, weights: Weights) -> list[str]:
    return [p for _, p, _ in rank(index, Signals(task=task), weights)]


def test_the_words_every_commit_message_uses_do_not_decide(tmp_path):
    index = ProjectIndex(_repo(tmp_path))
    index.refresh()
    task = "Fix and update the handling when the config is missing"
    assert _ranked(index, task, PLAIN)[0] == "app/fix_update.py"  # without: the noise wins
    assert _ranked(index, task, replace(PLAIN, stop=True))[0] == "app/config.py"


def test_issue_numbers_urls_and_hashes_are_no_words_of_the_code(tmp_path):
    index = ProjectIndex(_repo(tmp_path))
    index.refresh()
    task = "Close idle connections (#4512)"
    assert "app/codes.py" in _ranked(index, task, PLAIN)  # the number matches a table of codes
    assert _ranked(index, task, replace(PLAIN, clean=True)) == ["app/pool.py"]
    terms = query_terms("Close pool (#4512), see https://example.com/a/b and 1a2b3c4d5e; mail x@y.org\nv2",
                        (), replace(PLAIN, clean=True))
    assert {"close", "pool", "see", "and", "mail", "v2"} <= set(terms)
    assert not {"4512", "https", "example", "com", "1a2b3c4d5e", "org"} & set(terms)


def test_weights_of_title_body_identifiers_and_repeats():
    w = replace(PLAIN, title=1.0, body=0.5, idents=1.0, qtf_cap=2)
    terms = query_terms("Fix parseHeader\n\nheader header header parsing in `read_frame`", ("kw",), w)
    assert terms["fix"] == 2.0  # first line: 1 + title
    assert terms["header"] == 2.0  # 2 (title) + 1.5 (body) + 1 (identifier), capped at 2
    assert terms["parsing"] == 0.5
    assert terms["read"] == 1.5 and terms["frame"] == 1.5  # body + identifier
    assert terms["kw"] == 1.0
    assert "the" not in query_terms("the cache", (), replace(PLAIN, stop=True))


@given(st.text(max_size=300))
def test_any_task_text_gives_nonnegative_weights(task):
    for w in (PLAIN, replace(PLAIN, clean=True, stop=True, qtf_cap=1, body=0.25, idents=2.0, title=1.0)):
        terms = query_terms(task, (), w)
        assert all(v > 0 for v in terms.values())
        assert all(k == k.lower() for k in terms)
