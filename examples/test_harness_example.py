"""Testing your own agents against a server that breaks, with Orchestra's pytest plugin.

Installing orchestra-sidecar registers the plugin; these fixtures need pytest-trio::

    pip install orchestra-sidecar pytest-trio
    pytest examples/test_harness_example.py
    pytest examples/test_harness_example.py --orchestra-seed 1234   # replay a failing run

See docs/testing.md for every fixture, fault and check.
"""

from __future__ import annotations

import pytest
import trio

from orchestra.client import Client, OrchestraError
from orchestra.testing import InProcessServer, Invariants, Ledger

pytestmark = pytest.mark.trio


async def review_agent(client: Client, ledger: Ledger, steps: int) -> None:
    """Your agent: it stores a result per step and tells the others with an event. Every
    result the server acknowledges is noted in the ledger (the checks read them back)."""
    for step in range(steps):
        result = {"status": "success", "step": step}
        try:
            answer = await client.store_result("ISS-7", result)
        except OrchestraError:  # an error object: not stored, the agent carries on
            continue
        ledger.ack("web", answer["id"], {"result": result})
        await client.publish("review_step", {"step": step})


async def test_my_agent_loses_nothing_while_the_server_crashes(
    orchestra_server: InProcessServer, orchestra_schedule, orchestra_ledger: Ledger,
) -> None:
    # crashes of the store, the broker and the project's actor, drawn from this test's seed
    schedule = orchestra_schedule(["store", "broker", "project:web"], count=4, within=1.0)
    async with orchestra_server.client("web", "code-reviewer", sub="rev-1") as client:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(orchestra_server.faults.run, schedule)
            await review_agent(client, orchestra_ledger, steps=60)
            await trio.sleep(1.1)  # the whole schedule has run
    checks = Invariants(orchestra_server, orchestra_ledger)
    await checks.check_all(restarts_at_least=1)


async def test_a_subscriber_resumes_without_gaps(orchestra_server: InProcessServer) -> None:
    ledger = Ledger()
    async with orchestra_server.client("web", "code-reviewer", sub="rev-1") as writer, \
            orchestra_server.client("web", "chief-architect", sub="boss") as reader:
        first = await writer.publish("review_step", {"step": -1})
        log = ledger.subscriber("boss", "web", ["review_step"])
        log.start = first["cursor"]
        events = await reader.subscribe(["review_step"], since=first["cursor"])
        for step in range(20):
            if step == 10:  # the project's actor crashes while the subscriber listens
                await orchestra_server.faults.crash("project:web", settle=10)
            await writer.publish("review_step", {"step": step})
        with trio.fail_after(20):
            async for event in events:
                log.seen(event)
                if event["data"]["step"] == 19:
                    break
    await Invariants(orchestra_server, ledger).check_all(restarts_at_least=1)
