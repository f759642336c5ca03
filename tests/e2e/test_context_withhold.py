"""`orchestra serve --context-withhold GLOB`: the setting reaches the context engine of every
project, over the real HTTP endpoint, alongside the built-in list."""

from __future__ import annotations

import urllib.parse

from tests.actors.test_context_secrets import SECRETS, make_careless_repo
from tests.e2e.test_process import Proc, client, token


async def test_serve_withholds_the_built_in_list_and_the_configured_globs(tmp_path):
    root = make_careless_repo(tmp_path / "repo")
    proc = Proc(tmp_path / "data", "--project", f"p1={root}",
                "--context-withhold", "config/*.yaml", "--context-withhold", "!config/dev.yaml")
    try:
        port = await proc.ready()
        tok = token(tmp_path / "data", "--project", "p1", "--agent-type", "security-auditor")
        task = "audit " + " ".join(SECRETS) + " config/dev.yaml"
        r = await client(port).request(
            "GET", f"/api/context/SEC-1/security-auditor?{urllib.parse.urlencode({'task': task})}", tok)
        assert r.status == 200
        raw = r.body
        for n in range(1, 15):
            assert f"zqsecret{n}".encode() not in raw
        files = {f["path"]: f for f in r.json()["context"]["relevant_files"]}
        assert files["config/prod.yaml"]["withheld"] is True
        assert files[".env.production"]["withheld"] is True
        assert files["config/dev.yaml"]["content"] == "debug: true\n"
    finally:
        proc.p.terminate()
        proc.wait()
