"""One process's ear on the appends of the others: PostgreSQL ``LISTEN``.

Every append to the PostgreSQL store announces ``project:high-water`` on the schema's channel
(``NOTIFY`` in the appending transaction: delivered at COMMIT, never for a rolled-back write).
A :class:`NotifyListener` holds one connection per process that listens there, on a thread of
its own (psycopg's blocking connection; its asyncio side cannot run under trio), and hands each
packet of announcements to its owner's callback on the trio side, coalesced per project to the
highest cursor. The callback tells the project's actor, which reads the committed rows after its
own high-water (:class:`~orchestra.actors.store_postgres.EventsAfter`) and delivers them.

An announcement is only a hint: the rows are the truth. A lost one (the listening connection
dropped, a full mailbox) delays delivery until the next announcement or the project's own
periodic look, never loses an event. After each (re)connect the callback is called with
``None``: every running project looks once (announcements may have been missed meanwhile).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from functools import partial
from typing import Any

import trio

from .store_postgres import NOTIFY_PREFIX, redact_url

try:
    import psycopg
    from psycopg import sql
except ImportError:  # pragma: no cover - depends on the installation
    psycopg = None  # type: ignore[assignment]

__all__ = ["NotifyListener", "parse_announcements"]

log = logging.getLogger(__name__)

#: announcements: project id -> highest announced cursor; None: look at every project
Announce = Callable[[dict[str, int] | None], None]


def parse_announcements(payloads: list[str]) -> dict[str, int]:
    """``project:cursor`` payloads, the highest cursor of each project (others are ignored)."""
    out: dict[str, int] = {}
    for payload in payloads:
        project, sep, cursor = payload.rpartition(":")
        if sep and cursor.isdigit():
            out[project] = max(out.get(project, 0), int(cursor))
    return out


class NotifyListener:
    """Listens on the schema's channel of ``url`` while :meth:`run` runs.

    ``poll`` (seconds) bounds how long the thread waits for a packet before it checks whether
    it was stopped; ``retry`` is the pause between attempts to connect while the server is
    unreachable. Both are also how late the thread ends after :meth:`run` is cancelled.
    """

    def __init__(self, url: str, announce: Announce, *, poll: float = 0.5, retry: float = 1.0,
                 connect_timeout: float = 5.0) -> None:
        self.url = url
        self.announce = announce
        self.poll = poll
        self.retry = retry
        self.connect_timeout = connect_timeout
        #: packets received and (re)connections made; tests and /status read them
        self.packets = 0
        self.connects = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Listen until cancelled. ``task_status.started()`` once the first LISTEN is in place
        (or the first attempt failed: the thread keeps trying)."""
        stop = threading.Event()
        token = trio.lowlevel.current_trio_token()
        ready = trio.Event()
        thread_done = trio.Event()

        def started() -> None:
            ready.set()

        async def listen() -> None:
            try:
                await trio.to_thread.run_sync(self._loop, token, stop, started, abandon_on_cancel=True)
            finally:
                thread_done.set()

        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(listen)
                await ready.wait()
                task_status.started()
                await thread_done.wait()
        finally:
            stop.set()  # the thread ends within ``poll`` (or a connect's timeout)

    def _loop(self, token: trio.lowlevel.TrioToken, stop: threading.Event,
              started: Callable[[], None]) -> None:
        first = True
        while not stop.is_set():
            try:
                conn = self._connect()
            except Exception as exc:  # any: the server unreachable, tried again
                if first:
                    log.warning("listener: cannot listen at %s (%s); retrying", redact_url(self.url), exc)
                    first = False
                    self._to_trio(token, stop, started)
                stop.wait(self.retry)
                continue
            try:
                self.connects += 1
                if not self._to_trio(token, stop, partial(self.announce, None)):
                    return
                if first:
                    first = False
                    self._to_trio(token, stop, started)
                while not stop.is_set():
                    payloads = [n.payload for n in conn.notifies(timeout=self.poll, stop_after=1)]
                    if payloads:
                        self.packets += 1
                        found = parse_announcements(payloads)
                        if found and not self._to_trio(token, stop, partial(self.announce, found)):
                            return
            except Exception as exc:  # any: the connection lost; listen again
                if not stop.is_set():
                    log.warning("listener: connection to %s lost (%s); listening again",
                                redact_url(self.url), exc)
            finally:
                conn.close()

    def _connect(self) -> Any:
        conn = psycopg.connect(self.url, autocommit=True,
                               connect_timeout=max(1, round(self.connect_timeout)),
                               keepalives=1, keepalives_idle=10, keepalives_interval=5,
                               keepalives_count=3)
        try:
            row = conn.execute("SELECT current_schema()").fetchone()
            schema = row[0] if row and row[0] else "public"
            conn.execute(sql.SQL("LISTEN {}").format(sql.Identifier(NOTIFY_PREFIX + schema)))
        except BaseException:
            conn.close()
            raise
        return conn

    @staticmethod
    def _to_trio(token: trio.lowlevel.TrioToken, stop: threading.Event, fn: Callable[[], None]) -> bool:
        """Run ``fn`` on the trio side unless stopped meanwhile; False once trio's run has
        ended (the thread stops)."""
        def guarded() -> None:
            if not stop.is_set():
                fn()
        try:
            trio.from_thread.run_sync(guarded, trio_token=token)
        except trio.RunFinishedError:
            return False
        return True
