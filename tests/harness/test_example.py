"""The plugin from a user's point of view: the example under examples/ passes when run by pytest
as a user runs it (the plugin found through its entry point), and a failing test names its seed,
which replays the same schedule."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import trio

ROOT = Path(__file__).resolve().parents[2]

FAILING = '''
def test_fails(orchestra_schedule):
    schedule = orchestra_schedule(["store", "broker", "project:p1"], count=3, within=1.0)
    assert schedule.steps == ()
'''


async def _pytest(*args: str, cwd: Path) -> subprocess.CompletedProcess[bytes]:
    return await trio.run_process([sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", *args],
                                  cwd=cwd, capture_stdout=True, capture_stderr=True, check=False)


async def test_the_example_runs_as_a_user_runs_it():
    with trio.fail_after(120):
        done = await _pytest("examples/test_harness_example.py", cwd=ROOT)
    out = done.stdout.decode()
    assert done.returncode == 0, out[-3000:]
    assert "2 passed" in out


async def test_a_failing_test_prints_its_seed_and_the_seed_replays_it(tmp_path):
    (tmp_path / "test_user.py").write_text(FAILING)
    (tmp_path / "pytest.ini").write_text("[pytest]\n")  # a user's project, not this repository
    args = ("test_user.py",)
    with trio.fail_after(60):
        first = await _pytest(*args, cwd=tmp_path)
    out = first.stdout.decode()
    assert first.returncode == 1, out
    seed = re.search(r"seed (\d+): replay with  pytest --orchestra-seed \1", out)
    assert seed, out
    schedule = re.search(r"schedule: (.*)", out)
    assert schedule and f'"seed": {seed.group(1)}' in schedule.group(1)
    with trio.fail_after(60):
        again = await _pytest(*args, "--orchestra-seed", seed.group(1), cwd=tmp_path)
    replayed = re.search(r"schedule: (.*)", again.stdout.decode())
    assert replayed and replayed.group(1) == schedule.group(1)  # the same faults, the same times
