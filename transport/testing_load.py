"""A steady load of concurrent clients, and the SIGKILL soak, for the harness (docs/testing.md).

:class:`Load` runs HTTP writers (results and events), SDK writers (WebSocket, idempotent
retries), SDK subscribers that resume by cursor, and optionally context readers against one
server, recording every answer in a :class:`Ledger`. Its subscribers keep their log across
loads: a new load on a restarted server resumes each one after the last event it received.

:func:`sigkill_soak` kills an ``orchestra serve`` process at seeded random moments under a
load, restarts it on the same data dir and checks the invariants after every restart.
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field
from typing import Any

import trio

from .client import OrchestraError
from .testing import ServerHandle, ServerProcess
from .testing_invariants import Invariants, Ledger

__all__ = ["TICK", "Load", "SoakFigures", "sigkill_soak"]

#: the event type every HTTP writer publishes besides its results, for the subscribers
TICK = "tick"


def _result(agent_id: str, **data: Any) -> dict[str, Any]:
    return {"agent_id": agent_id, "agent_type": "python-specialist", "issue_id": "iss-1",
            "result": {"status": "success", **data}}


@dataclass
class Load:
    """Clients against ``server`` until cancelled (see the module)."""

    server: ServerHandle
    ledger: Ledger
    project: str = "p1"
    http_writers: int = 4
    ws_writers: int = 2
    subscribers: int = 2
    context_readers: int = 0
    #: pause between two requests of one client (seconds)
    pace: float = 0.005
    #: a name that keeps this load's writers' results apart from another load's
    tag: str = "load"
    #: requests answered (by any client, any status)
    done: int = 0

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run until cancelled; reports started once every subscriber is subscribed."""
        tok = self.server.token(self.project, sub="load-marker")
        mark = await self._publish(tok, {"mark": self.tag})
        async with trio.open_nursery() as nursery:
            for i in range(self.subscribers):
                await nursery.start(self._subscriber, i, mark)
            for i in range(self.http_writers):
                nursery.start_soon(self._http_writer, i)
            for i in range(self.ws_writers):
                nursery.start_soon(self._ws_writer, i)
            for i in range(self.context_readers):
                nursery.start_soon(self._context_reader, i)
            task_status.started()

    async def until_done(self, n: int, timeout: float = 30.0) -> None:
        """Wait until ``n`` more requests have been answered (``trio.TooSlowError`` if not)."""
        target = self.done + n
        with trio.fail_after(timeout):
            while True:
                if self.done >= target:
                    return
                await trio.sleep(0.01)

    async def settle(self, timeout: float = 20.0) -> None:
        """Publish a last tick and wait until every subscriber has received it: none is stuck."""
        tok = self.server.token(self.project, sub="load-marker")
        with trio.fail_after(timeout):
            last = await self._publish(tok, {"last": self.tag})
            while True:
                if all(log.last is not None and log.last >= last for log in self.ledger.subscribers):
                    return
                await trio.sleep(0.01)

    async def _publish(self, tok: str, data: dict[str, Any]) -> str:
        """Publish a tick, retrying a 503 (a part restarting); its cursor."""
        while True:
            r = await self.server.request("POST", f"/api/events/{TICK}", tok, {"data": data})
            if r.status == 200:
                body = r.json()
                assert isinstance(body, dict)
                return str(body["cursor"])
            await trio.sleep(0.05)

    async def _http_writer(self, w: int) -> None:
        name = f"{self.tag}-http-{w}"
        tok = self.server.token(self.project, sub=name)
        for i in range(10**12):
            await self.ledger.store_result(self.server, tok, self.project, _result(name, seq=i))
            async with self.ledger.request(f"POST /api/events/{TICK}"):
                r = await self.server.request("POST", f"/api/events/{TICK}", tok, {"data": {"w": name, "i": i}})
                self.ledger.answered("publish", r)
            self.done += 2
            await trio.sleep(self.pace)

    async def _ws_writer(self, w: int) -> None:
        name = f"{self.tag}-ws-{w}"
        async with self.server.client(self.project, sub=name) as client:
            for i in range(10**12):
                result = {"status": "success", "seq": i}
                async with self.ledger.request("result.store (SDK)"):
                    try:
                        answer = await client.store_result("iss-1", result)
                    except OrchestraError as exc:  # answered with the error object
                        self.ledger.codes[exc.code] += 1
                    else:
                        self.ledger.ack(self.project, answer["id"], {"agent_id": name, "result": result})
                self.done += 1
                await trio.sleep(self.pace)

    async def _context_reader(self, w: int) -> None:
        tok = self.server.token(self.project, sub=f"{self.tag}-ctx-{w}")
        for i in range(10**12):
            async with self.ledger.request("GET /api/context"):
                r = await self.server.request("GET", f"/api/context/iss-{i % 3}/python-specialist?task=t{i}", tok)
                self.ledger.answered("GET /api/context", r)
            self.done += 1
            await trio.sleep(self.pace)

    async def _subscriber(
        self, s: int, mark: str, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
    ) -> None:
        name = f"subscriber-{s}"
        log = next((sub for sub in self.ledger.subscribers if sub.name == name), None)
        if log is None:
            log = self.ledger.subscriber(name, self.project, [TICK])
            log.start = mark
        since = log.last or log.start
        async with self.server.client(self.project, sub=name) as client:
            events = await client.subscribe([TICK], since=since)
            task_status.started()
            async for event in events:
                log.seen(event)


@dataclass
class SoakFigures:
    """What a SIGKILL soak did."""

    seed: int
    kills: int = 0
    acknowledged: int = 0
    #: requests cut by a kill (no answer: not acknowledged)
    cut: int = 0
    #: requests answered, by status
    statuses: dict[int, int] = field(default_factory=dict)
    events_received: int = 0
    #: seconds from a kill until the restarted server listened again
    restart_seconds: list[float] = field(default_factory=list)
    seconds: float = 0.0


async def sigkill_soak(
    server: ServerProcess,
    *,
    kills: int,
    seed: int,
    ledger: Ledger | None = None,
    load_after: tuple[float, float] = (0.2, 0.8),
    http_writers: int = 4,
    ws_writers: int = 1,
    subscribers: int = 2,
) -> SoakFigures:
    """SIGKILL ``server`` ``kills`` times, each at a moment drawn from ``seed`` within
    ``load_after`` seconds of a load starting; after each restart on the same data dir, check
    every invariant (acknowledged results intact, subscribers resumed without gap or duplicate,
    no request hung). Returns the figures; raises :class:`InvariantViolation` on a broken promise."""
    ledger = ledger or Ledger()
    rng = random.Random(seed)
    figures = SoakFigures(seed)
    started = time.monotonic()
    if server.proc is None or server.proc.returncode is not None:
        await server.start()
    for round_ in range(kills):
        load = Load(server, ledger, http_writers=http_writers, ws_writers=ws_writers,
                    subscribers=subscribers, tag=f"r{round_}")
        async with trio.open_nursery() as nursery:
            await nursery.start(load.run)
            await trio.sleep(rng.uniform(*load_after))
            await server.kill()
            figures.kills += 1
            nursery.cancel_scope.cancel()
        t0 = time.monotonic()
        await server.start()
        figures.restart_seconds.append(time.monotonic() - t0)
        await Invariants(server, ledger).check_all()
    figures.acknowledged = len(ledger.acked)
    figures.cut = ledger.lost
    figures.statuses = dict(ledger.statuses)
    figures.events_received = sum(len(log.cursors) for log in ledger.subscribers)
    figures.seconds = time.monotonic() - started
    return figures
