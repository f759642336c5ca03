"""The server processes' leases in PostgreSQL (actors/store_leases.py): beats, expiry, the
agents of a lost process recorded failed once whoever claims them, and what a host finds left
by its processes that are gone. A real server, each test in a fresh schema; skipped with one
line when there is none."""

from __future__ import annotations

import threading

import orjson
import pytest
from orchestra.actors.store import AgentRow, GetAgent, SaveAgent
from orchestra.actors.store_leases import (
    Beat,
    ClaimExpired,
    EndProcess,
    HostLeftovers,
    ListProcesses,
    Reap,
    RegisterProcess,
    ServerProcess,
)

from tests.postgres import fresh_schema, opened_backend

psycopg = pytest.importorskip("psycopg", reason="PostgreSQL tests skipped: psycopg is not installed")

from orchestra.actors.store_postgres import PostgresBackend  # noqa: E402


@pytest.fixture
def url():
    with fresh_schema() as url:
        yield url


def _op(b: PostgresBackend, op):
    """One lease operation (they run where the reads run); raises what it answered."""
    _, (out,) = b.apply([], [op])
    if isinstance(out, Exception):
        raise out
    return out


def _register(b: PostgresBackend, process_id: str, host: str = "h1", pid: int = 4242) -> None:
    _op(b, RegisterProcess(ServerProcess(process_id, host, pid, "boot-1", 1234, 1.7e9)))


def _agent(agent_id: str, owner: str | None, state: str = "running", seq: int = 1) -> AgentRow:
    body = {"agent_id": agent_id, "project_id": "p1", "agent_type": "w", "issue_id": "i",
            "state": state, "owner": owner, "reason": None, "restarts": 0,
            "_identity": {"pid": 999_999, "start_ticks": 1, "boot_id": "boot-1"}}
    return AgentRow(agent_id, "p1", state, seq, "t", orjson.dumps(body))


def _save(b: PostgresBackend, row: AgentRow) -> None:
    (out,), _ = b.apply([SaveAgent(row)], [])
    assert out is None, out


def _record(b: PostgresBackend, agent_id: str) -> dict:
    _, (row,) = b.apply([], [GetAgent("p1", agent_id)])
    return orjson.loads(row.body)


def _age(b: PostgresBackend, process_id: str, seconds: float) -> None:
    """Make the process's last beat ``seconds`` older (as if it had stopped beating)."""
    assert b.conn is not None
    b.conn.execute("UPDATE processes SET last_beat = last_beat - %s WHERE process_id = %s",
                   (seconds, process_id))


def test_a_process_whose_lease_expired_is_lost_and_its_live_agents_failed_once(url):
    b = opened_backend(url)
    _register(b, "A")
    _register(b, "B")
    _save(b, _agent("a-live", "A", seq=1))
    _save(b, _agent("a-done", "A", "exited", seq=2))
    _save(b, _agent("b-live", "B", seq=3))
    _save(b, _agent("nobody", None, seq=4))
    # every lease fresh: nothing is claimed
    assert _op(b, ClaimExpired("B", expiry=10)) == []
    _age(b, "A", 11)
    assert _op(b, Beat("B")) is True
    failed = _op(b, ClaimExpired("B", expiry=10))
    assert [r.agent_id for r in failed] == ["a-live"]
    record = _record(b, "a-live")
    assert record["state"] == "failed" and record["reason"] == "owner process A lost its lease"
    assert record["ended_at"] is not None and record == orjson.loads(failed[0].body)
    for untouched, state in (("a-done", "exited"), ("b-live", "running"), ("nobody", "running")):
        assert _record(b, untouched)["state"] == state
    assert _op(b, ClaimExpired("B", expiry=10)) == []  # once
    # the lost process learns it at its next beat; its rows say lost
    assert _op(b, Beat("A")) is False
    rows = {r.process_id: r for r in _op(b, ListProcesses())}
    assert rows["A"].state == "lost" and "no heartbeat for 10 s" in rows["A"].reason
    assert rows["B"].state == "alive" and rows["B"].now >= rows["B"].last_beat
    assert all(isinstance(t, float) for t in (rows["B"].now, rows["B"].last_beat, rows["A"].ended_at))
    # taking the lease again makes it alive (its agents stay failed)
    _register(b, "A")
    assert _op(b, Beat("A")) is True
    assert _record(b, "a-live")["state"] == "failed"


def test_a_claimer_never_claims_itself_even_with_an_old_beat(url):
    b = opened_backend(url)
    _register(b, "A")
    _save(b, _agent("a1", "A"))
    _age(b, "A", 100)
    assert _op(b, ClaimExpired("A", expiry=10)) == []
    assert _op(b, Beat("A")) is True


def test_a_live_save_never_revives_an_agent_recorded_ended(url):
    b = opened_backend(url)
    _register(b, "A")
    _register(b, "B")
    _save(b, _agent("a1", "A"))
    _age(b, "A", 60)
    assert len(_op(b, ClaimExpired("B", expiry=10))) == 1
    # the owner, paused meanwhile, still says the agent runs: the record stays failed
    _save(b, _agent("a1", "A", "running"))
    assert _record(b, "a1")["state"] == "failed"
    # an end it records (its fence) replaces it
    _save(b, _agent("a1", "A", "stopped"))
    assert _record(b, "a1")["state"] == "stopped"


def test_processes_claiming_at_once_fail_each_agent_once(url):
    setup = opened_backend(url)
    for p in ("A", "B", "C", "D"):
        _register(setup, p)
    for i in range(200):
        _save(setup, _agent(f"a{i}", "A", seq=i))
    _age(setup, "A", 60)
    claimers = [opened_backend(url) for _ in range(3)]
    got: list[list[AgentRow]] = [[] for _ in claimers]
    start = threading.Barrier(len(claimers))

    def claim(i: int) -> None:
        start.wait()
        got[i] = _op(claimers[i], ClaimExpired("BCD"[i], expiry=10))

    threads = [threading.Thread(target=claim, args=(i,)) for i in range(len(claimers))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    ids = [r.agent_id for rows in got for r in rows]
    assert sorted(ids) == sorted(f"a{i}" for i in range(200))  # each once, by one of them


def test_the_agents_of_a_process_stopped_in_order_are_failed_only_after_the_expiry(url):
    b = opened_backend(url)
    _register(b, "A")
    _register(b, "B")
    _save(b, _agent("a1", "A"))
    _op(b, EndProcess("A"))
    # its actors record their agents just after the stop: not claimed meanwhile
    assert _op(b, ClaimExpired("B", expiry=10)) == []
    assert b.conn is not None
    b.conn.execute("UPDATE processes SET ended_at = ended_at - 11 WHERE process_id = 'A'")
    failed = _op(b, ClaimExpired("B", expiry=10))
    assert orjson.loads(failed[0].body)["reason"] == "owner process A stopped without ending it"
    assert {r.process_id: r.state for r in _op(b, ListProcesses())}["A"] == "stopped"


def test_a_host_finds_its_gone_processes_with_what_they_may_have_left_and_reaps_each_once(url):
    b = opened_backend(url)
    _register(b, "A", host="h1")
    _register(b, "B", host="h2")
    _register(b, "C", host="h1")
    _save(b, _agent("a-live", "A", seq=1))
    _save(b, _agent("a-exited", "A", "exited", seq=2))
    _save(b, _agent("a-orphan", "A", seq=3))
    _save(b, _agent("b-live", "B", seq=4))
    _age(b, "A", 60)
    # another process declares A lost first: its agents failed (their groups may still run)
    assert {r.agent_id for r in _op(b, ClaimExpired("B", expiry=10))} == {"a-live", "a-orphan"}
    _save(b, _agent("a-late", "A", "starting", seq=5))  # (recorded by A after that)
    found = _op(b, HostLeftovers("h1", "C"))
    assert [p.process_id for p, _ in found] == ["A"]
    proc, rows = found[0]
    assert (proc.host, proc.pid, proc.boot_id, proc.start_ticks) == ("h1", 4242, "boot-1", 1234)
    assert [r.agent_id for r in rows] == ["a-live", "a-orphan", "a-late"]  # not the one that exited
    failed = _op(b, Reap("A", "owner process A is gone"))
    assert [r.agent_id for r in failed] == ["a-late"]
    assert _record(b, "a-late")["reason"] == "owner process A is gone"
    assert _op(b, Reap("A", "again")) == []  # once
    assert _op(b, HostLeftovers("h1", "C")) == []  # reaped: never looked at again
    # a process stopped in order left nothing: its host never looks at it
    _op(b, EndProcess("C"))
    assert _op(b, HostLeftovers("h1", "D")) == []


def test_the_list_of_processes_is_bounded_alive_first(url):
    b = opened_backend(url)
    for i in range(5):
        _register(b, f"P{i}")
    _op(b, EndProcess("P0"))
    rows = _op(b, ListProcesses(limit=3))
    assert len(rows) == 3 and all(r.state == "alive" for r in rows)
    assert "P0" in {r.process_id for r in _op(b, ListProcesses(limit=10))}
