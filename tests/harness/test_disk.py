"""Disk trouble (the store's fault hook: SQLite failing as on a full or read-only disk): writes
answer 503 with a clear error and are not stored, reads go on, and everything works again once
space returns; nothing acknowledged is lost."""

from __future__ import annotations

import pytest
import trio

from orchestra.testing import Invariants, Ledger, Load
from tests.conftest import result_body


@pytest.mark.parametrize("state, says", [("full", "disk is full"), ("read_only", "readonly database")])
async def test_a_full_or_read_only_disk_answers_503_and_recovers(orchestra_server, state, says):
    server, ledger = orchestra_server, Ledger()
    tok = server.token("p1")
    load = Load(server, ledger, http_writers=3, ws_writers=1, subscribers=1)
    with trio.fail_after(60):
        async with trio.open_nursery() as nursery:
            await nursery.start(load.run)
            await load.until_done(40)
            acked_before = len(ledger.acked)
            await server.faults.disk(state)
            refused = await server.request("POST", "/api/results", tok, result_body(marker="refused"))
            assert refused.status == 503, refused.body
            error = refused.json()
            assert error["code"] == "UNAVAILABLE" and says in error["message"] and error["retry_after_seconds"] > 0
            published = await server.request("POST", "/api/events/e", tok, {"data": {}})
            assert published.status == 503
            some = next(iter(ledger.acked))  # reads go on while the disk is full
            assert (await server.request("GET", f"/api/results/{some}", tok)).status == 200
            await load.until_done(30)  # every writer is refused now, none hangs
            assert ledger.codes["UNAVAILABLE"] > 0
            await server.faults.disk("ok")
            acked_at_recovery = len(ledger.acked)
            await load.until_done(40)
            assert len(ledger.acked) > acked_at_recovery > 0 and acked_before > 0
            await load.settle()
            nursery.cancel_scope.cancel()
    found = (await server.request("GET", "/api/results?q=refused", tok)).json()
    assert found["results"] == []  # refused means not stored
    assert set(ledger.codes) == {"UNAVAILABLE"}
    await Invariants(server, ledger).check_all()
