"""`orchestra serve --context-listing-share / --context-search-cache-bytes / --context-word-tables`:
the engine's bounds reach the context engine of every project, over the real HTTP endpoint."""

from __future__ import annotations

import argparse
import urllib.parse

import orjson
import pytest
from orchestra.actors.context.engine import ContextLimits
from orchestra.transport.config import SERVE_SETTINGS

from tests.actors.test_context_budget import _framework
from tests.e2e.test_process import Proc, client, token


async def test_serve_sets_the_context_engines_bounds(tmp_path):
    root = _framework(tmp_path / "repo")
    proc = Proc(tmp_path / "data", "--project", f"p1={root}", "--context-listing-share", "0.05",
                "--context-search-cache-bytes", "0", "--context-word-tables", "1")
    try:
        port = await proc.ready()
        tok = token(tmp_path / "data", "--project", "p1", "--agent-type", "python-specialist")
        query = urllib.parse.urlencode({"task": "Failover queue connections", "max_bytes": 200_000})
        r = await client(port).request("GET", f"/api/context/LIM-1/python-specialist?{query}", tok)
        assert r.status == 200
        structure = r.json()["context"]["project_structure"]
        listing = len(orjson.dumps(structure["files"])) + len(orjson.dumps(structure["directories"]))
        assert structure["listing_truncated"] is True and 0 < listing <= 200_000 * 0.05
        first = r.json()["context"]["relevant_files"][0]
        assert first["path"] == "src/Illuminate/Queue/FailoverQueue.php" and first["inlined"]
    finally:
        proc.p.terminate()
        proc.wait()


@pytest.mark.parametrize(("name", "inside", "outside"), [
    ("context_listing_share", ["0.01", "1"], ["0", "0.009", "1.01", "nan", "a quarter"]),
    ("context_search_cache_bytes", ["0", str(2**40)], ["-1", str(2**40 + 1), "4MiB"]),
    ("context_word_tables", ["1", "1000000"], ["0", "1000001", "1.5"]),
])
def test_the_engines_bounds_take_their_range_and_refuse_the_rest_in_one_line(name, inside, outside):
    setting = next(s for s in SERVE_SETTINGS if s.name == name)
    for text in inside:
        ContextLimits(**{name.removeprefix("context_"): setting.parse(text)})  # the engine takes it too
    for text in outside:
        with pytest.raises(argparse.ArgumentTypeError, match=r"is not an? (number|integer) from"):
            setting.parse(text)
