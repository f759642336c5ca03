"""The pytest plugin of the harness (registered as ``orchestra`` by the ``pytest11`` entry point,
so installing orchestra-sidecar gives it to every pytest run; docs/testing.md).

Fixtures (async ones need pytest-trio: ``trio_mode = true`` or ``@pytest.mark.trio``):

``orchestra_server``
    an :class:`InProcessServer` on port 0 over a temporary data dir, fault injection on;
    stopped at teardown, which fails the test if a task of it is left behind.
``orchestra_process``
    a :class:`ServerProcess` (``orchestra serve`` as a child process), started; killed at teardown.
``orchestra_ledger`` / ``orchestra_invariants``
    a :class:`Ledger`, and the :class:`Invariants` of ``orchestra_server`` against it.
``orchestra_seed``
    the seed of this test's fault schedules: ``--orchestra-seed N`` or a fresh one per test.
``orchestra_schedule``
    ``orchestra_schedule(targets, count=, within=, kinds=, points=)``: a
    :class:`FaultSchedule` drawn from ``orchestra_seed``.

A failing test that used a seed says so in its report (section "orchestra"): the seed, the
command line option that replays it, and every schedule drawn and fault injected.

Every pytest run of a machine where orchestra-sidecar is installed loads this module, most of
them for tests that never touch Orchestra: so it imports only pytest here, and the server (about
0.8 s of imports) when a fixture is first used.
"""

from __future__ import annotations

import random
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    import trio

    from .testing import Faults, FaultSchedule, InProcessServer, ServerProcess
    from .testing_invariants import Invariants, Ledger

__all__ = [
    "orchestra_invariants",
    "orchestra_ledger",
    "orchestra_process",
    "orchestra_schedule",
    "orchestra_seed",
    "orchestra_server",
    "pytest_addoption",
    "pytest_runtest_makereport",
]

_SEED = pytest.StashKey[int]()
_SCHEDULES: pytest.StashKey[list[FaultSchedule]] = pytest.StashKey()
_FAULTS: pytest.StashKey[list[Faults]] = pytest.StashKey()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("orchestra", "Orchestra fault-injection harness")
    group.addoption(
        "--orchestra-seed", type=int, default=None, metavar="N",
        help="seed of the fault schedules (replays a failing run; default: a fresh seed per test)",
    )


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Any:
    report = yield
    seed = item.stash.get(_SEED, None)
    if report.failed and seed is not None:
        lines = [f"seed {seed}: replay with  pytest --orchestra-seed {seed} {item.nodeid!r}"]
        lines += [f"schedule: {s.describe()}" for s in item.stash.get(_SCHEDULES, [])]
        for faults in item.stash.get(_FAULTS, []):
            lines += [f"injected: {body}" for body in faults.injected]
        report.sections.append(("orchestra", "\n".join(lines)))
    return report


@pytest.fixture
def orchestra_seed(request: pytest.FixtureRequest) -> int:
    """This test's seed (``--orchestra-seed``, else a fresh one), printed if the test fails."""
    given = request.config.getoption("--orchestra-seed", None)
    seed = int(given) if given is not None else random.SystemRandom().randrange(2**32)
    request.node.stash[_SEED] = seed
    return seed


@pytest.fixture
def orchestra_schedule(
    request: pytest.FixtureRequest, orchestra_seed: int,
) -> Callable[..., FaultSchedule]:
    """Draw :class:`FaultSchedule` s from this test's seed (the n-th drawn uses seed + n)."""
    from .testing import FaultSchedule

    drawn: list[FaultSchedule] = request.node.stash.setdefault(_SCHEDULES, [])

    def draw(targets: Sequence[str], **kwargs: Any) -> FaultSchedule:
        schedule = FaultSchedule.generate(orchestra_seed + len(drawn), targets, **kwargs)
        drawn.append(schedule)
        return schedule

    return draw


@pytest.fixture
async def orchestra_server(
    request: pytest.FixtureRequest, nursery: trio.Nursery, tmp_path: Path,
) -> AsyncIterator[InProcessServer]:
    """A real server in this trio run (see :class:`InProcessServer`)."""
    import trio

    from .testing import InProcessServer
    from .testing_invariants import orchestra_tasks

    server = await InProcessServer(tmp_path / "orchestra-data", root=tmp_path).start(nursery)
    request.node.stash.setdefault(_FAULTS, []).append(server.faults)
    yield server
    with trio.fail_after(30):
        await server.stop()
    left = orchestra_tasks()
    assert not left, f"tasks of the server left after its stop: {left}"


@pytest.fixture
async def orchestra_process(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[ServerProcess]:
    """``orchestra serve`` as a child process, started (see :class:`ServerProcess`)."""
    from .testing import ServerProcess

    server = ServerProcess(tmp_path / "orchestra-process-data")
    request.node.stash.setdefault(_FAULTS, []).append(server.faults)
    try:
        await server.start()
        yield server
    finally:
        await server.aclose()


@pytest.fixture
def orchestra_ledger() -> Ledger:
    from .testing_invariants import Ledger

    return Ledger()


@pytest.fixture
def orchestra_invariants(orchestra_server: InProcessServer, orchestra_ledger: Ledger) -> Invariants:
    from .testing_invariants import Invariants

    return Invariants(orchestra_server, orchestra_ledger)
