"""Process crash: ``orchestra serve`` SIGKILLed at seeded random moments under a load of HTTP
writers, SDK writers and resuming SDK subscribers, restarted on the same data dir, the
invariants checked after every restart (the short version; bench/soak.py runs >= 20 kills)."""

from __future__ import annotations

from orchestra.testing import Ledger, sigkill_soak

KILLS = 3


async def test_sigkill_under_load_keeps_every_acknowledged_result_and_event(orchestra_process, orchestra_seed):
    ledger = Ledger()
    figures = await sigkill_soak(orchestra_process, kills=KILLS, seed=orchestra_seed, ledger=ledger)
    assert figures.kills == KILLS and len(orchestra_process.pids) == KILLS + 1
    assert figures.acknowledged > 0 and figures.events_received > 0
    assert all(log.cursors for log in ledger.subscribers)
