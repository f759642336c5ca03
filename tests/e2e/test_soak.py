"""Opt-in soak (`pytest -m soak`): SIGKILL the server 20 times under load (orchestra.testing's
``sigkill_soak``): after every restart every acknowledged result is readable and intact, and
the subscribers resumed by cursor have every event once, in order. ``python -m bench.soak``
runs the same with figures (docs/reliability.md)."""

from __future__ import annotations

import pytest

from orchestra.testing import Ledger, ServerProcess, sigkill_soak

pytestmark = pytest.mark.soak

KILLS = 20


async def test_sigkill_soak_loses_nothing_acknowledged(tmp_path, orchestra_seed):
    server = ServerProcess(tmp_path / "d")
    ledger = Ledger()
    try:
        figures = await sigkill_soak(server, kills=KILLS, seed=orchestra_seed, ledger=ledger)
    finally:
        await server.aclose()
    assert figures.kills == KILLS and figures.acknowledged > KILLS * 10
