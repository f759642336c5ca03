"""`orchestra demo` end to end: the real command, a real server process, real agent processes."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest
from orchestra.transport.demo import plan_fleet


def _demo(*args: str, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orchestra", "demo", "--no-dashboard", *args],
        capture_output=True, text=True, timeout=timeout,
    )


def test_the_fleet_plan_has_every_type_and_its_size():
    for size in (5, 13, 40):
        fleet = plan_fleet(size)
        assert len(fleet) + 1 == size  # the architect is the one not in its own plan
    kinds = {t for t, _ in plan_fleet(40)}
    assert kinds == {"python-specialist", "go-specialist", "rust-specialist", "api-explorer",
                     "devops-engineer", "code-reviewer", "security-auditor", "test-engineer",
                     "documentation-expert"}


def test_a_small_fleet_finishes_with_every_agent_succeeded():
    done = _demo("--agents", "16", "--projects", "2", "--timeout", "180")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "16/16 agents succeeded, 0 failed" in done.stdout


def test_chaos_crashes_actors_and_kills_agents_and_every_round_still_finishes():
    done = _demo("--agents", "16", "--projects", "2", "--chaos", "--timeout", "200")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "16/16 agents succeeded, 0 failed" in done.stdout
    summary = " ".join(done.stdout[done.stdout.index("chaos: injected"):].split())
    injected = re.match(r"chaos: injected \{(.*?)\} actor crashes and killed (\d+) agent", summary)
    assert injected and (injected.group(1) or int(injected.group(2))), summary  # something was broken


@pytest.mark.soak
def test_the_default_fleet_of_119_agents():
    done = _demo(timeout=600)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "119/119 agents succeeded, 0 failed" in done.stdout
