"""`orchestra serve --context-listing-share / --context-search-cache-bytes / --context-word-tables`:
the engine's bounds reach the context engine of every project, over the real HTTP endpoint."""

from __future__ import annotations

import urllib.parse

import orjson

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
