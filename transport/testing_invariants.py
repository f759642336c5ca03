"""What a test's clients were told, and the checks a test runs at its end.

A :class:`Ledger` records, while the test breaks things: every request (in flight, answered,
hung), every acknowledged result, every answer that was an error, and the events each
subscriber received. The checks then ask the server, through its public protocol, whether its
promises held (docs/reliability.md lists them):

- every acknowledged result is readable and intact (:meth:`Invariants.acknowledged_results`);
- every subscriber got every event of its types after its start exactly once, in cursor order
  (:meth:`Invariants.subscribers`);
- no request hung, and every failed request was answered with the error object
  (:meth:`Invariants.requests`);
- restarts are visible in ``/status`` and ``/metrics`` (:meth:`Invariants.restarts_visible`);
- nothing is left behind: no spawned process alive, and for an in-process server no task of it
  after its stop (:meth:`Invariants.nothing_left_behind`).

Each check raises :class:`InvariantViolation` (an ``AssertionError``) naming what broke.
"""

from __future__ import annotations

import itertools
import os
import re
from collections import Counter
from collections.abc import AsyncIterator, Iterable, Iterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import h11
import trio

from .http_client import HttpResponse
from .testing import InProcessServer, ServerHandle

__all__ = ["ERROR_KEYS", "Invariants", "InvariantViolation", "Ledger", "SubscriberLog"]

#: the keys every error object carries (PROTOCOL.md "Errors")
ERROR_KEYS = ("error", "code", "message", "timestamp", "request_id")

#: what a request that lost its connection raises (the server killed or restarting under it)
CONNECTION_LOST = (OSError, trio.BrokenResourceError, trio.ClosedResourceError, h11.RemoteProtocolError)


class InvariantViolation(AssertionError):
    """A promise of the server did not hold."""


@dataclass
class SubscriberLog:
    """The events one subscriber received: ``start`` is the cursor it subscribed after (its
    ``since``, or the cursor the subscription answered)."""

    name: str
    project: str
    event_types: tuple[str, ...]
    start: str | None = None
    cursors: list[str] = field(default_factory=list)
    event_ids: list[str] = field(default_factory=list)

    def seen(self, event: dict[str, Any]) -> None:
        self.cursors.append(event["cursor"])
        self.event_ids.append(event["event_id"])

    @property
    def last(self) -> str | None:
        return self.cursors[-1] if self.cursors else None


@dataclass
class Ledger:
    """What the clients of one test were told (single-threaded: trio tasks only)."""

    #: acknowledged results: id -> (project, the body sent)
    acked: dict[str, tuple[str, dict[str, Any]]] = field(default_factory=dict)
    #: requests in flight: number -> what
    pending: dict[int, str] = field(default_factory=dict)
    #: requests not answered within their bound
    hung: list[str] = field(default_factory=list)
    #: answers by status, and error codes seen
    statuses: Counter[int] = field(default_factory=Counter)
    codes: Counter[str] = field(default_factory=Counter)
    #: answers of 400 and more that were not the error object
    malformed: list[str] = field(default_factory=list)
    #: requests whose connection was lost (a killed server): not acknowledged, not hung
    lost: int = 0
    subscribers: list[SubscriberLog] = field(default_factory=list)
    _ids: Iterator[int] = field(default_factory=itertools.count)

    @asynccontextmanager
    async def request(self, what: str, hang_after: float = 30.0) -> AsyncIterator[None]:
        """Track one request: one still running after ``hang_after`` seconds is cancelled and
        recorded as hung; one whose connection was lost is counted in ``lost``."""
        number = next(self._ids)
        self.pending[number] = what
        try:
            with trio.move_on_after(hang_after) as scope:
                try:
                    yield
                except CONNECTION_LOST:
                    self.lost += 1
            if scope.cancelled_caught:
                self.hung.append(what)
        finally:
            del self.pending[number]

    def answered(self, what: str, r: HttpResponse) -> Any:
        """Record an answer; returns its JSON (None if it is not JSON)."""
        self.statuses[r.status] += 1
        try:
            body = r.json()
        except ValueError:
            body = None
        if r.status >= 400:
            if not (isinstance(body, dict) and all(k in body for k in ERROR_KEYS)):
                self.malformed.append(f"{what}: {r.status} {r.body[:200]!r}")
            else:
                self.codes[str(body["code"])] += 1
        return body

    def ack(self, project: str, result_id: str, body: dict[str, Any]) -> None:
        """A result the server acknowledged (answered stored)."""
        self.acked[result_id] = (project, body)

    def subscriber(self, name: str, project: str, event_types: Iterable[str]) -> SubscriberLog:
        log = SubscriberLog(name, project, tuple(event_types))
        self.subscribers.append(log)
        return log

    async def store_result(
        self, server: ServerHandle, token: str, project: str, body: dict[str, Any],
        *, hang_after: float = 30.0,
    ) -> HttpResponse | None:
        """``POST /api/results`` tracked; an answer 200 is recorded as acknowledged. Returns
        the answer, or None when there was none (connection lost, hung)."""
        answer: HttpResponse | None = None
        async with self.request("POST /api/results", hang_after):
            answer = await server.request("POST", "/api/results", token, body, timeout=hang_after + 5)
        if answer is not None:
            got = self.answered("POST /api/results", answer)
            if answer.status == 200 and isinstance(got, dict):
                self.ack(project, str(got["id"]), body)
        return answer


class Invariants:
    """The end-of-test checks of one server (``server``) against a :class:`Ledger`."""

    def __init__(self, server: ServerHandle, ledger: Ledger) -> None:
        self.server = server
        self.ledger = ledger

    async def check_all(self, *, restarts_at_least: int = 0) -> None:
        """Every check that applies to a running server."""
        await self.requests()
        await self.acknowledged_results()
        await self.subscribers()
        if restarts_at_least:
            await self.restarts_visible(restarts_at_least)

    async def requests(self) -> None:
        """No request hung or still in flight; every refusal was the error object; no 500
        answered anything but a crash (``INTERNAL`` is the only 500)."""
        ledger = self.ledger
        problems = []
        if ledger.hung:
            problems.append(f"{len(ledger.hung)} request(s) hung: {ledger.hung[:5]}")
        if ledger.pending:
            problems.append(f"{len(ledger.pending)} request(s) still in flight: {list(ledger.pending.values())[:5]}")
        if ledger.malformed:
            problems.append(f"{len(ledger.malformed)} refusal(s) without the error object: {ledger.malformed[:3]}")
        if problems:
            raise InvariantViolation("; ".join(problems))

    async def acknowledged_results(self) -> None:
        """Every acknowledged result reads back (200) with the body that was sent."""
        missing, changed = [], []
        for result_id, (project, body) in self.ledger.acked.items():
            token = self.server.token(project, sub="harness-reader")
            r = await self.server.request("GET", f"/api/results/{result_id}", token)
            if r.status != 200:
                missing.append(f"{result_id}: {r.status}")
                continue
            got = r.json()
            assert isinstance(got, dict)
            if any(got.get(k) != v for k, v in body.items() if k != "timestamp"):
                changed.append(result_id)
        if missing or changed:
            raise InvariantViolation(
                f"of {len(self.ledger.acked)} acknowledged results, {len(missing)} cannot be read "
                f"({missing[:5]}) and {len(changed)} changed ({changed[:5]})"
            )

    async def subscribers(self) -> None:
        """Each subscriber received every event of its types after its start, up to the last
        it received, exactly once and in cursor order."""
        for log in self.ledger.subscribers:
            if log.cursors != sorted(log.cursors) or len(set(log.cursors)) != len(log.cursors):
                dup = [c for c, n in Counter(log.cursors).items() if n > 1]
                raise InvariantViolation(
                    f"subscriber {log.name}: events out of order or repeated (repeated: {dup[:5]})"
                )
            if log.last is None:
                continue
            expected = await self._events(log)
            got = set(log.event_ids)
            gaps = [e for e in expected if e not in got]
            if gaps:
                raise InvariantViolation(
                    f"subscriber {log.name}: {len(gaps)} event(s) after {log.start!r} up to "
                    f"{log.last!r} never received: {gaps[:5]}"
                )

    async def _events(self, log: SubscriberLog) -> list[str]:
        """The ids of the retained events of ``log``'s types after its start, up to its last."""
        token = self.server.token(log.project, sub="harness-reader")
        found: list[tuple[str, str]] = []
        for event_type in log.event_types:
            since = log.start or "0"
            while True:
                query = f"timeout=0&limit=1000&since={since}"
                r = await self.server.request("GET", f"/api/events/wait/{event_type}?{query}", token)
                if r.status != 200:
                    raise InvariantViolation(f"cannot read the events of {event_type!r}: {r.status} {r.body[:200]!r}")
                page = r.json()
                assert isinstance(page, dict)
                events = [e for e in page["events"] if log.last is not None and e["cursor"] <= log.last]
                found.extend((e["cursor"], e["event_id"]) for e in events)
                if not page.get("more_available") or len(events) < len(page["events"]) or not page["events"]:
                    break
                since = page["events"][-1]["cursor"]
        return [event_id for _, event_id in sorted(found)]

    async def restarts_visible(self, at_least: int, within: float = 5.0) -> None:
        """``/status`` and ``/metrics`` both count at least ``at_least`` restarts (a crash
        injected just before may take a moment to be restarted: asked again for ``within`` s)."""
        deadline = trio.current_time() + within
        while True:
            body = (await self.server.request("GET", "/status")).json()
            assert isinstance(body, dict)
            restarts = body["actors"]["restarts"]
            metrics = (await self.server.request("GET", "/metrics")).body.decode()
            found = re.search(r"^orchestra_actor_restarts_total (\S+)$", metrics, re.MULTILINE)
            in_metrics = float(found.group(1)) if found else None
            if restarts >= at_least and in_metrics is not None and in_metrics >= at_least:
                return
            if trio.current_time() >= deadline:
                raise InvariantViolation(
                    f"expected at least {at_least} restarts: /status says {restarts}, /metrics {in_metrics}"
                )
            await trio.sleep(0.05)

    async def nothing_left_behind(self, agent_pids: Iterable[int] = ()) -> None:
        """After the server stopped: none of ``agent_pids`` (spawned agents' pids, e.g. from
        the agent records) is alive, and an in-process server has no task left."""
        running = [pid for pid in agent_pids if alive(pid)]
        tasks = orchestra_tasks() if isinstance(self.server, InProcessServer) else []
        if running or tasks:
            raise InvariantViolation(f"left behind: processes {running}, tasks {tasks[:10]}")


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie waiting for its parent counts as ended)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


_HERE = Path(__file__).resolve().parent
_SERVER_CODE = (str(_HERE) + os.sep, str(_HERE.parent / "actors") + os.sep)  # as installed
_CLIENT_CODE = ("client", "testing", "http_client")


def orchestra_tasks() -> list[str]:
    """The tasks of this trio run running the server's code (actors, transport; not the
    clients or this harness): none is left once an in-process server has stopped."""
    out = []
    root = trio.lowlevel.current_root_task()
    stack = [root] if root is not None else []
    while stack:
        task = stack.pop()
        for nursery in task.child_nurseries:
            stack.extend(nursery.child_tasks)
        code = getattr(task.coro, "cr_code", None)
        filename = code.co_filename if code is not None else ""
        if filename.startswith(_SERVER_CODE) and not any(
            Path(filename).name.startswith(name) for name in _CLIENT_CODE
        ):
            out.append(task.name)
    return out
