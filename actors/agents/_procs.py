"""Process groups on Linux: identity (pid + start time + boot), signals, and ending them.

An agent runs in its own process group (``start_new_session=True``), so its pid is also its
group id and everything it forks stays in the group unless it leaves on purpose. A group is
*ours* only if its leader's recorded start time (``/proc/<pid>/stat`` field 22, clock ticks
since boot) and the boot id match: pids are reused, that pair is not.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from pathlib import Path

import trio

__all__ = [
    "ProcessIdentity",
    "boot_id",
    "end_groups",
    "group_alive",
    "identity_of",
    "is_own_group",
    "signal_group",
    "start_ticks",
]

_PROC = Path("/proc")


def boot_id() -> str:
    """This boot's id (start times count from the boot); empty where there is none."""
    try:
        return (_PROC / "sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _stat(pid: int) -> list[str] | None:
    """The fields of ``/proc/<pid>/stat`` after the command name, or None (no such process)."""
    try:
        raw = (_PROC / str(pid) / "stat").read_bytes()
    except OSError:
        return None
    # the command name may hold spaces and parentheses: the fields start after the last ')'
    return raw[raw.rindex(b")") + 2 :].decode().split()


def start_ticks(pid: int) -> int | None:
    """The process's start time in clock ticks since boot, or None if there is no such process."""
    fields = _stat(pid)
    return int(fields[19]) if fields else None


@dataclass(frozen=True)
class ProcessIdentity:
    """What proves a process group is the one we started: leader pid, its start time, boot."""

    pid: int
    start_ticks: int
    boot_id: str


def identity_of(pid: int) -> ProcessIdentity | None:
    ticks = start_ticks(pid)
    return ProcessIdentity(pid, ticks, boot_id()) if ticks is not None else None


def _members(pgid: int) -> list[tuple[int, int, str]]:
    """(pid, start ticks, state) of every process whose process group is ``pgid``."""
    out = []
    for entry in _PROC.iterdir():
        if not entry.name.isdigit():
            continue
        fields = _stat(int(entry.name))
        if fields and int(fields[2]) == pgid:
            out.append((int(entry.name), int(fields[19]), fields[0]))
    return out


def is_own_group(ident: ProcessIdentity) -> bool:
    """True if processes of the group ``ident`` started are alive and provably that group's.

    The leader alive with the recorded start time proves it. With the leader gone, the group id
    cannot have been reused while members remain (Linux keeps a pid number out of use while it
    names a group), so members that started no earlier than the leader are its own; a live
    process with the leader's pid and another start time is a stranger, and so is any other boot.
    """
    if not ident.boot_id or ident.boot_id != boot_id():
        return False
    leader = start_ticks(ident.pid)
    if leader is not None:
        return leader == ident.start_ticks
    members = _members(ident.pid)
    return bool(members) and all(ticks >= ident.start_ticks for _, ticks, _ in members)


def signal_group(pgid: int, sig: int) -> bool:
    """Send ``sig`` to the group; False if it has no member (or none we may signal)."""
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True


def group_alive(pgid: int) -> bool:
    """True while a member of the group is alive (zombies waiting to be reaped do not count)."""
    if not signal_group(pgid, 0):
        return False
    return any(state != "Z" for _, _, state in _members(pgid))


async def end_groups(pgids: list[int], grace: float, poll: float = 0.05) -> None:
    """SIGTERM every group, wait up to ``grace`` seconds for all to end, SIGKILL what is left.

    Guarantee: when it returns, no member of those groups is alive (SIGKILL cannot be ignored;
    a member stuck in uninterruptible sleep dies as soon as it wakes).
    """
    live = [g for g in pgids if signal_group(g, signal.SIGTERM)]
    with trio.move_on_after(grace):
        while live:
            await trio.sleep(poll)
            live = [g for g in live if group_alive(g)]
    for g in live:
        signal_group(g, signal.SIGKILL)
    with trio.move_on_after(2):
        while live:
            await trio.sleep(poll)
            live = [g for g in live if group_alive(g)]
