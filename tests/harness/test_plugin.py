"""The harness itself: its fixtures, faults, schedules and checks do what docs/testing.md says."""

from __future__ import annotations

import pytest
import trio

from orchestra.testing import FaultSchedule, Invariants, InvariantViolation, Ledger
from tests.conftest import result_body


def test_a_schedule_is_a_function_of_its_seed():
    targets = ["store", "broker", "project:p1"]
    a = FaultSchedule.generate(7, targets, count=6, within=3.0, kinds=("crash", "delay"),
                               points=("now", "next_write", "mid_fanout"))
    assert a == FaultSchedule.generate(7, targets, count=6, within=3.0, kinds=("crash", "delay"),
                                       points=("now", "next_write", "mid_fanout"))
    assert a != FaultSchedule.generate(8, targets, count=6, within=3.0, kinds=("crash", "delay"),
                                       points=("now", "next_write", "mid_fanout"))
    assert [s.after for s in a.steps] == sorted(s.after for s in a.steps)
    for step in a.steps:  # a point only where the target has it, only for crashes
        assert step.at == "now" or (step.kind == "crash" and step.target != "broker")
    assert '"seed": 7' in a.describe()


async def test_the_in_process_server_serves_and_its_invariants_hold(orchestra_server, orchestra_ledger,
                                                                    orchestra_invariants):
    tok = orchestra_server.token("p1")
    for i in range(5):
        r = await orchestra_ledger.store_result(orchestra_server, tok, "p1", result_body(n=i))
        assert r is not None and r.status == 200
    assert len(orchestra_ledger.acked) == 5
    async with orchestra_server.client("p1", "python-specialist", sub="sdk") as client:
        assert (await client.ping())["pong"] is True
    await orchestra_invariants.check_all()


async def test_the_checks_catch_what_they_promise(orchestra_server):
    tok = orchestra_server.token("p1")
    ledger = Ledger()
    inv = Invariants(orchestra_server, ledger)
    ledger.ack("p1", "res-does-not-exist", result_body())  # an "acknowledged" result that is not there
    with pytest.raises(InvariantViolation, match="cannot be read"):
        await inv.acknowledged_results()
    ledger = Ledger()
    inv = Invariants(orchestra_server, ledger)
    r = await ledger.store_result(orchestra_server, tok, "p1", result_body())
    ledger.acked[r.json()["id"]] = ("p1", result_body(status="changed"))
    with pytest.raises(InvariantViolation, match="changed"):
        await inv.acknowledged_results()
    # a subscriber that missed one event, or got one twice
    cursors = []
    for i in range(3):
        cursors.append((await orchestra_server.request("POST", "/api/events/e", tok, {"data": {"n": i}})).json())
    log = ledger.subscriber("s", "p1", ["e"])
    log.start = "0"
    log.seen({"cursor": cursors[0]["cursor"], "event_id": cursors[0]["event_id"]})
    log.seen({"cursor": cursors[2]["cursor"], "event_id": cursors[2]["event_id"]})
    with pytest.raises(InvariantViolation, match="never received"):
        await inv.subscribers()
    log.seen({"cursor": cursors[2]["cursor"], "event_id": cursors[2]["event_id"]})
    with pytest.raises(InvariantViolation, match="repeated"):
        await inv.subscribers()
    with pytest.raises(InvariantViolation, match="restarts"):
        await inv.restarts_visible(1, within=0.2)
    # a request that never answers is hung, not waited for forever
    async with ledger.request("sleeps", hang_after=0.05):
        await trio.sleep_forever()
    with pytest.raises(InvariantViolation, match="hung"):
        await inv.requests()


async def test_faults_crash_and_restarts_are_visible(orchestra_server, orchestra_invariants):
    tok = orchestra_server.token("p1")
    await orchestra_server.request("POST", "/api/results", tok, result_body())
    await orchestra_server.faults.crash("project:p1")
    await orchestra_server.faults.crash("store")
    await orchestra_invariants.restarts_visible(2)


async def test_the_process_server_survives_sigkill_with_everything_acknowledged(orchestra_process):
    ledger = Ledger()
    inv = Invariants(orchestra_process, ledger)
    tok = orchestra_process.token("p1")
    for i in range(5):
        await ledger.store_result(orchestra_process, tok, "p1", result_body(n=i))
    first = orchestra_process.pid
    await orchestra_process.restart()
    assert orchestra_process.pid != first and orchestra_process.pids == [first, orchestra_process.pid]
    await inv.check_all()
    assert len(ledger.acked) == 5


def test_loading_the_plugin_imports_no_server():
    """pytest loads the ``pytest11`` plugin in every run on a machine where Orchestra is
    installed, most of them for other projects' tests: loading it must not import the server."""
    import subprocess
    import sys
    from importlib.metadata import entry_points

    (plugin,) = [e for e in entry_points(group="pytest11") if e.name == "orchestra"]
    probe = (f"import sys; import {plugin.module}; "
             "print(sorted(m for m in sys.modules if m.startswith(('trio', 'orchestra.actors', 'orchestra.transport.'))))")
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout
    assert out.strip() == f"['{plugin.module}']"
