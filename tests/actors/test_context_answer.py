"""The shape of a context answer: the budget spread over the best files, the rest listed, reasons."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from orchestra.actors.context.engine import ContextEngine, windows
from orchestra.actors.context.ranking import Signals


def big_module(name: str, marker: str, lines: int = 4000) -> str:
    body = [f"# module {name}"]
    for i in range(lines):
        body.append(f"value_{i} = compute(\"{name} filler line {i}\")")
        if i == lines // 2:
            body.append(f"def handle_{marker}(request):\n    return '{marker} widget retry'")
    return "\n".join(body) + "\n"


def make_large_repo(root: Path) -> Path:
    """Twelve large sources that all match the task, and small unrelated ones."""
    for i in range(12):
        path = root / "pkg" / f"mod{i:02d}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(big_module(f"mod{i:02d}", "widget_retry" if i == 0 else f"other{i}"))
    for i in range(30):
        (root / "pkg" / f"small{i:02d}.py").write_text(f"def helper_{i}():\n    return 'widget {i}'\n")
    (root / "README.md").write_text("Widgets.\n")
    return root


@pytest.fixture
def engine(tmp_path: Path) -> ContextEngine:
    engine = ContextEngine(make_large_repo(tmp_path), scan_in_child=False)
    engine.refresh()
    return engine


def test_the_budget_is_spread_so_that_the_top_files_all_get_a_look(engine):
    body = engine.build("i-1", "bench", "widget retry fails in handle_widget_retry", 200_000, [], Signals())
    files = body["context"]["relevant_files"]
    inlined = [f for f in files if f["inlined"]]
    # each large module is ~170 KB: before, the first took most of the answer
    assert len(inlined) >= 10
    largest = max(len(f["content"].encode()) for f in inlined[:10])
    assert largest <= 200_000 // 8
    first = files[0]
    assert first["path"] == "pkg/mod00.py" and first["excerpt"] is True
    # the window around the definition the task names is in the excerpt
    assert "def handle_widget_retry(request):" in first["content"]
    assert len(orjson.dumps(body)) <= 200_000 and body["total_size_bytes"] == len(orjson.dumps(body))


@pytest.mark.parametrize("budget", [4000, 8000, 12_000])
def test_files_the_budget_cannot_hold_are_listed_in_rank_order_after_the_inlined(engine, budget):
    body = engine.build("i-2", "bench", "widget retry", budget, [], Signals())
    files = body["context"]["relevant_files"]
    flags = [f["inlined"] for f in files]
    assert flags == sorted(flags, reverse=True)  # inlined first, then listed
    listed = [f for f in files if not f["inlined"]]
    assert listed, "the budget holds the content of only some of the matches"
    assert all(f["content"] == "" for f in listed)
    assert [f["relevance"] for f in listed] == sorted((f["relevance"] for f in listed), reverse=True)
    assert body["truncated"] is True and "ranked_files_listed" in body["truncation_strategy"]
    assert body["file_count"] == len(files) and body["inlined_count"] == len(files) - len(listed)
    encoded = orjson.dumps(body)
    assert len(encoded) <= budget and body["total_size_bytes"] == len(encoded)


def test_every_listed_file_says_why_it_is_there(tmp_path):
    root = make_large_repo(tmp_path)
    (root / "pkg" / "notes_reader.py").write_text("def read_notes():\n    return open('x')\n")
    engine = ContextEngine(root, scan_in_child=False)
    engine.refresh()
    previous = [{"id": "r", "result": {"status": "success", "touched": ["pkg/small03.py"]}}]
    body = engine.build("i-3", "bench", "pkg/notes_reader.py: widget retry in handle_widget_retry",
                        200_000, previous, Signals())
    reasons = {f["path"]: f["reason"] for f in body["context"]["relevant_files"]}
    assert all(reasons.values())
    assert "named by the task" in reasons["pkg/notes_reader.py"]
    assert "defines handle_widget_retry" in reasons["pkg/mod00.py"]
    assert "matched words: " in reasons["pkg/mod00.py"] and "widget" in reasons["pkg/mod00.py"]
    assert "an earlier result named it" in reasons["pkg/small03.py"]


def test_a_small_file_is_inlined_whole_and_leaves_its_share_to_the_others(tmp_path):
    root = tmp_path
    (root / "a.py").write_text("def widget():\n    pass\n")
    (root / "b.py").write_text(big_module("b", "widget_b", 3000))
    engine = ContextEngine(root, scan_in_child=False)
    engine.refresh()
    body = engine.build("i-4", "bench", "widget", 60_000, [], Signals())
    by_path = {f["path"]: f for f in body["context"]["relevant_files"]}
    assert by_path["a.py"]["content"] == "def widget():\n    pass\n" and by_path["a.py"]["excerpt"] is False
    assert by_path["b.py"]["inlined"] and by_path["b.py"]["excerpt"]
    assert len(by_path["b.py"]["content"].encode()) > 30_000  # above an equal half: what a.py left


def test_windows_keep_the_best_matches_in_file_order():
    text = "\n".join(["import os"] + [f"line {i} common" for i in range(200)] + ["def rare_name():", "    pass"]
                     + [f"tail {i} common" for i in range(200)])
    out = windows(text, {"common", "rare"}, 600, {"common": 0.1, "rare": 5.0}, {"rare_name"})
    assert "def rare_name():" in out and len(out.encode()) <= 600
    assert out.startswith("... lines ")


def test_windows_find_the_right_lines_in_any_script():
    # "İ" lowers to two characters: positions of the lowered text are not the text's
    lines = ["İstanbul " * 3] * 100 + ["def parse_widget():", "    return 1"] + ["ünïcødé 漢字 filler"] * 100
    text = "\n".join(lines)
    out = windows(text, {"widget"}, 400)
    assert "def parse_widget():" in out and len(out.encode()) <= 400
    ascii_out = windows(text.replace("İ", "I"), {"widget"}, 400)
    assert ascii_out.splitlines()[0] == out.splitlines()[0]  # the same window: "... lines a-b ..."


def test_an_edited_file_is_windowed_by_its_new_text(engine):
    # where the task's words start in a file is kept between answers, by the file's content:
    # after an edit the next answer's excerpt shows the lines where the words are now
    task = "widget retry fails in handle_widget_retry"
    first = engine.build("e-1", "bench", task, 200_000, [], Signals())["context"]["relevant_files"][0]
    assert first["path"] == "pkg/mod00.py" and "def handle_widget_retry(request):" in first["content"]
    path = engine.root / "pkg" / "mod00.py"
    path.write_text("\n".join(f"pad_{i} = {i}" for i in range(1500)) + "\n" + path.read_text())
    engine.refresh()
    again = engine.build("e-2", "bench", task, 200_000, [], Signals())["context"]["relevant_files"][0]
    assert again["path"] == "pkg/mod00.py" and again["excerpt"] is True
    assert "def handle_widget_retry(request):" in again["content"]
    assert again["content"] != first["content"]  # the line numbers moved with the text
    windows_text = again["content"]
    new_lines = path.read_text().split("\n")
    for header in [line for line in windows_text.split("\n") if line.startswith("... lines ")]:
        lo = int(header.split()[2].split("-")[0])
        after = windows_text.split(header + "\n", 1)[1].split("\n", 1)[0]
        assert new_lines[lo - 1] == after  # each window starts where it says, in the new text


def test_the_search_cache_keeps_its_bound_and_changes_no_answer(tmp_path):
    from orchestra.actors.context.engine import ContextLimits

    root = make_large_repo(tmp_path)
    plain = ContextEngine(root, scan_in_child=False)
    small = ContextEngine(root, scan_in_child=False, limits=ContextLimits(search_cache_bytes=3000))
    none = ContextEngine(root, scan_in_child=False, limits=ContextLimits(search_cache_bytes=0))
    for e in (plain, small, none):
        e.refresh()
    tasks = ["widget retry fails in handle_widget_retry", "compute filler for mod03", "retry the widget",
             "filler line 7 of mod05", "widget retry fails in handle_widget_retry"]
    for n, task in enumerate(tasks * 2):
        bodies = [e.build(f"b-{n}", "bench", task, 60_000, [], Signals()) for e in (plain, small, none)]
        for body in bodies:
            body.pop("timestamp")
        assert bodies[0] == bodies[1] == bodies[2]
        assert 0 < small._starts.bytes <= 3000 and none._starts.bytes == 0
    assert plain._starts.bytes > 3000  # the bound mattered


_WORDS = ["widget", "retry", "handle_widget_retry", "compute", "filler", "mod03", "line", "value_7", "request",
          "helper_3", "other5", "Widgets", "module", "mod00", "pkg/mod02.py", "small07.py"]


@pytest.fixture(scope="module")
def two_engines(tmp_path_factory: pytest.TempPathFactory) -> tuple[ContextEngine, ContextEngine]:
    root = make_large_repo(tmp_path_factory.mktemp("large"))
    engines = (ContextEngine(root, scan_in_child=False), ContextEngine(root, scan_in_child=False))
    for e in engines:
        e.refresh()
    return engines


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(tasks=st.lists(st.lists(st.sampled_from(_WORDS), min_size=1, max_size=5).map(" ".join), min_size=2, max_size=6),
       max_bytes=st.sampled_from([8_000, 30_000, 120_000]))
def test_what_is_kept_between_answers_never_changes_one(two_engines, tasks, max_bytes):
    # the tables, the search offsets and the shortened listings kept between answers: the
    # same request gets the same answer however the engine was warmed (one answers the tasks
    # in order, the other in reverse)
    first, second = two_engines

    def answers(engine: ContextEngine, order: list[int]) -> dict[int, dict[str, object]]:
        out = {}
        for i in order:
            body = engine.build(f"K-{i}", "bench", tasks[i], max_bytes, [], Signals())
            body.pop("timestamp")
            out[i] = body
        return out

    order = list(range(len(tasks)))
    assert answers(first, order) == answers(second, order[::-1])
