"""Agent profiles: what each agent type may do, how fast, what follows it, what it reads.

Pure data and validation; loaded once at start from the built-ins and ``--profiles FILE``.
"""

from __future__ import annotations

import json
import math
import shlex
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import pathspec

__all__ = [
    "AgentProfile", "ProfileError", "Profiles", "PERMISSIONS", "PROFILE_PERMISSIONS",
    "RESTART_POLICIES", "WORKSPACES",
]

PERMISSIONS = frozenset({"read_context", "write_results", "publish_events", "spawn_agents", "admin"})
#: What a profile may grant; ``admin`` only ever comes from a token.
PROFILE_PERMISSIONS = PERMISSIONS - {"admin"}
_BASE = ("read_context", "write_results", "publish_events")


class ProfileError(ValueError):
    """A profiles file that cannot be used; the message names the file, the entry and the key."""


@dataclass(frozen=True)
class AgentProfile:
    agent_type: str
    permissions: frozenset[str] = frozenset(_BASE)
    #: Token bucket: sustained requests per second and burst.
    rate_per_second: float = 20.0
    burst: int = 40
    #: Agent types that should run after this one stores a result (``next_agents``).
    next_agents: tuple[str, ...] = ()
    #: Event types this type subscribes to by default (used by spawned agents and the SDK).
    event_subscriptions: tuple[str, ...] = ()
    #: Context preferences: path globs and keywords that raise a file's rank for this type.
    context_globs: tuple[str, ...] = ()
    context_keywords: tuple[str, ...] = ()
    #: The command that runs an agent of this type (argv); empty: it cannot be spawned.
    command: tuple[str, ...] = ()
    #: Restart policy of a spawned agent: ``never``, or ``on-failure`` (a non-zero exit or a
    #: signal) at most ``max_restarts`` times within ``restart_period`` seconds, after an
    #: exponential backoff from ``restart_backoff`` up to ``restart_backoff_max`` seconds
    #: (with jitter); past that the agent is ``failed``.
    restart: str = "never"
    max_restarts: int = 3
    restart_period: float = 60.0
    restart_backoff: float = 0.5
    restart_backoff_max: float = 30.0
    #: A live agent that made no request for this many seconds is ``stalled``.
    stall_timeout: float = 300.0
    #: Agents of this type running at once in one project; None: only the project's cap.
    max_running: int | None = None
    #: Where a spawned agent runs: the project ``root``, or its own git ``worktree``.
    workspace: str = "root"
    #: Keep an agent's worktree after it ended (default: removed).
    keep_worktree: bool = False
    #: Write the MCP configuration of ``orchestra mcp`` (``.mcp.json``) into the directory the
    #: agent runs in, so a coding agent that reads it is connected from its first step.
    mcp: bool = False
    #: Seconds between SIGTERM and SIGKILL when an agent is stopped.
    stop_grace: float = 5.0
    #: Lifetime of the token a spawned agent gets (it renews it with ``auth.refresh``).
    token_ttl: float = 900.0
    model: str | None = None
    capabilities: tuple[str, ...] = ()
    authority_level: str = "standard"


def _p(agent_type: str, **kw: Any) -> AgentProfile:
    return AgentProfile(agent_type=agent_type, **kw)


BUILTIN: dict[str, AgentProfile] = {
    p.agent_type: p
    for p in [
        _p(
            "chief-architect",
            permissions=frozenset((*_BASE, "spawn_agents")),
            rate_per_second=40.0,
            burst=80,
            next_agents=("python-specialist", "go-specialist", "rust-specialist"),
            context_globs=("README*", "docs/**", "*.toml", "*.md", "**/__init__.py", "go.mod", "Cargo.toml", "package.json"),
            context_keywords=("architecture", "design", "interface", "module"),
            capabilities=("planning", "decomposition", "review"),
            authority_level="high",
        ),
        _p(
            "python-specialist",
            next_agents=("test-engineer", "code-reviewer"),
            context_globs=("**/*.py", "pyproject.toml", "requirements*.txt", "setup.cfg"),
            capabilities=("python",),
        ),
        _p(
            "go-specialist",
            next_agents=("test-engineer", "code-reviewer"),
            context_globs=("**/*.go", "go.mod", "go.sum"),
            capabilities=("go",),
        ),
        _p(
            "rust-specialist",
            next_agents=("test-engineer", "code-reviewer"),
            context_globs=("**/*.rs", "Cargo.toml"),
            capabilities=("rust",),
        ),
        _p(
            "test-engineer",
            next_agents=("code-reviewer",),
            context_globs=("tests/**", "test/**", "**/test_*", "**/*_test.*", "**/*.spec.*", "**/conftest.py"),
            context_keywords=("test", "fixture", "assert"),
            event_subscriptions=("agent_completed",),
            capabilities=("testing",),
        ),
        _p(
            "security-auditor",
            next_agents=("code-reviewer",),
            context_globs=("**/auth*", "**/*crypt*", "**/*secret*", "**/*token*", "**/config*", "**/settings*", "requirements*.txt", "package.json", "Cargo.toml", "go.mod", "pyproject.toml", "**/Dockerfile"),
            context_keywords=("auth", "password", "token", "secret", "crypto", "permission", "jwt", "sql", "sanitize"),
            capabilities=("security",),
        ),
        _p(
            "devops-engineer",
            context_globs=("**/Dockerfile", "**/*.yml", "**/*.yaml", "Makefile", "justfile", ".ci/**", ".github/**", "**/*.sh"),
            context_keywords=("deploy", "ci", "docker", "build"),
            capabilities=("ci", "deployment"),
        ),
        _p(
            "documentation-expert",
            context_globs=("README*", "docs/**", "**/*.md", "**/*.rst", "CHANGELOG*"),
            context_keywords=("docs", "documentation", "usage", "example"),
            capabilities=("writing",),
        ),
        _p(
            "api-explorer",
            context_globs=("**/api*", "**/routes*", "**/*openapi*", "**/*.proto", "**/client*"),
            context_keywords=("api", "endpoint", "route", "request", "response"),
            capabilities=("api",),
        ),
        _p(
            "code-reviewer",
            event_subscriptions=("agent_completed",),
            context_keywords=("review",),
            capabilities=("review",),
        ),
    ]
}

_FIELDS = {
    "agent_type", "permissions", "rate_per_second", "burst", "rate_limit", "next_agents",
    "event_subscriptions", "context_globs", "context_keywords", "context_requirements",
    "command", "model", "capabilities", "authority_level",
    "restart", "max_restarts", "restart_period", "restart_backoff", "restart_backoff_max",
    "stall_timeout", "max_running", "workspace", "keep_worktree", "mcp", "stop_grace", "token_ttl",
}
RESTART_POLICIES = ("never", "on-failure")
WORKSPACES = ("root", "worktree")
#: Bounds of the numeric keys of a spawned agent: (lowest, highest) accepted.
_SECONDS = {
    "restart_period": (0.001, 86_400.0),
    "restart_backoff": (0.0, 3_600.0),
    "restart_backoff_max": (0.0, 3_600.0),
    "stall_timeout": (0.001, 7 * 86_400.0),
    "stop_grace": (0.0, 600.0),
    "token_ttl": (60.0, 86_400.0),
}
_COUNTS = {"max_restarts": (0, 1_000), "max_running": (1, 100_000)}


@dataclass
class Profiles:
    """The profile of every agent type; unknown types get ``default`` under their own name."""

    by_type: dict[str, AgentProfile] = field(default_factory=lambda: dict(BUILTIN))
    default: AgentProfile = field(default_factory=lambda: AgentProfile(agent_type="*"))

    def get(self, agent_type: str) -> AgentProfile:
        profile = self.by_type.get(agent_type)
        if profile is None:
            return replace(self.default, agent_type=agent_type)
        return profile

    @classmethod
    def load(cls, path: str | Path | None) -> Profiles:
        """Built-ins, changed or extended by ``path`` (TOML or JSON); raises ProfileError."""
        profiles = cls()
        if path is None:
            return profiles
        path = Path(path)
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ProfileError(f"{path}: cannot read profiles file: {exc.strerror}") from None
        entries = _parse(path, text)
        for where, entry in entries:
            profile = _profile_from(path, where, entry, profiles)
            if profile.agent_type == "default":
                profiles.default = replace(profile, agent_type="*")
            else:
                profiles.by_type[profile.agent_type] = profile
        return profiles


def _parse(path: Path, text: str) -> list[tuple[str, dict[str, Any]]]:
    if path.suffix == ".toml":
        try:
            data = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ProfileError(f"{path}: {exc}") from None
        # [profiles.<type>] tables, or [[profile]] arrays with agent_type
        out = []
        for name, entry in (data.get("profiles") or {}).items():
            if not isinstance(entry, dict):
                raise ProfileError(f"{path}: [profiles.{name}] must be a table")
            out.append((f"[profiles.{name}]", {"agent_type": name, **entry}))
        for i, entry in enumerate(data.get("profile") or []):
            out.append((f"[[profile]] #{i + 1}", entry))
        unknown = set(data) - {"profiles", "profile"}
        if unknown:
            raise ProfileError(f"{path}: unknown top-level key {sorted(unknown)[0]!r} (use [profiles.<agent_type>])")
        return out
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ProfileError(f"{path}: line {exc.lineno}: {exc.msg}") from None
    entries: Any = data
    if isinstance(data, dict) and "agent_type" in data:
        entries = [data]
    elif isinstance(data, dict):
        entries = data.get("profiles", data.get("agents"))
    if not isinstance(entries, list):
        raise ProfileError(f"{path}: expected a list of profiles (or {{'profiles': [...]}})")
    return [(f"entry #{i + 1}", entry) for i, entry in enumerate(entries)]


def _line_of(text_path: Path, key: str) -> str:
    try:
        for n, line in enumerate(text_path.read_text(encoding="utf-8").splitlines(), 1):
            if key in line:
                return f"line {n}: "
    except OSError:
        pass
    return ""


def _profile_from(path: Path, where: str, entry: Any, profiles: Profiles) -> AgentProfile:
    def bad(key: str, message: str) -> ProfileError:
        return ProfileError(f"{path}: {_line_of(path, key)}{where}: {key}: {message}")

    if not isinstance(entry, dict):
        raise ProfileError(f"{path}: {where}: a profile must be an object/table")
    agent_type = entry.get("agent_type")
    if not isinstance(agent_type, str) or not agent_type:
        raise bad("agent_type", "required, a non-empty string")
    for key in entry:
        if key not in _FIELDS:
            raise bad(key, f"unknown key (known: {', '.join(sorted(_FIELDS))})")
    base = profiles.by_type.get(agent_type, profiles.default)
    kw: dict[str, Any] = {"agent_type": agent_type}

    def strings(key: str) -> tuple[str, ...]:
        value = entry[key]
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise bad(key, "must be a list of strings")
        return tuple(value)

    if "permissions" in entry:
        perms = strings("permissions")
        for p in perms:
            if p == "admin":
                raise bad("permissions", "'admin' comes only from a token, never from a profile")
            if p not in PROFILE_PERMISSIONS:
                raise bad("permissions", f"unknown permission {p!r}")
        kw["permissions"] = frozenset(perms)
    rate = entry.get("rate_limit")
    if rate is not None:
        if not isinstance(rate, dict):
            raise bad("rate_limit", "must be an object with per_second and burst")
        entry = {**entry, "rate_per_second": rate.get("per_second", base.rate_per_second),
                 "burst": rate.get("burst", base.burst)}
    if "rate_per_second" in entry:
        v = entry["rate_per_second"]
        if isinstance(v, bool) or not isinstance(v, int | float) or v <= 0:
            raise bad("rate_per_second", "must be a number > 0")
        kw["rate_per_second"] = float(v)
    if "burst" in entry:
        v = entry["burst"]
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise bad("burst", "must be an integer >= 1")
        kw["burst"] = v
    for key in ("next_agents", "event_subscriptions", "context_globs", "context_keywords",
                "capabilities"):
        if key in entry:
            kw[key] = strings(key)
    if "context_requirements" in entry:
        # The seed's shape: a list of globs/keywords; globs have a '/', '*' or '.'
        reqs = strings("context_requirements")
        kw["context_globs"] = tuple(r for r in reqs if any(c in r for c in "/*."))
        kw["context_keywords"] = tuple(r for r in reqs if not any(c in r for c in "/*."))
    if "context_globs" in kw:  # read as git reads a .gitignore (index.matching)
        try:
            pathspec.GitIgnoreSpec.from_lines(kw["context_globs"])
        except ValueError as exc:
            raise bad("context_globs", f"not a pattern in gitignore syntax ({exc})") from None
    if "command" in entry:
        cmd = entry["command"]
        if isinstance(cmd, str):
            try:
                cmd = shlex.split(cmd)
            except ValueError as exc:
                raise bad("command", f"cannot split the command line: {exc}") from None
            entry = {**entry, "command": cmd}
        argv = strings("command")
        if not argv or not all(argv) or any("\x00" in a for a in argv):
            raise bad("command", "must be a non-empty argv list of non-empty strings without NUL")
        kw["command"] = argv
    for key, choices in (("restart", RESTART_POLICIES), ("workspace", WORKSPACES)):
        if key in entry:
            if entry[key] not in choices:
                raise bad(key, f"must be one of {', '.join(repr(c) for c in choices)}")
            kw[key] = entry[key]
    for key, (low, high) in _SECONDS.items():
        if key in entry:
            v = entry[key]
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v) or not low <= v <= high:
                raise bad(key, f"must be a number of seconds from {low:g} to {high:g}")
            kw[key] = float(v)
    for key, (lo, hi) in _COUNTS.items():
        if key in entry:
            v = entry[key]
            if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
                raise bad(key, f"must be an integer from {lo} to {hi}")
            kw[key] = v
    for key in ("keep_worktree", "mcp"):
        if key in entry:
            if not isinstance(entry[key], bool):
                raise bad(key, "must be true or false")
            kw[key] = entry[key]
    for key in ("model", "authority_level"):
        if key in entry:
            if not isinstance(entry[key], str):
                raise bad(key, "must be a string")
            kw[key] = entry[key]
    profile = replace(base, **kw)
    if profile.restart_backoff_max < profile.restart_backoff:
        raise bad("restart_backoff_max", "must be at least restart_backoff")
    return profile
