"""Git state of a root: branch, recent commits with their files, uncommitted changes."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

__all__ = ["git_context"]


#: git as a background reader: ``--no-optional-locks`` keeps ``git status`` from rewriting the
#: staging index to refresh its stat data. That rewrite moved git's state, hence the index
#: generation, so the answer that asked git made the next identical request a cache miss.
GIT = ("git", "--no-optional-locks")


def _git(root: Path, *args: str) -> str | None:
    try:
        out = subprocess.run([*GIT, "-C", str(root), *args], capture_output=True, timeout=15)
    except (OSError, subprocess.SubprocessError):
        return None
    return out.stdout.decode("utf-8", "replace") if out.returncode == 0 else None


def _commits(text: str) -> list[dict[str, Any]]:
    commits: list[dict[str, Any]] = []
    for block in text.split("\x1e"):
        block = block.strip("\n")
        if not block:
            continue
        head, _, files = block.partition("\n")
        parts = head.split("\x1f")
        if len(parts) != 4:
            continue
        sha, author, date, subject = parts
        commits.append({"sha": sha, "author": author, "date": date, "subject": subject,
                        "files": [f for f in files.splitlines() if f.strip()]})
    return commits


_FORMAT = "--format=%x1e%H%x1f%an%x1f%aI%x1f%s"


def git_context(root: Path, max_commits: int = 10) -> dict[str, Any]:
    if not (root / ".git").exists():
        return {"branch": None, "recent_commits": [], "uncommitted_changes": [], "is_git": False}
    branch = (_git(root, "rev-parse", "--abbrev-ref", "HEAD") or "").strip() or None
    log = _git(root, "log", f"-n{max_commits}", "--name-only", _FORMAT) or ""
    status = _git(root, "status", "--porcelain") or ""
    changes = [{"status": line[:2].strip(), "path": line[3:]} for line in status.splitlines() if len(line) > 3]
    return {"branch": branch, "recent_commits": _commits(log), "uncommitted_changes": changes, "is_git": True}
