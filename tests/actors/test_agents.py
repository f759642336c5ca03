"""The pure parts of spawned agents (restart policy, governor, log rotation, ids as paths,
process identity), their profile keys, and the store's agent rows on every backend."""

from __future__ import annotations

import os
import sqlite3

import pytest
from orchestra.actors.agents import (
    AgentCapReached,
    Caps,
    Governor,
    ProcessIdentity,
    RestartPolicy,
    RotatingLog,
    identity_of,
    is_own_group,
    path_segment,
    tail_lines,
)
from orchestra.actors.agents._procs import boot_id
from orchestra.actors.profiles import AgentProfile, ProfileError, Profiles
from orchestra.actors.store import (
    MIGRATIONS,
    AgentRow,
    FindSpawn,
    SaveAgent,
    SQLiteBackend,
)

from tests.actors.conftest import read_one as _read

# -- restart policy --


def test_never_policy_never_restarts():
    assert RestartPolicy("never").after_failure(0.0, 0.5) is None


def test_on_failure_backs_off_exponentially_with_jitter_then_gives_up():
    policy = RestartPolicy("on-failure", max_restarts=4, period=60, backoff=1.0, backoff_max=5.0)
    assert policy.after_failure(0.0, 1.0) == 1.0
    assert policy.after_failure(1.0, 1.0) == 2.0
    assert policy.after_failure(3.0, 0.0) == 2.0  # 4 s halved by the lowest jitter
    assert policy.after_failure(7.0, 1.0) == 5.0  # 8 s capped at backoff_max
    assert policy.after_failure(12.0, 1.0) is None  # the fifth failure within 60 s is final


def test_on_failure_forgets_restarts_older_than_the_period():
    policy = RestartPolicy("on-failure", max_restarts=1, period=10, backoff=0.5, backoff_max=1)
    assert policy.after_failure(0.0, 1.0) == 0.5
    assert policy.after_failure(5.0, 1.0) is None
    assert policy.after_failure(10.5, 1.0) == 0.5  # the first one left the window


def test_policy_comes_from_the_profile():
    profile = AgentProfile("x", restart="on-failure", max_restarts=7, restart_period=9.0,
                           restart_backoff=0.1, restart_backoff_max=0.2)
    policy = RestartPolicy.of(profile)
    assert (policy.policy, policy.max_restarts, policy.period, policy.backoff, policy.backoff_max) == (
        "on-failure", 7, 9.0, 0.1, 0.2)


# -- governor --


def test_governor_names_the_cap_passed():
    governor = Governor(Caps(per_project=2, max_depth=2))
    typed = AgentProfile("t", max_running=1)
    free = AgentProfile("f")
    governor.check("p", typed, 1)
    governor.add("a1", "p", "t")
    with pytest.raises(AgentCapReached) as caught:
        governor.check("p", typed, 1)
    assert (caught.value.cap, caught.value.bound, caught.value.limit) == ("type", "agents.type", 1)
    governor.check("other", typed, 1)  # per project
    governor.add("a2", "p", "f")
    with pytest.raises(AgentCapReached) as caught:
        governor.check("p", free, 1)
    assert caught.value.cap == "project" and caught.value.details["cap"] == "project"
    with pytest.raises(AgentCapReached) as caught:
        governor.check("other", free, 3)
    assert caught.value.cap == "depth" and "retry_after_seconds" not in caught.value.details
    governor.remove("a2")
    governor.remove("a2")  # twice: no harm
    governor.check("p", free, 2)
    assert governor.running("p") == 1 and governor.running("p", "t") == 1 and len(governor) == 1


# -- logs --


def test_rotating_log_is_bounded_and_tail_reads_across_the_rotation(tmp_path):
    path = tmp_path / "a.log"
    log = RotatingLog(path, max_bytes=100, backups=2)
    for i in range(50):
        log.write(b"line %02d\n" % i)  # 8 bytes each: 400 bytes in all
    log.write(b"x" * 1000)  # one chunk longer than every file kept: its end only
    log.write(b"\nend\n")
    log.close()
    files = sorted(p.name for p in tmp_path.iterdir())
    assert files == ["a.log", "a.log.1", "a.log.2"]
    assert all((tmp_path / f).stat().st_size <= 100 for f in files)
    assert tail_lines(path, 1) == ["end"]
    assert tail_lines(path, 0) == [] and tail_lines(tmp_path / "none.log", 5) == []
    only = tmp_path / "only.log"
    log = RotatingLog(only, max_bytes=100, backups=0)
    log.write(b"a" * 90)
    log.write(b"b" * 60)
    log.close()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.log", "a.log.1", "a.log.2", "only.log"]
    assert only.read_bytes() == b"b" * 50  # no backups: the file starts over when full


def test_tail_continues_into_the_previous_file(tmp_path):
    path = tmp_path / "a.log"
    log = RotatingLog(path, max_bytes=16, backups=1)
    log.write(b"one\ntwo\nthree\n")
    log.write(b"four\n")
    log.close()
    assert tail_lines(path, 3) == ["two", "three", "four"]


# -- ids as file names --


@pytest.mark.parametrize("value", ["../../etc", "a/b", ".hidden", "x" * 100, "é", "a..b", "", " "])
def test_an_id_never_chooses_where_a_file_goes(value):
    segment = path_segment(value)
    assert "/" not in segment and ".." not in segment and not segment.startswith(".")
    assert segment.startswith("id-") and len(segment) == 27


def test_a_plain_id_is_its_own_file_name():
    assert path_segment("p1") == "p1" and path_segment("my-project_2.x") == "my-project_2.x"


# -- process identity --


def test_identity_proves_only_the_same_process_of_the_same_boot():
    me = identity_of(os.getpid())
    assert me is not None and is_own_group(me)
    assert is_own_group(ProcessIdentity(me.pid, me.start_ticks + 1, me.boot_id)) is False
    assert is_own_group(ProcessIdentity(me.pid, me.start_ticks, "another-boot")) is False
    assert me.boot_id == boot_id() != ""


def test_a_group_without_members_is_not_proved():
    ident = ProcessIdentity(2**22 + 12345, 1, boot_id())  # above pid_max on common systems
    assert is_own_group(ident) is False


# -- profiles --


def test_profile_keys_of_spawned_agents(tmp_path):
    path = tmp_path / "p.toml"
    path.write_text(
        '[profiles.worker]\ncommand = "python -m \'my agent\'"\nrestart = "on-failure"\n'
        'max_restarts = 5\nrestart_period = 30\nrestart_backoff = 0.2\nrestart_backoff_max = 4\n'
        'stall_timeout = 90\nmax_running = 2\nworkspace = "worktree"\nkeep_worktree = true\n'
        'stop_grace = 1.5\ntoken_ttl = 600\n'
    )
    w = Profiles.load(path).get("worker")
    assert w.command == ("python", "-m", "my agent")
    assert (w.restart, w.max_restarts, w.restart_period, w.restart_backoff, w.restart_backoff_max) == (
        "on-failure", 5, 30.0, 0.2, 4.0)
    assert (w.stall_timeout, w.max_running, w.workspace, w.keep_worktree, w.stop_grace, w.token_ttl) == (
        90.0, 2, "worktree", True, 1.5, 600.0)
    d = Profiles().get("anything")
    assert (d.restart, d.max_running, d.workspace, d.stall_timeout) == ("never", None, "root", 300.0)


@pytest.mark.parametrize(
    "line, message",
    [
        ('restart = "always"', "restart: must be one of 'never', 'on-failure'"),
        ('workspace = "tmp"', "workspace: must be one of 'root', 'worktree'"),
        ("max_restarts = -1", "max_restarts: must be an integer from 0 to 1000"),
        ("max_running = 0", "max_running: must be an integer from 1 to 100000"),
        ("max_running = 1.5", "max_running: must be an integer"),
        ("stall_timeout = 0", "stall_timeout: must be a number of seconds"),
        ("stall_timeout = true", "stall_timeout: must be a number of seconds"),
        ("restart_period = nan", "restart_period: must be a number of seconds"),
        ("token_ttl = 5", "token_ttl: must be a number of seconds from 60"),
        ("keep_worktree = 1", "keep_worktree: must be true or false"),
        ("command = []", "command: must be a non-empty argv list"),
        ('command = ["a", ""]', "command: must be a non-empty argv list"),
        ("command = \"a 'b\"", "command: cannot split the command line"),
        ("restart_backoff = 5\nrestart_backoff_max = 1", "restart_backoff_max: must be at least restart_backoff"),
    ],
)
def test_profile_errors_name_file_entry_and_key(tmp_path, line, message):
    path = tmp_path / "p.toml"
    path.write_text(f"[profiles.worker]\n{line}\n")
    with pytest.raises(ProfileError) as info:
        Profiles.load(path)
    assert str(path) in str(info.value) and "[profiles.worker]" in str(info.value)
    assert message in str(info.value)


# -- the store's agent rows: tests/actors/test_store_backends.py (every backend) --


def _row(agent_id: str, state: str = "running", seq: int = 1, project: str = "p1", **kw) -> AgentRow:
    return AgentRow(agent_id, project, state, seq, "t", b'{"agent_id":"%s"}' % agent_id.encode(), **kw)


def test_a_version_2_database_is_migrated(tmp_path):
    path = tmp_path / "o.db"
    db = sqlite3.connect(path, isolation_level=None)
    for migration in MIGRATIONS[:2]:
        db.executescript(migration)
    db.execute("PRAGMA user_version=2")
    db.close()
    backend = SQLiteBackend(path)
    backend.open()
    try:
        backend.apply([SaveAgent(_row("a1", spawn_key="s\x00k"))], [])
        assert _read(backend, FindSpawn("p1", "s\x00k")).agent_id == "a1"
    finally:
        backend.close()
    assert sqlite3.connect(path).execute("PRAGMA user_version").fetchone()[0] == 3
