"""An agent's own ``git worktree`` of the project, on a branch named after the agent."""

from __future__ import annotations

import subprocess
from pathlib import Path

import trio

__all__ = ["WorkspaceError", "add_worktree", "branch_name", "remove_worktree"]


class WorkspaceError(Exception):
    """A worktree could not be made (not a git repository, git failed); the message says why."""


def branch_name(agent_id: str) -> str:
    return f"orchestra/{agent_id}"


async def _git(root: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    return await trio.run_process(
        ["git", "-C", str(root), *args], capture_stdout=True, capture_stderr=True, check=False,
        stdin=subprocess.DEVNULL,
    )


async def add_worktree(root: Path, path: Path, agent_id: str) -> Path:
    """Make ``path`` a worktree of ``root`` at its HEAD on a new branch named after the agent."""
    path.parent.mkdir(parents=True, exist_ok=True)
    done = await _git(root, "worktree", "add", "-b", branch_name(agent_id), str(path), "HEAD")
    if done.returncode != 0:
        raise WorkspaceError(
            f"git worktree add failed in {root}: {done.stderr.decode(errors='replace').strip()}"
        )
    return path


async def remove_worktree(root: Path, path: Path, agent_id: str) -> None:
    """Remove the worktree; its branch too unless it holds commits not merged into HEAD."""
    await _git(root, "worktree", "remove", "--force", str(path))
    await _git(root, "branch", "-d", branch_name(agent_id))
