"""Globs the way git means them: the walk outside git (every .gitignore on the way down) and
the profiles' globs, checked against git itself on generated trees."""

from __future__ import annotations

import os
import subprocess
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from orchestra.actors.context.index import ProjectIndex
from orchestra.actors.context.scanning import TreeScanner

#: git with no user or system configuration (no global excludes file)
GIT_ENV = {**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1"}
# (no folder the walk never enters, such as dist/ or build/: see SKIP_DIRS)
DIRS = ["", "a/", "b/", "docs/", "out/", "a/b/", "a/out/", "docs/x/", "docs/x/y/", "gen/", "sub/"]
NAMES = ["setup.py", "x.py", "keep.py", "b.tmp", "c.txt", "important.txt", "README.md", "out", "b"]
PATTERNS = ["/out", "out/", "out", "docs/**/*.tmp", "*.tmp", "!keep.py", "gen/", "**/*.py", "a/**",
            "!a/x.py", "sub/", "*.txt", "!important.txt", "b/*", "/a/b/", "**/b", "x.py", "!*.py",
            "docs/*", "!docs/x/", "a/**/b", "*.md", "/*.py", "b", "!b", "**/x/**", "[a-c].tmp", "?.py",
            "\\!keep.py", "# comment", "", "a/b/*.txt", "docs/**"]


def git(*args: str, cwd: Path | None = None, input: bytes | None = None) -> list[str]:
    out = subprocess.run(["git", *args], cwd=cwd, input=input, capture_output=True, check=True, env=GIT_ENV).stdout
    return sorted(p for p in out.decode().split("\0") if p)


def write_tree(root: Path, files: list[str], ignores: dict[str, list[str]]) -> None:
    for rel in files:
        path = root / rel
        if path.exists() or any((root / p).is_file() for p in _parents(rel)):
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("x\n")
    for folder, lines in ignores.items():
        if (root / folder).is_dir() or folder == "":
            (root / folder).mkdir(parents=True, exist_ok=True)
            (root / folder / ".gitignore").write_text("\n".join(lines) + "\n")


def _parents(rel: str) -> list[str]:
    parts = rel.split("/")[:-1]
    return ["/".join(parts[: i + 1]) for i in range(len(parts))]


def git_listing(root: Path) -> list[str]:
    """What git lists as not ignored in ``root`` (made a repository elsewhere, so the tree
    itself holds no .git)."""
    with tempfile.TemporaryDirectory() as gd:
        git("init", "-q", "--bare", gd)
        return git(f"--git-dir={gd}", f"--work-tree={root}", "ls-files", "-o", "--exclude-standard", "-z", cwd=root)


trees = st.tuples(
    st.lists(st.tuples(st.sampled_from(DIRS), st.sampled_from(NAMES)).map("".join), min_size=1, max_size=25),
    st.dictionaries(st.sampled_from(["", "a/", "docs/", "a/b/", "sub/"]),
                    st.lists(st.sampled_from(PATTERNS), max_size=6), max_size=3),
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(trees)
def test_the_walk_outside_git_lists_what_git_lists(tree):
    files, ignores = tree
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        write_tree(root, files, ignores)
        expected = git_listing(root)
        scanner = TreeScanner(root)
        assert not scanner.is_git
        assert scanner.list_paths() == expected
        # a watcher's batch of paths is filtered by the same rules
        every = sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())
        assert sorted(set(every) - scanner._ignored_outside_git(every)) == expected


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(trees.map(lambda t: t[0]), st.lists(st.sampled_from(PATTERNS), min_size=1, max_size=6))
def test_profile_globs_select_what_git_would_ignore_with_them(files, globs):
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / "tree"
        root.mkdir()
        write_tree(root, files, {})
        patterns = Path(tmp) / "patterns"
        patterns.write_text("\n".join(globs) + "\n")
        with tempfile.TemporaryDirectory() as gd:
            git("init", "-q", "--bare", gd)
            expected = git(f"--git-dir={gd}", f"--work-tree={root}", "ls-files", "-o", "-i",
                           f"--exclude-from={patterns}", "-z", cwd=root)
        index = ProjectIndex(root)
        index.refresh()
        assert sorted(index.matching(tuple(globs))) == expected


def test_the_cases_of_issue_15(tmp_path):
    for rel in ("out/app.js", "src/out/keep.js", "docs/b.tmp", "docs/a/c/d.tmp", "setup.py", "pkg/mod.py",
                "logs/a.log", "logs/keep.log", "sub/gen/x.py", "sub/y.py"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_text("x\n")
    (tmp_path / ".gitignore").write_text("/out\ndocs/**/*.tmp\nlogs/*\n!logs/keep.log\n")
    (tmp_path / "sub/.gitignore").write_text("gen/\n")
    listed = TreeScanner(tmp_path).list_paths()
    assert listed == [".gitignore", "logs/keep.log", "pkg/mod.py", "setup.py", "src/out/keep.js",
                      "sub/.gitignore", "sub/y.py"]
    assert listed == git_listing(tmp_path)
    index = ProjectIndex(tmp_path)
    index.refresh()
    assert index.matching(("**/*.py",)) == {"setup.py", "pkg/mod.py", "sub/y.py"}
    assert index.matching(("/setup.py", "pkg/")) == {"setup.py", "pkg/mod.py"}
    assert index.matching(("*.py", "!pkg/*")) == {"setup.py", "sub/y.py"}


@pytest.mark.parametrize("untracked", [True, False])
def test_a_repository_inside_the_root_is_listed_by_its_git(tmp_path, untracked):
    repo = tmp_path / "project"
    for rel in ("src/a.py", "build/out.py", "notes.txt"):
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        (repo / rel).write_text("x\n")
    (repo / ".gitignore").write_text("build/\n")
    subprocess.run(["git", "init", "-q", str(repo)], check=True, env=GIT_ENV)
    (repo / ".git/info/exclude").write_text("notes.txt\n")  # git's own excludes count too
    if not untracked:
        env = {**GIT_ENV, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@x", "GIT_COMMITTER_NAME": "t",
               "GIT_COMMITTER_EMAIL": "t@x"}
        subprocess.run(["git", "-C", str(repo), "add", "-A"], check=True, env=env)
        subprocess.run(["git", "-C", str(repo), "commit", "-qm", "x"], check=True, env=env)
    (tmp_path / "top.md").write_text("x\n")
    scanner = TreeScanner(tmp_path)
    assert scanner.list_paths() == ["project/.gitignore", "project/src/a.py", "top.md"]
    assert scanner._ignored_outside_git(["project/build/out.py", "project/notes.txt", "project/src/a.py"]) \
        == {"project/build/out.py", "project/notes.txt"}


def test_a_profile_glob_git_would_not_take_is_refused_at_load(tmp_path):
    from orchestra.actors.profiles import ProfileError, Profiles

    path = tmp_path / "profiles.toml"
    path.write_text('[profiles.go-specialist]\ncontext_globs = ["**/*.go", "!"]\n')
    with pytest.raises(ProfileError, match="context_globs"):
        Profiles.load(path)
    path.write_text('[profiles.go-specialist]\ncontext_globs = ["/cmd/", "!cmd/tool/"]\n')
    assert Profiles.load(path).get("go-specialist").context_globs == ("/cmd/", "!cmd/tool/")
