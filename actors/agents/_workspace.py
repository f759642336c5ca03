"""Where a spawned agent works: its own ``git worktree`` of the project, on a branch named
after the agent, and the MCP configuration written there for coding agents (``.mcp.json``)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import trio

__all__ = [
    "MCP_CONFIG_FILE",
    "MCP_ENV",
    "MCP_SERVER_NAME",
    "WorkspaceError",
    "add_worktree",
    "branch_name",
    "mcp_server_entry",
    "remove_worktree",
    "write_mcp_config",
]

#: The file coding agents (Claude Code and others) read their project's MCP servers from.
MCP_CONFIG_FILE = ".mcp.json"
#: The name Orchestra's MCP server is given in it.
MCP_SERVER_NAME = "orchestra"
#: What ``orchestra mcp`` reads from its environment (a client passes them through).
MCP_ENV = ("ORCHESTRA_URL", "ORCHESTRA_TOKEN", "ORCHESTRA_ISSUE_ID")
#: Bound of an existing ``.mcp.json`` that is merged rather than refused.
MCP_CONFIG_MAX_BYTES = 1024 * 1024


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


def mcp_server_entry(
    command: Sequence[str] | None = None, env: dict[str, str] | None = None,
) -> dict[str, Any]:
    """The ``mcpServers`` entry that runs ``orchestra mcp`` over stdio.

    ``command``: the argv (default: this Python, ``-m orchestra mcp``, so the entry works
    without ``orchestra`` on the PATH). ``env`` (default): the variables of ``MCP_ENV`` as
    ``${VAR}`` references, expanded by the client from its own environment: no token is
    written to disk, and a spawned agent's own token and issue are the ones used.
    """
    return {
        "type": "stdio",
        "command": (command or [sys.executable])[0],
        "args": list(command[1:]) if command else ["-m", "orchestra", "mcp"],
        "env": env if env is not None else {name: "${" + name + "}" for name in MCP_ENV},
    }


def write_mcp_config(directory: Path, entry: dict[str, Any] | None = None) -> Path:
    """Write (or merge into) ``directory/.mcp.json`` the ``orchestra`` server ``entry``.

    Other servers of an existing file are kept; the write is atomic (a temporary file
    renamed over it), so agents sharing one directory never see half a file. An existing
    file that is not a JSON object (or is over ``MCP_CONFIG_MAX_BYTES``) is left alone and
    raises :class:`WorkspaceError`.
    """
    path = directory / MCP_CONFIG_FILE
    config: dict[str, Any] = {}
    try:
        with path.open("rb") as existing:
            text = existing.read(MCP_CONFIG_MAX_BYTES + 1)
    except FileNotFoundError:
        text = None
    except OSError as exc:
        raise WorkspaceError(f"cannot read {path}: {exc.strerror}") from None
    if text is not None:
        try:
            if len(text) > MCP_CONFIG_MAX_BYTES:
                raise ValueError(f"over {MCP_CONFIG_MAX_BYTES} bytes")
            loaded = json.loads(text)
            if not isinstance(loaded, dict) or not isinstance(loaded.get("mcpServers", {}), dict):
                raise ValueError("not a JSON object with an object 'mcpServers'")
        except ValueError as exc:
            raise WorkspaceError(f"{path} exists and cannot be merged into: {exc}") from None
        config = loaded
    servers = dict(config.get("mcpServers", {}))
    servers[MCP_SERVER_NAME] = entry if entry is not None else mcp_server_entry()
    config["mcpServers"] = servers
    temporary = directory / f".{MCP_CONFIG_FILE}.{os.getpid()}.{id(config):x}.tmp"
    try:
        temporary.write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
        os.replace(temporary, path)
    except OSError as exc:
        temporary.unlink(missing_ok=True)
        raise WorkspaceError(f"cannot write {path}: {exc.strerror}") from None
    return path
