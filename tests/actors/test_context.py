"""The context engine on small handmade repositories whose right answers are known."""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import orjson
import pytest
from orchestra.actors.context.engine import ContextEngine, cut_utf8
from orchestra.actors.context.index import ProjectIndex, tokenize
from orchestra.actors.context.ranking import Signals, rank


def make_repo(root: Path, git: bool = True) -> Path:
    files = {
        "app/auth/tokens.py": "def verify_jwt_token(token):\n    '''Check the JWT signature and expiry.'''\n    return decode(token)\n",
        "app/billing/invoice.py": "class InvoiceGenerator:\n    def render_pdf(self):\n        pass\n",
        "app/http/router.py": "def route_request(path):\n    return handlers[path]\n",
        "tests/test_tokens.py": "from app.auth.tokens import verify_jwt_token\n\ndef test_expired():\n    assert verify_jwt_token('x')\n",
        "docs/auth.md": "# Tokens\nHow JWT token verification works.\n",
        "pyproject.toml": '[project]\nname = "demo"\ndependencies = ["pyjwt>=2", "httpx"]\n',
        "README.md": "Demo project\n",
        "build/generated.py": "ignored = True\n",
        "assets/logo.png": "\x89PNG\x00\x00binary",
    }
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    (root / ".gitignore").write_text("build/\n")
    if git:
        env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@x"}
        subprocess.run(["git", "init", "-q", "-b", "main", str(root)], check=True, env=env)
        subprocess.run(["git", "-C", str(root), "add", "-A"], check=True, env=env)
        subprocess.run(["git", "-C", str(root), "commit", "-qm", "ISS-9 initial import"], check=True, env=env)
    return root


def test_identifiers_are_split():
    assert {"parse", "http", "request", "parsehttprequest"} <= set(tokenize("parseHTTPRequest"))
    assert {"verify", "jwt", "token"} <= set(tokenize("verify_jwt_token"))


@pytest.mark.parametrize("git", [True, False])
def test_listing_honours_ignores_and_marks_binaries(tmp_path, git):
    index = ProjectIndex(make_repo(tmp_path, git))
    index.refresh()
    assert "build/generated.py" not in index.files
    assert "app/auth/tokens.py" in index.files
    assert index.files["assets/logo.png"].binary


def test_ranking_puts_the_right_file_first(tmp_path):
    from orchestra.actors.context.ranking import Weights

    index = ProjectIndex(make_repo(tmp_path))
    index.refresh()
    ranked = [p for _, p, _ in rank(index, Signals(task="JWT token verification fails for expired tokens"))]
    assert ranked[0] == "app/auth/tokens.py"  # source above its test and its docs
    assert ranked.index("app/auth/tokens.py") < ranked.index("docs/auth.md")
    # no word of the task in it: only its one commit with tokens.py (co-change) lifts it
    lexical = [p for _, p, _ in rank(index, Signals(task="JWT token verification fails for expired tokens"),
                                     Weights(cochange=0))]
    assert "app/billing/invoice.py" not in lexical[:3]
    # a test engineer gets the tests of the ranked module first
    tester = [p for _, p, _ in rank(index, Signals(task="JWT token verification", prefer_kind="test"))]
    assert tester[0] == "tests/test_tokens.py"
    # a file the task names comes first whatever its score
    named = [p for _, p, _ in rank(index, Signals(task="fix the layout in invoice.py"))]
    assert named[0] == "app/billing/invoice.py"
    # files named by earlier agents' results of the issue are raised
    mentioned = [p for _, p, _ in rank(index, Signals(task="routing", mentioned=frozenset({"app/http/router.py"})))]
    assert mentioned[0] == "app/http/router.py"


def test_escapes_are_refused(tmp_path):
    root = make_repo(tmp_path / "repo", git=False)
    outside = tmp_path / "secret.txt"
    outside.write_text("TOP SECRET")
    os.symlink(outside, root / "link.txt")
    os.symlink(tmp_path, root / "up")
    index = ProjectIndex(root)
    assert index.scanner.safe_path("../secret.txt") is None
    assert index.scanner.safe_path("/etc/passwd") is None
    assert index.scanner.safe_path("link.txt") is None
    assert index.scanner.safe_path("up/secret.txt") is None
    index.refresh()
    assert "link.txt" not in index.files
    body = ContextEngine(root).build("i", "python-specialist", "secret", 65536, [], Signals())
    assert b"TOP SECRET" not in orjson.dumps(body)


def test_whole_answer_shape_metadata_and_git(tmp_path):
    engine = ContextEngine(make_repo(tmp_path))
    engine.refresh()
    (tmp_path / "app/http/router.py").write_text("changed\n")
    previous = [{"id": "r1", "agent_id": "a", "result": {"status": "success", "files": ["app/http/router.py"]}}]
    body = engine.build("ISS-9", "python-specialist", "jwt token", 262144, previous, Signals())
    ctx = body["context"]
    assert ctx["metadata"]["project_type"] == "python"
    assert ctx["metadata"]["dependencies"] == ["httpx", "pyjwt"]
    assert ctx["metadata"]["agent_profile"] == {}
    assert ctx["git_context"]["branch"] == "main"
    assert ctx["git_context"]["recent_commits"][0]["subject"] == "ISS-9 initial import"
    assert {"status": "M", "path": "app/http/router.py"} in ctx["git_context"]["uncommitted_changes"]
    assert ctx["previous_agent_outputs"] == previous
    first = ctx["relevant_files"][0]
    assert set(first) >= {"path", "content", "size", "last_modified", "language", "checksum"}
    assert first["checksum"].startswith("sha256:")
    assert body["truncated"] is False and body["total_size_bytes"] == len(orjson.dumps(body))


@pytest.mark.parametrize("budget", [1024, 2000, 5000, 20000])
def test_budget_is_a_hard_bound_and_never_cuts_a_character(tmp_path, budget):
    root = make_repo(tmp_path, git=False)
    (root / "app/auth/big.py").write_text(("# jwt token ünïcødé ✓ 漢字\n" + "x = 1\n" * 50) * 200)
    engine = ContextEngine(root)
    engine.refresh()
    body = engine.build("i", "python-specialist", "jwt token", budget, [], Signals())
    encoded = orjson.dumps(body)
    assert len(encoded) <= budget
    assert body["total_size_bytes"] == len(encoded)
    encoded.decode("utf-8")  # valid UTF-8 throughout
    if budget < 20000:
        assert body["truncated"] is True and body["truncation_strategy"]


def test_a_small_budget_shortens_the_skeleton_until_it_fits(tmp_path):
    """Dependencies, directories and the profile's lists give way before the budget does."""
    root = make_repo(tmp_path, git=False)
    deps = ", ".join(f'"dependency-number-{i}"' for i in range(200))
    (root / "pyproject.toml").write_text(f'[project]\nname = "demo"\ndependencies = [{deps}]\n')
    for i in range(60):
        (root / f"pkg{i}" / "deep").mkdir(parents=True)
        (root / f"pkg{i}" / "deep" / "m.py").write_text("x = 1\n")
    engine = ContextEngine(root)
    engine.refresh()
    profile = {"agent_type": "t", "capabilities": [f"capability-{i}" for i in range(100)]}
    body = engine.build("i", "t", "", 1024, [], Signals(), profile)
    assert len(orjson.dumps(body)) <= 1024 and body["truncated"] is True
    assert "metadata_shortened" in body["truncation_strategy"]


def test_a_budget_that_cannot_hold_the_fixed_part_is_refused_not_a_crash(tmp_path):
    from orchestra.actors.errors import TooLarge

    engine = ContextEngine(make_repo(tmp_path, git=False))
    engine.refresh()
    with pytest.raises(TooLarge) as caught:  # the ids asked for are echoed whole
        engine.build("i" * 700, "t" * 700, "", 1024, [], Signals())
    assert caught.value.bound == "context.max_bytes"


def test_cut_utf8():
    assert cut_utf8("a✓b", 2) == "a"
    assert cut_utf8("a✓b", 4) == "a✓"
    assert cut_utf8("abc", 10) == "abc"


def test_changed_files_bump_the_generation(tmp_path):
    engine = ContextEngine(make_repo(tmp_path, git=False))
    g0 = engine.refresh()
    assert engine.refresh() == g0
    (tmp_path / "app/new_module.py").write_text("def fresh(): pass\n")
    assert engine.refresh() > g0


def _commit(root: Path, message: str) -> None:
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t", "GIT_COMMITTER_EMAIL": "t@x"}
    subprocess.run(["git", "-C", str(root), "add", "-A"], check=True, env=env)
    subprocess.run(["git", "-C", str(root), "commit", "-qm", message], check=True, env=env)


def test_definitions_of_named_identifiers_rank_first(tmp_path):
    root = make_repo(tmp_path)
    (root / "app/http/session.py").write_text("class SessionStore:\n    def get(self, key):\n        return None\n")
    (root / "app/http/cache.py").write_text("# the session store caches sessions; see SessionStore elsewhere\nstore = {}\nsession = store\n")
    index = ProjectIndex(root)
    index.refresh()
    assert "sessionstore" in index.files["app/http/session.py"].defines
    ranked = [p for _, p, _ in rank(index, Signals(task="SessionStore.get returns None for a known session"))]
    assert ranked[0] == "app/http/session.py"


def test_churn_from_history_breaks_ties_towards_hot_files(tmp_path):
    root = make_repo(tmp_path)
    (root / "app/a.py").write_text("def parse_header(x):\n    return x\n")
    (root / "app/b.py").write_text("def parse_header(x):\n    return x\n")
    _commit(root, "add parsers")
    for i in range(5):
        (root / "app/b.py").write_text(f"def parse_header(x):\n    return x  # v{i}\n")
        _commit(root, f"tweak b {i}")
    index = ProjectIndex(root)
    index.refresh()
    assert index.churn["app/b.py"] == 6 and index.churn["app/a.py"] == 1
    ranked = [p for _, p, _ in rank(index, Signals(task="header parsing"))]
    assert ranked.index("app/b.py") < ranked.index("app/a.py")


def test_imports_resolve_and_tests_of_top_modules_come_with_them(tmp_path):
    root = make_repo(tmp_path)
    (root / "web").mkdir()
    (root / "web/router.js").write_text("const util = require('./util')\nfunction route(path) { return util.clean(path) }\n")
    (root / "web/util.js").write_text("exports.clean = function (p) { return p.trim() }\n")
    (root / "tests/check_routing.py").write_text("from app.http.router import route_request\n\ndef test_route():\n    route_request('/')\n")
    index = ProjectIndex(root)
    index.refresh()
    importers = index.imported_by()
    assert "web/router.js" in importers["web/util.js"]
    assert "tests/check_routing.py" in importers["app/http/router.py"]
    ranked = [p for _, p, _ in rank(index, Signals(task="route request handlers by path", prefer_kind="test"))]
    assert ranked.index("tests/check_routing.py") < ranked.index("app/http/router.py")


def test_a_file_under_a_symlinked_directory_is_not_indexed(tmp_path):
    root = make_repo(tmp_path / "repo", git=False)
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "creds.py").write_text("PASSWORD = 'hunter2'\n")
    os.symlink(outside, root / "linked")
    index = ProjectIndex(root)
    index.refresh()
    assert not any(p.startswith("linked/") for p in index.files)


def test_a_watched_batch_reads_only_changed_files_and_honours_gitignore(tmp_path):
    root = make_repo(tmp_path)
    index = ProjectIndex(root)
    index.refresh()
    (root / "build" / "x.py").write_text("ignored = True\n")  # build/ is in .gitignore
    (root / "new.py").write_text("def fresh():\n    pass\n")
    (root / "README.md").unlink()
    changes = index.scanner.scan_paths(
        {"build/x.py", "new.py", "README.md", "app/auth/tokens.py", "../outside.py"},
        index.stat_snapshot(), index.head,
    )
    assert [e.path for e in changes.entries] == ["new.py"]
    assert changes.removed == ["README.md"]
    assert index.apply(changes) and "new.py" in index.files and "README.md" not in index.files


def test_git_state_is_asked_once_per_generation_and_follows_staging(tmp_path, monkeypatch):
    from orchestra.actors.context import engine as engine_module

    root = make_repo(tmp_path)
    for i in range(12):
        (root / "app" / f"m{i}.py").write_text(f"x = {i}\n")
        _commit(root, f"change {i}")
    engine = ContextEngine(root)
    engine.refresh()
    calls = []
    real = engine_module.git_context
    monkeypatch.setattr(engine_module, "git_context", lambda r, **kw: calls.append(r) or real(r, **kw))
    small = engine.build("i", "python-specialist", "jwt", 1500, [], Signals())
    assert small["truncated"] and len(small["context"]["git_context"]["recent_commits"]) < 10
    full = engine.build("i", "python-specialist", "jwt", 262144, [], Signals())
    assert len(full["context"]["git_context"]["recent_commits"]) == 10  # the cache was not cut
    assert len(calls) == 1  # one git look-up for both answers
    (root / "app/auth/tokens.py").write_text("def verify_jwt_token(token):\n    return None\n")
    subprocess.run(["git", "-C", str(root), "add", "app/auth/tokens.py"], check=True)
    engine.refresh()
    staged = engine.build("i", "python-specialist", "jwt", 262144, [], Signals())
    assert {"status": "M", "path": "app/auth/tokens.py"} in staged["context"]["git_context"]["uncommitted_changes"]
    assert len(calls) == 2


def _scoped_repo(root: Path) -> Path:
    make_repo(root)
    files = {
        # the same words everywhere: only the scope and the phrase tell these apart
        "net/transport/conn.py": "def close_connection(conn):\n    conn.close()  # close the stream\n",
        "net/resolver/conn.py": "def close_connection(conn):\n    conn.close()  # close the stream\n",
        "net/linebuffer.py": "def fill(buf):\n    return buf  # close the stream: line by line, buffer by buffer\n",
        "net/stream.py": "def fill(buf):\n    return buf  # close the stream: line by line, buffer by buffer\n",
        "shell/_bash_complete.py": "def close_connection(conn):\n    conn.close()  # close the stream\n",
        "shell/_zsh_complete.py": "def close_connection(conn):\n    conn.close()  # close the stream\n",
    }
    for rel, text in files.items():  # one commit each: no file changed with another
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_text(text)
        _commit(root, f"add {rel}")
    return root


def test_a_scope_prefix_picks_its_folder(tmp_path):
    from orchestra.actors.context.ranking import Weights

    index = ProjectIndex(_scoped_repo(tmp_path))
    index.refresh()
    for task, want in (("resolver: close connection twice", "net/resolver/conn.py"),
                       ("net/transport: close connection twice", "net/transport/conn.py"),
                       ("fix(resolver): close connection twice", "net/resolver/conn.py")):
        ranked = [p for _, p, _ in rank(index, Signals(task=task))]
        assert ranked[0] == want, (task, ranked[:3])
    # a conventional-commit type is not a scope; without the signal the tie goes by path
    assert [p for _, p, _ in rank(index, Signals(task="fix: close connection twice"))][0] == "net/resolver/conn.py"
    # a scope that is no word of any path: only the signal finds _zsh_complete.py
    task = "zshcomplete: close connection twice"
    assert [p for _, p, _ in rank(index, Signals(task=task))][0] == "shell/_zsh_complete.py"
    assert [p for _, p, _ in rank(index, Signals(task=task), Weights(scope=0))][0] == "net/resolver/conn.py"


def test_a_phrase_that_spells_a_file_name_picks_it(tmp_path):
    from orchestra.actors.context.ranking import Weights

    index = ProjectIndex(_scoped_repo(tmp_path))
    index.refresh()
    for task in ("the line buffer does not close the stream", "lineBuffer.fill does not close the stream"):
        ranked = [p for _, p, _ in rank(index, Signals(task=task))]
        assert ranked[0] == "net/linebuffer.py", (task, ranked[:3])
    # without the signal, "stream" in the other file's path wins
    off = [p for _, p, _ in rank(index, Signals(task="the line buffer does not close the stream"), Weights(phrase=0))]
    assert off[0] == "net/stream.py"


def test_with_few_word_matches_the_most_changed_sources_follow(tmp_path):
    """They follow the sources that match, and come before the matches of other kinds."""
    from orchestra.actors.context.ranking import Weights

    root = make_repo(tmp_path)
    for i in range(3):
        (root / "app/http/router.py").write_text(f"def route_request(path):\n    return handlers[path]  # {i}\n")
        _commit(root, f"router {i}")
    index = ProjectIndex(root)
    index.refresh()
    ranked = [p for _, p, _ in rank(index, Signals(task="Release 3.0.0beta4"))]
    assert ranked == ["app/http/router.py"]  # no word matches: the source changed more than once
    assert rank(index, Signals(task="Release 3.0.0beta4"), Weights(prior=False)) == []
    # (co-change off: the initial import would link every file with tokens.py)
    ranked = [p for _, p, _ in rank(index, Signals(task="JWT token verification fails for expired tokens"),
                                    Weights(cochange=0))]
    assert ranked[:2] == ["app/auth/tokens.py", "app/http/router.py"]
    assert ranked.index("app/http/router.py") < ranked.index("tests/test_tokens.py")


def test_files_named_by_earlier_results_are_matched_at_folder_boundaries(tmp_path):
    from orchestra.actors.context.engine import files_named_in_results

    index = ProjectIndex(make_repo(tmp_path))
    index.refresh()
    previous = [{"result": {"status": "ok", "touched": ["app/http/router.py", "see notmyapp/billing/invoice.py"],
                            "notes": "also auth/tokens.py and ./pyproject.toml"}}]
    assert files_named_in_results(previous, index) == {"app/http/router.py", "app/auth/tokens.py", "pyproject.toml"}


def test_commits_mentioning_an_issue_match_its_id_as_a_whole_word(tmp_path):
    root = make_repo(tmp_path)
    for name, message in (("a.py", "ISS-4: fix a (#12)"), ("b.py", "ISS-42: fix b (#123)"), ("c.py", "see [x.y]+ in c")):
        (root / "app" / name).write_text("x = 1\n")
        _commit(root, message)
    index = ProjectIndex(root)
    index.refresh()
    files_of_commits_mentioning = lambda _root, needle: index.files_of_commits_mentioning(needle)  # noqa: E731
    assert files_of_commits_mentioning(root, "ISS-4") == {"app/a.py"}
    assert files_of_commits_mentioning(root, "#12") == {"app/a.py"}
    assert files_of_commits_mentioning(root, "#123") == {"app/b.py"}
    assert files_of_commits_mentioning(root, "[x.y]+") == {"app/c.py"}
    assert files_of_commits_mentioning(root, "ISS-5") == set()


def test_profile_globs_raise_the_files_they_match(tmp_path):
    index = ProjectIndex(make_repo(tmp_path))
    index.refresh()
    task = "request generator"
    plain = [p for _, p, _ in rank(index, Signals(task=task))]
    assert plain[0] == "app/http/router.py"
    for globs in (("**/billing/*",), ("invoice.py",), ("*.md", "app/b*/*.py")):
        ranked = [p for _, p, _ in rank(index, Signals(task=task, globs=globs))]
        assert ranked[0] == "app/billing/invoice.py", globs
    assert index.matching(("*.toml", "**/auth/*")) == {"pyproject.toml", "app/auth/tokens.py"}


def test_a_cold_index_read_by_a_child_process_equals_one_read_here(tmp_path):
    from orchestra.actors.context.engine import ContextEngine

    root = _scoped_repo(tmp_path)
    (root / "app/auth/tokens.py").write_text("def verify_jwt_token(token):\n    return 'changed'\n")
    _commit(root, "ISS-9 change tokens")
    (root / "notes.txt").write_text("untracked, not ignored: indexed too\n")
    from orchestra.actors.context.scanner import scan_in_child

    parts = list(scan_in_child(root))  # the child itself answers: no fallback
    assert sum(len(p.entries) for p in parts) == len(ProjectIndex(root).scanner.list_paths())
    assert parts[-1].history is not None and parts[-1].git_stamp is not None
    child, here = ContextEngine(root), ContextEngine(root, scan_in_child=False)
    child.refresh()
    here.refresh()
    assert child.index.files.keys() == here.index.files.keys() and "notes.txt" in child.index.files
    assert all(child.index.files[p] == here.index.files[p] for p in here.index.files)
    assert child.index.churn == here.index.churn and child.index.churn["app/auth/tokens.py"] == 2
    assert child.index.cochange == here.index.cochange and child.index.head == here.index.head
    assert dict(child.index.postings) == dict(here.index.postings)
    assert child.index.scanner.git_stamp() == here.index.scanner.git_stamp() is not None
    # later refreshes read only what changed, here
    (root / "app/new.py").write_text("def fresh():\n    pass\n")
    generation = child.index.generation
    assert child.refresh() > generation and "app/new.py" in child.index.files


def test_a_failing_child_scan_falls_back_to_reading_here(tmp_path, monkeypatch):
    import sys

    from orchestra.actors.context.engine import ContextEngine

    root = make_repo(tmp_path)
    monkeypatch.setattr(sys, "executable", str(tmp_path / "no-such-python"))
    engine = ContextEngine(root)
    engine.refresh()
    assert "app/auth/tokens.py" in engine.index.files and engine.index.churn


def test_a_child_scan_failing_midway_keeps_what_arrived_and_reads_the_rest_here(tmp_path, monkeypatch):
    from orchestra.actors.context import engine as engine_module
    from orchestra.actors.context.index import ChangeSet
    from orchestra.actors.context.scanner import ScanFailed

    root = make_repo(tmp_path)
    here = ContextEngine(root, scan_in_child=False)
    here.refresh()
    first = ProjectIndex(root).scanner.scan({}, None).entries[0]  # read, not yet taken by an index

    def half_then_fail(root, started=None, policy=None):
        yield ChangeSet([first], [], None, None)
        raise ScanFailed("the child died")

    monkeypatch.setattr(engine_module, "scan_in_child", half_then_fail)
    engine = ContextEngine(root)
    assert engine.refresh() == 1
    assert engine.index.files == here.index.files and engine.index.churn == here.index.churn
    assert dict(engine.index.postings) == dict(here.index.postings)


def test_the_definitions_index_follows_adds_and_removals_of_common_names(tmp_path):
    root = make_repo(tmp_path, git=False)
    for i in range(12):
        (root / f"app/w{i}.py").write_text(f"class Widget:\n    pass\n\ndef only_in_{i}():\n    pass\n")
    index = ProjectIndex(root)
    index.refresh()
    assert set(index.definitions["widget"]) == {f"app/w{i}.py" for i in range(12)}
    assert index.definitions["only_in_3"] == ("app/w3.py",)
    for i in range(11):
        (root / f"app/w{i}.py").unlink()
    index.refresh()
    assert set(index.definitions["widget"]) == {"app/w11.py"} and "only_in_3" not in index.definitions
    (root / "app/w11.py").unlink()
    index.refresh()
    assert "widget" not in index.definitions
    ranked = [p for _, p, _ in rank(index, Signals(task="SessionStore widget"))]
    assert "app/w11.py" not in ranked


def test_stopping_ends_a_cold_index_read_by_the_child_without_reading_here(tmp_path):
    import threading

    from orchestra.actors.context.engine import ContextEngine

    root = make_repo(tmp_path)
    engine = ContextEngine(root)
    engine.stop()  # the server stops as the child starts: it is killed, nothing is read here
    assert engine.refresh() == 0 and not engine.index.files
    assert engine._child is not None and engine._child.returncode is not None
    # and while it runs: the refresh returns once the child is killed
    for i in range(300):
        (root / f"gen/m{i}.py").parent.mkdir(exist_ok=True)
        (root / f"gen/m{i}.py").write_text("def f(x):\n    return x  # words words words\n" * 200)
    engine = ContextEngine(root)
    done = threading.Event()
    worker = threading.Thread(target=lambda: (engine.refresh(), done.set()))
    worker.start()
    deadline = time.monotonic() + 5
    while engine._child is None and time.monotonic() < deadline:
        time.sleep(0.001)
    engine.stop()
    assert done.wait(5)
    worker.join()
    assert len(engine.index.files) < len(ProjectIndex(root).scanner.list_paths())


@pytest.mark.parametrize("child", [
    "printf '\\005\\000\\000\\000junk!'",  # a frame that is not marshal data
    "head -c 300000 /dev/zero | tr '\\0' x >&2; exit 3",  # much on stderr, then a failure
])
def test_a_misbehaving_scanner_child_is_a_failed_scan_not_a_crash(tmp_path, monkeypatch, child):
    import sys

    from orchestra.actors.context.engine import ContextEngine
    from orchestra.actors.context.scanner import ScanFailed, scan_in_child

    fake = tmp_path / "fake-python"
    fake.write_text(f"#!/bin/sh\n{child}\n")
    fake.chmod(0o755)
    root = make_repo(tmp_path / "repo")
    monkeypatch.setattr(sys, "executable", str(fake))
    with pytest.raises(ScanFailed):
        list(scan_in_child(root))
    engine = ContextEngine(root)
    engine.refresh()  # read here instead
    assert "app/auth/tokens.py" in engine.index.files


def test_asking_git_for_the_context_does_not_rewrite_its_staging_index(tmp_path):
    """A rewrite moves git's state and with it the index generation: each answer would make
    the next identical request a cache miss."""
    from orchestra.actors.context.gitinfo import git_context

    root = make_repo(tmp_path)
    tracked = root / "app/auth/tokens.py"
    os.utime(tracked, ns=(tracked.stat().st_atime_ns, tracked.stat().st_mtime_ns + 5_000_000_000))
    before = (root / ".git/index").stat().st_mtime_ns
    assert git_context(root)["uncommitted_changes"] == []  # same content: not a change
    assert (root / ".git/index").stat().st_mtime_ns == before
    index = ProjectIndex(root)
    index.refresh()
    generation = index.generation
    index.refresh()
    assert index.generation == generation


def test_a_bare_file_name_names_its_file_but_not_a_crowd(tmp_path):
    from orchestra.actors.context.ranking import named_in

    root = make_repo(tmp_path, git=False)
    for pkg in ("a", "b", "c", "d"):
        (root / pkg).mkdir()
        (root / pkg / "__init__.py").write_text("x = 1\n")
    index = ProjectIndex(root)
    index.refresh()
    assert named_in("fix the layout in invoice.py", index) == {"app/billing/invoice.py"}
    assert named_in("clean up __init__.py", index) == set()  # four of them: none is meant
    assert named_in("clean up b/__init__.py", index) == {"b/__init__.py"}


def test_the_index_memo_forgets_the_least_recently_used_tables_first(tmp_path):
    index = ProjectIndex(make_repo(tmp_path, git=False))
    index.refresh()
    listing = index.listing()
    made = []
    for i in range(2000):  # many task words asked over an index's life
        index.word_memo(("bm25", f"w{i}"), lambda i=i: made.append(i) or i)
        assert index.listing() is listing  # used all along: never made again
    assert index.word_memo(("bm25", "w1999"), lambda: -1) == 1999 and index.word_memo(("bm25", "w0"), lambda: -1) == -1
    assert len(made) == 2000


def test_the_words_of_many_tasks_never_push_a_table_out(tmp_path):
    # a table asked for now and then (what a newcomer reads first, the imports) stays made
    # however many task words are asked in between: on moby the first answer with no task
    # after a hundred with one took 80 ms instead of 5 when it had to be made again
    from orchestra.actors.context.engine import ContextEngine
    from orchestra.actors.context.orientation import first_reads

    def word(n: int) -> str:  # letters only: one word to the tokenizer
        return "".join(chr(97 + n // 26 ** k % 26) for k in range(3)) + "word"

    root = make_repo(tmp_path, git=False)
    for i in range(100):
        (root / "app" / f"mod{i}.py").write_text(" ".join(word(10 * i + j) for j in range(10)) + "\n")
    engine = ContextEngine(root, scan_in_child=False)
    engine.refresh()
    index = engine.index
    reads, imports = first_reads(index), index.imported_by()
    for i in range(300):
        engine.build(f"t-{i}", "bench", " ".join(word(3 * i + j) for j in range(3)), 60_000, [], Signals())
    assert first_reads(index) is reads and index.imported_by() is imports
