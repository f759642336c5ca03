"""Every actor target crashed under a steady load of HTTP and WebSocket clients: the server keeps
serving, requests in flight at a crash are answered with the error object (never a hang),
nothing acknowledged is lost, resumed subscribers see no gap and no duplicate."""

from __future__ import annotations

import pytest
import trio

from orchestra.testing import FaultRefused, Invariants, Ledger, Load
from tests.waiting import until


async def _crash(server, target: str) -> bool:
    """Crash ``target`` once it runs (a session comes back when its client has reconnected)."""
    try:
        await server.faults.crash(target, settle=10)
    except FaultRefused:
        return False
    return True


TARGETS = ["store", "broker", "project:p1", "context:p1", "session:subscriber-0", "agents"]


@pytest.mark.parametrize("target", TARGETS)
async def test_crashes_under_load_keep_every_promise(orchestra_server, target):
    ledger = Ledger()
    load = Load(orchestra_server, ledger, context_readers=1 if target.startswith("context") else 0)
    with trio.fail_after(90):
        async with trio.open_nursery() as nursery:
            await nursery.start(load.run)
            await load.until_done(60)
            for _ in range(3):
                await until(lambda: _crash(orchestra_server, target), f"{target} crashed")
                await load.until_done(40)  # the server keeps serving after each crash
            await load.settle()  # every subscriber caught up: none stuck after the crashes
            nursery.cancel_scope.cancel()
    assert ledger.acked and all(log.cursors for log in ledger.subscribers)
    # refusals were the error object, of the two codes a crash may answer
    assert set(ledger.codes) <= {"INTERNAL", "UNAVAILABLE"}, ledger.codes
    inv = Invariants(orchestra_server, ledger)
    await inv.check_all(restarts_at_least=0 if target.startswith("session") else 3)
    status = (await orchestra_server.request("GET", "/status")).json()
    assert status["actors"]["crashes"] >= 3
    assert (await orchestra_server.request("GET", "/health")).json()["status"] == "healthy"
