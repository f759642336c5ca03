"""The server processes' leases in a shared store: the messages (PostgreSQL answers them:
``actors/store_postgres.py``; SQLite, one process, has no leases).

Each operation is one transaction of its own, run where the reads of a group commit run (after
its writes): a few per process per lease interval. Times are epoch seconds; a lease's beats and
its expiry are by the database's clock, so the hosts' clocks do not matter.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "PROCESS_ROWS_KEPT",
    "Beat",
    "ClaimExpired",
    "EndProcess",
    "HostLeftovers",
    "ListProcesses",
    "ProcessRow",
    "Reap",
    "RegisterProcess",
    "ServerProcess",
]

#: rows of processes that ended (stopped, or lost and reaped) are kept this long for /status
PROCESS_ROWS_KEPT = 7 * 86_400


@dataclass(frozen=True)
class ServerProcess:
    """One server process: what its lease row records."""

    process_id: str
    host: str
    pid: int
    boot_id: str
    #: the process's start time in clock ticks since boot (with ``pid`` and ``boot_id``: proof)
    start_ticks: int
    #: wall-clock seconds of its start
    started_at: float


@dataclass(frozen=True, slots=True)
class ProcessRow:
    """A server process's lease row. ``state``: ``alive``, ``lost`` (another process found its
    lease expired, or its host found it gone) or ``stopped`` (it stopped in order); times are
    epoch seconds, ``last_beat`` and ``now`` by the database's clock."""

    process_id: str
    host: str
    pid: int
    boot_id: str
    start_ticks: int
    started_at: float
    last_beat: float
    state: str
    ended_at: float | None
    reason: str | None
    #: the database's clock when the row was read
    now: float

    @property
    def process(self) -> ServerProcess:
        """The identity the row records."""
        return ServerProcess(self.process_id, self.host, self.pid, self.boot_id, self.start_ticks,
                             self.started_at)


@dataclass(frozen=True, slots=True)
class RegisterProcess:
    """Take (or take again) the lease of this process: its row, ``alive``, beaten now."""

    process: ServerProcess


@dataclass(frozen=True, slots=True)
class Beat:
    """Renew this process's lease; answers True, or False if it no longer holds it (another
    process declared it lost, or it has no row)."""

    process_id: str


@dataclass(frozen=True, slots=True)
class EndProcess:
    """This process stops in order: its row ``stopped`` (nothing of it is left to end)."""

    process_id: str


@dataclass(frozen=True, slots=True)
class ClaimExpired:
    """Declare ``lost`` every other process whose lease is older than ``expiry`` seconds, and
    record ``failed`` every live agent of a lost process (or of one stopped more than ``expiry``
    seconds ago): answers the agents' new :class:`~orchestra.actors.store.AgentRow` s, at most
    ``limit``. Only a row still live is changed: several processes claiming at once fail each
    agent once. Also drops the rows of processes ended more than a week ago."""

    process_id: str
    expiry: float
    limit: int = 1000


@dataclass(frozen=True, slots=True)
class HostLeftovers:
    """Answers the processes of ``host`` (not ``process_id``) whose leftovers were not ended
    yet, each with its agents that may have a process group left (live, or failed for their
    owner): ``[(ProcessRow, [AgentRow, ...]), ...]``."""

    host: str
    process_id: str
    limit: int = 1000


@dataclass(frozen=True, slots=True)
class Reap:
    """The process ``process_id`` is gone (proved on its host, whose groups were ended): mark
    its row reaped (``lost`` if it was alive) and record every live agent of it ``failed``
    with ``reason``; answers those agents' new rows (none if another process reaped it first)."""

    process_id: str
    reason: str


@dataclass(frozen=True, slots=True)
class ListProcesses:
    """Answers the processes' rows, alive ones first, then the latest beat first, at most
    ``limit``."""

    limit: int = 100
