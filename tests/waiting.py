"""Waiting on a real condition instead of sleeping for a guessed time.

For tests that run in real time (sockets, SQLite's thread): poll a figure the system exposes
(a mailbox's depth, a project's waits in progress, a restart count) until it holds, bounded.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import Any

import trio

__all__ = ["until", "until_waiters"]


async def until(
    check: Callable[[], bool | Awaitable[bool]], what: str, *, timeout: float = 10.0,
    interval: float = 0.002,
) -> None:
    """Return as soon as ``check()`` (sync or async) is true; AssertionError naming ``what``
    if it is still false after ``timeout`` seconds."""
    with trio.move_on_after(timeout):
        while True:
            outcome = check()
            if inspect.isawaitable(outcome):
                outcome = await outcome
            if outcome:
                return
            await trio.sleep(interval)
    raise AssertionError(f"still not true after {timeout} s: {what}")


async def until_waiters(server: Any, count: int, project: str = "p1") -> None:
    """Until ``project`` holds exactly ``count`` waits in progress (registered, or noticed gone)."""
    from orchestra.actors.project import ProjectStats

    ref = await server.system.project(project)

    async def check() -> bool:
        return bool((await ref.call(ProjectStats(), timeout=5))["waiters"] == count)

    await until(check, f"{count} waits in progress on {project}")
