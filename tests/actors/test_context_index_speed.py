"""What keeps an uncached answer quick: no git call per request, words counted once per
distinct word, vendored code listed but not read."""

from __future__ import annotations

import subprocess
from collections import Counter

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from orchestra.actors.context.engine import ContextEngine
from orchestra.actors.context.files import term_counts, tokenize
from orchestra.actors.context.index import ProjectIndex
from orchestra.actors.context.ranking import Signals

from tests.actors.test_context import _commit, make_repo


@given(st.text(alphabet=st.sampled_from("aZ_b9 XML\nHttpRequest_v2 parseHTTPÄé-."), max_size=300))
def test_term_counts_are_tokenize_counted(text):
    counts, length = term_counts(text)
    words = tokenize(text)
    assert counts == dict(Counter(words)) and length == len(words)


def _term_counts_by_regex(text):
    """term_counts as it was (a regex's words, each distinct one split once): the reference."""
    import re

    word_re = re.compile(r"[A-Za-z][A-Za-z0-9]*|[0-9]+")
    camel = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|[0-9]+")
    counts, length = {}, 0
    for word, n in Counter(word_re.findall(text)).items():
        low = word.lower()
        if len(low) > 1:
            counts[low] = counts.get(low, 0) + n
            length += n
        if low == word or word.isupper():
            continue
        parts = camel.findall(word)
        if len(parts) > 1:
            for part in parts:
                if len(part) > 1:
                    counts[part.lower()] = counts.get(part.lower(), 0) + n
                    length += n
    return counts, length


@given(st.lists(st.sampled_from(list("aZ_b9 0x1F\n\t.-Äé\u212a\u0130\ud800") + [
    "HTTPServer", "v2", "0xDEADbeef", "12abC", "parseHTTPRequest", "ALL_CAPS"]), max_size=120).map("".join))
def test_term_counts_by_bytes_are_the_regex_counts_in_the_same_order(text):
    expected = _term_counts_by_regex(text)
    counts, length = term_counts(text)
    assert (list(counts.items()), length) == (list(expected[0].items()), expected[1])
    if "\ud800" not in text:
        # from a file's bytes, invalid UTF-8 included: the counts of its decoded text
        data = text.encode("utf-8") + b"\xff\xe2A1b" + text.encode("utf-16-le")
        decoded = data.decode("utf-8", "replace")
        assert term_counts(data) == term_counts(decoded) == _term_counts_by_regex(decoded)


def test_an_answer_for_a_new_issue_runs_no_git_command(tmp_path, monkeypatch):
    root = make_repo(tmp_path)
    (root / "app/http/router.py").write_text("def route_request(path):\n    return None\n")
    _commit(root, "ISS-77: routes may be missing")
    engine = ContextEngine(root)
    engine.refresh()
    engine.build("ISS-1", "python-specialist", "", 65536, [], Signals())  # git's state, once

    def no_subprocess(*args, **kwargs):
        raise AssertionError(f"a subprocess per request: {args}")

    monkeypatch.setattr(subprocess, "run", no_subprocess)
    monkeypatch.setattr(subprocess, "Popen", no_subprocess)
    for issue in ("ISS-77", "ISS-78", "ISS-7"):
        body = engine.build(issue, "python-specialist", "invoice", 65536, [], Signals())
        relevance = {f["path"]: f["relevance"] for f in body["context"]["relevant_files"]}
        # the commit naming the issue raises its file (from the index's memory of the history)
        assert (relevance.get("app/http/router.py", 0) > 8) is (issue == "ISS-77"), (issue, relevance)


def test_vendored_code_is_listed_but_not_read(tmp_path):
    root = make_repo(tmp_path)
    for rel in ("vendor/github.com/x/y/z.go", "web/node_modules/pkg/index.js", "third_party/lib/q.py"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text("func VeryRareWordZebra() {}\n")
    _commit(root, "vendor deps")
    index = ProjectIndex(root)
    index.refresh()
    assert {"vendor/github.com/x/y/z.go", "third_party/lib/q.py"} <= index.files.keys()
    assert "veryrarewordzebra" not in index.postings
    assert index.files["vendor/github.com/x/y/z.go"].length == 0


def test_commits_naming_an_issue_found_through_their_numbered_words_match_a_full_scan(tmp_path):
    root = make_repo(tmp_path)
    messages = ["ISS-4: fix a (#12)", "ISS-42 b", "v2_3 and x#12y", "GH-12_ no", "refs #12, ISS-4.", "plain words"]
    for n, message in enumerate(messages):
        (root / "app" / f"m{n}.py").write_text("x = 1\n")
        _commit(root, message)
    index = ProjectIndex(root)
    index.refresh()
    full = {needle: index.files_of_commits_mentioning(needle) for needle in ("ISS-4", "#12", "12", "v2_3", "GH-12", "words")}
    assert full["ISS-4"] == {"app/m0.py", "app/m4.py"}
    assert full["#12"] == {"app/m0.py", "app/m4.py"}
    assert full["12"] == {"app/m0.py", "app/m4.py"}  # not x#12y, not GH-12_
    assert full["v2_3"] == {"app/m2.py"}
    assert full["GH-12"] == set()
    assert full["words"] == {"app/m5.py"}  # no digit: every message is looked at
    index._numbered = {}  # without the numbered words nothing with a digit is found
    assert index.files_of_commits_mentioning("ISS-4") == set()


@given(st.text(alphabet=st.sampled_from("ab Kx_Y9\n\u212a\u0130ioIOReader"), max_size=400),
       st.sets(st.sampled_from(["io", "reader", "ab", "k", "x9", "kx", "9", "ya"]), max_size=3))
def test_windows_find_the_same_lines_as_splitting_every_line(text, terms):
    from orchestra.actors.context.engine import windows

    # a word counts where it appears in a line, also inside an identifier (K matches k)
    lines = text.split("\n")
    hits = [i for i, line in enumerate(lines) if any(t in line.lower() for t in terms)]
    out = windows(text, terms, 10**6)
    if not terms or not hits:
        assert out == text
    else:
        for i in hits:
            assert lines[i] in out
        assert out.count("... lines ") >= 1


@given(st.text(alphabet=st.sampled_from("abc \n_x"), max_size=300),
       st.sets(st.sampled_from(["a", "ab", "abc", "bc", "b", "cab", "x_", "_x_", "aa", "c a"]), min_size=1, max_size=5))
def test_excerpt_matches_are_the_alternations_matches(text, terms):
    from orchestra.actors.context.engine import _matches, _terms_pattern

    # overlapping terms, terms inside others: leftmost first, then the longest, none overlapping
    expected = [m.span() for m in _terms_pattern(frozenset(terms)).finditer(text)]
    assert _matches(text, terms) == expected


#: the line-anchored patterns of files.py as they were: ``^`` under MULTILINE, over the text
_AT_LINE_STARTS = {
    ("defs", "python"): r"^\s*(?:async\s+)?(?:def|class)\s+([A-Za-z_]\w*)",
    ("defs", "go"): r"^(?:func(?:\s*\([^)]*\))?|type)\s+([A-Za-z_]\w*)",
    ("defs", "rust"): r"^\s*(?:pub(?:\([^)]*\))?\s+)?(?:async\s+)?(?:fn|struct|enum|trait|type|mod|macro_rules!)\s+([A-Za-z_]\w*)",
    ("imports", "python"): r"^\s*(?:from\s+([.\w]+)\s+import|import\s+([\w.]+))",
    ("imports", "go"): r'^\s*(?:import\s+)?(?:\w+\s+)?"([^"]+)"\s*$',
    ("imports", "rust"): r"^\s*(?:pub\s+)?(?:mod\s+(\w+)\s*;|use\s+(?:crate|super|self)::([\w:]+))",
}


@pytest.mark.parametrize("which", sorted(_AT_LINE_STARTS))
@settings(max_examples=300)
@given(st.lists(st.sampled_from(["import", "import ", "from ", " ", "\t", "\n", "\n\n", '"', '"fmt"', "(", ")", "fmt", "x ",
                                 "x", "_", '"github.com/a/b"', "é", "//", "\r", "def ", "class ", "async ", "func ",
                                 "func (r *T) ", "type ", "pub ", "pub(crate) ", "fn ", "mod ", "use crate::a::b",
                                 ";", "os.path", ".", "Name"]), max_size=40).map("".join))
@example('"fmt"\nx').via("a match ending before a newline, then a line")
@example('import\n"a"\n\n  "b"  \nx').via("blank lines and spaces a match spans")
@example("def f\nclass g\n  async def h").via("matches on consecutive lines")
def test_line_anchored_patterns_find_what_the_caret_patterns_found(which, text):
    import re

    from orchestra.actors.context import files

    table = files._DEFS if which[0] == "defs" else files._IMPORTS
    caret = re.compile(_AT_LINE_STARTS[which], re.M)
    # the same matches: the same groups and ends, each starting at the newline before its line
    # (one character earlier in the text with a newline put before it), or at the match's own
    # first character when it starts on an empty line right after the previous match's end
    found = [(m.start(), m.end() - 1, m.groups()) for m in files._found(table[which[1]], text)]
    expected = [(m.start(), m.end(), m.groups()) for m in caret.finditer(text)]
    assert [(end, groups) for _, end, groups in found] == [(end, groups) for _, end, groups in expected]
    for (start, _, _), (caret_start, _, _) in zip(found, expected, strict=True):
        assert start == caret_start or (start == caret_start + 1 and text[caret_start] == "\n")


def test_glob_verdicts_kept_across_generations_select_what_a_fresh_index_selects(tmp_path, monkeypatch):
    from orchestra.actors.context import index as index_module

    for rel in ("app/a.py", "app/b.go", "docs/x.md", "pkg/mod.py", "logs/keep.log"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x\n")
    globs = ("**/*.py", "docs/", "!pkg/*")
    index = ProjectIndex(tmp_path)
    index.refresh()
    assert index.matching(globs) == {"app/a.py", "docs/x.md"}
    asked: list[list[str]] = []
    real = index_module._selected

    def counting(spec, paths):
        asked.append(sorted(paths))
        return real(spec, paths)

    monkeypatch.setattr(index_module, "_selected", counting)
    (tmp_path / "docs/y.md").write_text("y\n")
    (tmp_path / "pkg/new.py").write_text("y\n")
    (tmp_path / "app/a.py").unlink()
    index.refresh()
    fresh = ProjectIndex(tmp_path)
    fresh.refresh()
    assert index.matching(globs) == fresh.matching(globs) == {"docs/x.md", "docs/y.md"}
    assert asked[0] == ["docs/y.md", "pkg/new.py"]  # the new generation asked about its new paths only


@given(st.text(alphabet=st.sampled_from("ab Kx_Y9\n\u212a\u0130ioIOReader("), max_size=400),
       st.sets(st.sampled_from(["io", "reader", "ab", "k", "x9", "kx", "9", "ya", "def"]), min_size=1, max_size=4),
       st.integers(40, 2_000), st.sets(st.sampled_from(["reader", "kx", "io"]), max_size=2))
def test_windows_from_kept_offsets_are_the_windows_searched_afresh(text, terms, budget, defines):
    # where each word starts, kept between answers (ContextEngine._starts), gives the very
    # windows a fresh search gives, over texts whose lowering keeps or changes their length
    from orchestra.actors.context.engine import term_starts, windows

    kept: dict[str, list[int]] = {}

    def starts_of(low: str, term: str) -> list[int]:
        return kept.setdefault(term, term_starts(low, term))

    weights = {t: 1.0 + len(t) for t in terms}
    fresh = windows(text, terms, budget, weights, defines)
    assert windows(text, terms, budget, weights, defines, starts_of) == fresh
    assert windows(text, terms, budget, weights, defines, starts_of) == fresh  # from what was kept
