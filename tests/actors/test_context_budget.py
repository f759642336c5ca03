"""The answer fits its budget whatever the budget, also when everything had to be shortened
(the names of the strategies are part of the answer too)."""

from __future__ import annotations

from pathlib import Path

import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st
from orchestra.actors.context.engine import ContextEngine
from orchestra.actors.context.ranking import Signals


def test_every_budget_holds_an_answer_that_had_to_shorten_everything(tmp_path):
    for i in range(600):
        path = tmp_path / f"module_group_{i % 40}" / f"handler_for_the_request_kind_{i}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        # long lines, few escapes: a window can fill the room to the byte
        path.write_text((f"request handler {i} " * 100 + "\n") * (1 + (i % 7) * 10))
    engine = ContextEngine(tmp_path, scan_in_child=False)
    engine.refresh()
    strategies = set()
    # around 100,000: where the size's own digits grow from five to six
    for max_bytes in [*range(12_000, 60_000, 997), *range(99_000, 101_000, 97), *range(9_900, 10_100, 13)]:
        body = engine.build("ISS-1", "python-specialist", "request handler", max_bytes, [], Signals())
        assert len(orjson.dumps(body)) == body["total_size_bytes"] <= max_bytes
        strategies.add(body["truncation_strategy"])
    # some budgets had to shorten the listing and drop ranked files, among other things: the
    # longest strategy names were part of what had to fit
    assert any({"structure_listing_shortened", "ranked_files_dropped"} <= set(s.split("+")) and s.count("+") >= 2
               for s in strategies), strategies



def test_the_stated_size_counts_its_own_digits_across_a_power_of_ten():
    from orchestra.actors.context.engine import _settle_size

    for pad in range(99_900, 100_010):  # the first size stated has five digits, the body six
        body = {"pad": "x" * pad, "total_size_bytes": 0}
        _settle_size(body)
        assert len(orjson.dumps(body)) == body["total_size_bytes"]


def _framework(root: Path) -> Path:
    for i in range(3000):
        path = root / "src" / "Illuminate" / f"component_{i % 30}" / f"SomeRatherLongClassName{i}.php"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(f"<?php\nclass SomeRatherLongClassName{i} {{}}\n")
    (root / "README.md").write_text("# the framework\n")
    (root / "src" / "Illuminate" / "Queue").mkdir()
    (root / "src" / "Illuminate" / "Queue" / "FailoverQueue.php").write_text(
        "<?php\nclass FailoverQueue {\n" + "    // failover between queue connections\n" * 400 + "}\n")
    return root


def test_a_long_listing_takes_at_most_its_share_and_the_ranked_files_get_the_rest(tmp_path):
    """A code base of thousands of files: the listing alone would take most of the budget and
    leave the best-ranked file unread. It takes at most ``LISTING_SHARE`` of it, keeping the
    paths nearest the root, and the best-ranked file is inlined first."""
    from orchestra.actors.context.engine import LISTING_SHARE

    engine = ContextEngine(_framework(tmp_path), scan_in_child=False)
    engine.refresh()
    max_bytes = 200_000
    body = engine.build("ISS-1", "bench-agent", "Failover queue connections", max_bytes, [], Signals())
    assert len(orjson.dumps(body)) <= max_bytes
    structure = body["context"]["project_structure"]
    assert structure["total_files"] == 3002 and structure.get("listing_truncated")
    listing = len(orjson.dumps(structure["files"])) + len(orjson.dumps(structure["directories"]))
    assert listing <= max_bytes * LISTING_SHARE
    assert "README.md" in structure["files"]  # nearest the root first
    first = body["context"]["relevant_files"][0]
    assert first["path"] == "src/Illuminate/Queue/FailoverQueue.php" and first["inlined"] and first["content"]
    assert "structure_listing_shortened" in body["truncation_strategy"]


def test_the_listing_share_is_the_deployments_to_set(tmp_path):
    # serve --context-listing-share: a smaller share lists fewer paths, a larger one more,
    # each within its share of max_bytes
    from orchestra.actors.context.engine import ContextLimits

    root = _framework(tmp_path)
    max_bytes = 200_000
    sizes = []
    for share in (0.1, 0.25, 0.5):
        engine = ContextEngine(root, scan_in_child=False, limits=ContextLimits(listing_share=share))
        engine.refresh()
        body = engine.build("ISS-1", "bench-agent", "Failover queue connections", max_bytes, [], Signals())
        assert len(orjson.dumps(body)) <= max_bytes
        structure = body["context"]["project_structure"]
        listing = len(orjson.dumps(structure["files"])) + len(orjson.dumps(structure["directories"]))
        assert max_bytes * share * 0.8 <= listing <= max_bytes * share
        sizes.append(listing)
    assert sizes == sorted(sizes)
    with pytest.raises(ValueError):
        ContextLimits(listing_share=0.0)


def test_a_shortened_listing_follows_the_code_base_and_the_budget(tmp_path):
    # the shortened listing is kept per budget until the index moves: a file added at the
    # root is in the next answer's listing, and another budget gets its own listing
    root = _framework(tmp_path)
    engine = ContextEngine(root, scan_in_child=False)
    engine.refresh()

    def listed(issue: str, max_bytes: int) -> list[str]:
        body = engine.build(issue, "bench-agent", "Failover queue connections", max_bytes, [], Signals())
        assert body["context"]["project_structure"]["listing_truncated"]
        return body["context"]["project_structure"]["files"]

    before = listed("ISS-1", 200_000)
    assert "CHANGELOG.md" not in before and listed("ISS-2", 200_000) == before
    (root / "CHANGELOG.md").write_text("# changes\n")
    engine.refresh()
    after = listed("ISS-3", 200_000)
    assert "CHANGELOG.md" in after
    smaller = listed("ISS-4", 100_000)
    assert len(smaller) < len(after) and "CHANGELOG.md" in smaller


@pytest.fixture(scope="module")
def crowded(tmp_path_factory: pytest.TempPathFactory) -> ContextEngine:
    root = tmp_path_factory.mktemp("crowded")
    for i in range(600):
        path = root / f"module_group_{i % 40}" / f"handler_for_the_request_kind_{i}.py"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text((f"request handler {i} " * 20 + "\n") * (1 + i % 5))
    engine = ContextEngine(root, scan_in_child=False)
    engine.refresh()
    return engine


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(share=st.floats(0.01, 1.0), max_bytes=st.integers(2_000, 300_000))
@example(share=0.6264930290402357, max_bytes=2000).via("the listing's brackets were not counted: 1 byte over")
def test_any_listing_share_and_budget_give_an_answer_within_both(crowded, share, max_bytes):
    # --context-listing-share is the deployment's: whatever it says, the answer fits its
    # budget and the listing its share (or the budget is refused whole, CTX_002)
    from orchestra.actors.context.engine import ContextLimits
    from orchestra.actors.errors import TooLarge

    crowded.limits = ContextLimits(listing_share=share)
    try:
        body = crowded.build("ISS-1", "python-specialist", "request handler 7", max_bytes, [], Signals())
    except TooLarge:
        assert max_bytes < 4_000  # only a budget too small for the answer's fixed part
        return
    assert len(orjson.dumps(body)) == body["total_size_bytes"] <= max_bytes
    structure = body["context"]["project_structure"]
    listing = len(orjson.dumps(structure["files"])) + len(orjson.dumps(structure["directories"]))
    assert listing <= max(4, int(max_bytes * share))
    assert structure["total_files"] == 600
