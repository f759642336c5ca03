"""Which server process owns a spawned agent, and whether that process is provably gone.

Every server process has an identity (:class:`ServerProcess`): an id (host, pid and a random
part, unique across restarts), its host, its pid, its start time in clock ticks since boot and
the boot id. A spawned agent's record names the id of the process that started it (``owner``).

With the PostgreSQL store each process also holds a lease there: a row it beats every
``lease_interval`` seconds (by the database's clock). The others mark the agents of a process
whose lease expired ``failed``; the next start on that host ends what is left of their process
groups, once it has proved the owner is gone (:func:`owner_gone`) and each group is the
agent's (:func:`~orchestra.actors.agents._procs.is_own_group`).
"""

from __future__ import annotations

import os
import secrets
import socket
import time

from ..store_leases import ServerProcess
from ._procs import boot_id, start_ticks

__all__ = ["ServerProcess", "owner_gone", "this_process"]


def this_process() -> ServerProcess:
    """The identity of the calling process (a new ``process_id`` each call)."""
    host = socket.gethostname() or "localhost"
    pid = os.getpid()
    return ServerProcess(
        process_id=f"{host}:{pid}:{secrets.token_hex(3)}",
        host=host, pid=pid, boot_id=boot_id(), start_ticks=start_ticks(pid) or 0,
        started_at=time.time(),
    )


def owner_gone(owner: ServerProcess, here: ServerProcess) -> bool:
    """True if ``owner``, a process of ``here``'s host, is provably not running any more: the
    machine booted since (another boot id), or no process has its pid with its start time.
    False for a process of another host (nothing can be proved from here) and for one alive."""
    if owner.host != here.host or owner.process_id == here.process_id:
        return False
    if not owner.boot_id or not here.boot_id:
        return False
    if owner.boot_id != here.boot_id:
        return True
    return start_ticks(owner.pid) != owner.start_ticks
