"""What one spawned agent is (its spec, its record) and what its actors are given."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..errors import InvalidRequest
from ..profiles import AgentProfile
from ._lease import ServerProcess

__all__ = [
    "AgentHooks",
    "AgentSpec",
    "AgentsConfig",
    "LIVE_STATES",
    "STATES",
    "TERMINAL_STATES",
    "check_os_strings",
    "path_segment",
    "public_record",
]

STATES = ("starting", "running", "stalled", "exited", "failed", "stopped")
#: A process may be alive (or about to be started again) in these; the governor counts them.
LIVE_STATES = frozenset({"starting", "running", "stalled"})
TERMINAL_STATES = frozenset({"exited", "failed", "stopped"})

_SAFE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


def path_segment(value: str) -> str:
    """``value`` as one file name: itself if plainly safe, else a digest (ids may hold ``/``,
    ``..`` or anything printable; none of that may choose where a file goes)."""
    if _SAFE.fullmatch(value) and ".." not in value:
        return value
    return "id-" + hashlib.sha256(value.encode()).hexdigest()[:24]


@dataclass(frozen=True)
class AgentHooks:
    """What the agents' actors need from the rest of the server, injected (so they hold no
    JWT, HTTP or project code).

    - ``url()``: the server's base URL, for ``ORCHESTRA_URL``.
    - ``mint_token(spec)``: a token for ``sub = spec.agent_id`` in ``spec.project_id`` with the
      profile's permissions and ``spec.profile.token_ttl``.
    - ``write_context(spec, path)``: write the context for the agent's issue to ``path``
      (JSON), before the process starts.
    - ``publish(project_id, event_type, data, traceparent)``: publish a server event (topic
      ``coordination``, publisher ``orchestra``; ``traceparent``: the spawning request's, or
      None). Failures are logged, never fatal.
    """

    url: Callable[[], str]
    mint_token: Callable[[AgentSpec], str]
    write_context: Callable[[AgentSpec, Path], Awaitable[None]]
    publish: Callable[[str, str, dict[str, Any], str | None], Awaitable[None]]


@dataclass(frozen=True)
class AgentsConfig:
    """The agents' server-wide settings; each bound is in docs/protocol.md "Bounds"."""

    data_dir: Path
    #: the code base of a project (the spawned process's working directory by default)
    root_of: Callable[[str], Path] = field(default=lambda _project: Path.cwd())
    #: agents running at once per project; spawn depth
    per_project: int = 64
    max_depth: int = 3
    #: an agent's log file before it is rotated, and rotated files kept
    log_max_bytes: int = 10 * 1024 * 1024
    log_backups: int = 2
    #: SIGTERM → SIGKILL when the server stops, or ends agents a crash left behind
    shutdown_grace: float = 5.0
    store_timeout: float = 10.0
    #: ``agent.list`` answers at most this many (newest spawns first)
    max_listed: int = 1000
    #: this server process (its id is the ``owner`` of the agents it spawns); None: unnamed
    process: ServerProcess | None = None
    #: leases in the (shared, PostgreSQL) store: beat every ``lease_interval`` seconds; a
    #: process whose lease is older than ``lease_expiry`` is lost and its agents ``failed``
    leases: bool = False
    lease_interval: float = 2.0
    lease_expiry: float = 10.0


@dataclass(frozen=True)
class AgentSpec:
    """Everything one agent is started from; fixed for its life (restarts included)."""

    agent_id: str
    project_id: str
    agent_type: str
    issue_id: str
    task: str | None
    environment: tuple[tuple[str, str], ...]
    profile: AgentProfile
    depth: int
    spawned_by: str | None
    seq: int
    root: Path
    data_dir: Path
    spawn_key: str | None = None
    fingerprint: str | None = None
    context_bytes: int | None = None
    traceparent: str | None = None  # the spawning request's W3C trace context
    #: the id of the server process that started it (its lease names it)
    owner: str | None = None

    @property
    def log_path(self) -> Path:
        return self.data_dir / "logs" / path_segment(self.project_id) / f"{self.agent_id}.log"

    @property
    def context_path(self) -> Path:
        return self.data_dir / "contexts" / path_segment(self.project_id) / f"{self.agent_id}.json"

    @property
    def worktree_path(self) -> Path:
        return self.data_dir / "worktrees" / path_segment(self.project_id) / self.agent_id

    def initial_record(self) -> dict[str, Any]:
        return {
            "agent_id": self.agent_id,
            "agent_type": self.agent_type,
            "issue_id": self.issue_id,
            "project_id": self.project_id,
            "task": self.task,
            "state": "starting",
            "pid": None,
            "exit_code": None,
            "restarts": 0,
            "started_at": None,
            "ended_at": None,
            "last_activity": None,
            "log_path": str(self.log_path),
            "reason": None,
            "depth": self.depth,
            "spawned_by": self.spawned_by,
            "workspace": str(self.root),
            "owner": self.owner,
            # internal (never answered): what proves the process group is ours after a crash
            "_identity": None,
            "_fingerprint": self.fingerprint,
            "_seq": self.seq,
            "_traceparent": self.traceparent,
        }


def public_record(record: dict[str, Any]) -> dict[str, Any]:
    """The agent record as PROTOCOL.md answers it (internal keys removed)."""
    return {k: v for k, v in record.items() if not k.startswith("_")}


def _utf8(field: str, value: str) -> None:
    try:
        value.encode()
    except UnicodeEncodeError:
        raise InvalidRequest(field, f"'{field}' must be valid Unicode (no lone surrogates)") from None


def check_os_strings(environment: tuple[tuple[str, str], ...], task: str | None,
                     ids: dict[str, str]) -> None:
    """Raise InvalidRequest for what the operating system cannot take (the edge's validation is wider): environment
    names that are empty or hold '=' or NUL, values or a task with NUL, text that is not UTF-8."""
    for name, value in environment:
        if not name or "=" in name or "\x00" in name:
            raise InvalidRequest("environment", f"environment variable name {name[:64]!r} is not valid")
        if "\x00" in value:
            raise InvalidRequest(f"environment.{name}", f"'environment.{name}' must not contain NUL")
        _utf8("environment", name)
        _utf8(f"environment.{name}", value)
    if task is not None:
        if "\x00" in task:
            raise InvalidRequest("task", "'task' must not contain NUL")
        _utf8("task", task)
    for key, value in ids.items():
        _utf8(key, value)
        if "\x00" in value:
            raise InvalidRequest(key, f"'{key}' must not contain NUL")
