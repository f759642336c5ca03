"""One spawned agent: an actor that owns one OS process (and its restarts, liveness, log).

The process runs in its own process group; the actor's helper task waits for it, copies its
output into the agent's rotating log and reports its exit. Whatever ends the actor (a stop, a
shutdown, a crash), the group does not outlive it: an orderly stop sends SIGTERM and SIGKILL
after the grace, a crash SIGKILLs the group at once, and the restarted actor counts that run
as failed.
"""

from __future__ import annotations

import logging
import math
import os
import random
import signal
import subprocess
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import orjson
import trio

from ..errors import Unavailable
from ..records import iso_time
from ..runtime import DEFERRED, Actor, ActorError, ActorRef, Call
from ..store import AgentRow, GetAgent, SaveAgent, StoreError
from ._logs import RotatingLog
from ._policy import RestartPolicy
from ._procs import ProcessIdentity, identity_of, is_own_group, signal_group
from ._spec import LIVE_STATES, TERMINAL_STATES, AgentHooks, AgentSpec, public_record
from ._workspace import WorkspaceError, add_worktree, remove_worktree, write_mcp_config

__all__ = ["AgentActor", "AgentChanged", "Fence", "GetAnswer", "GetRecord", "ServerStopping", "Stop", "Touch"]

log = logging.getLogger("orchestra.agents")


# -- messages --


@dataclass(frozen=True, slots=True)
class GetRecord:
    """Answers the agent's current record (internal keys included)."""


@dataclass(frozen=True, slots=True)
class GetAnswer:
    """Answers the spawn answer of the agent's first start."""


@dataclass(frozen=True, slots=True)
class Touch:
    """Cast: the agent made a request (it is alive and working)."""


@dataclass(frozen=True, slots=True)
class Stop:
    """End the agent: SIGTERM to its group, SIGKILL after ``grace`` seconds (None: the
    profile's ``stop_grace``). Answers the public record once the process has ended."""

    grace: float | None = None


@dataclass(frozen=True, slots=True)
class ServerStopping:
    """Cast by the registry before it ends every process group at shutdown: the exit that
    follows is a stop (``stopped``, no restart, no event), not a failure."""


@dataclass(frozen=True, slots=True)
class Fence:
    """Cast by the registry when this server process lost its lease: another process has
    recorded the agent ``failed`` already, so it must not run on. Its group gets SIGTERM, then
    SIGKILL after the profile's grace; the agent ends ``failed`` with ``reason``, no event (the
    other process published it), no restart."""

    reason: str


@dataclass(frozen=True, slots=True)
class AgentChanged:
    """Cast to the registry on every change of state (not on every touch)."""

    record: dict[str, Any]


@dataclass(frozen=True, slots=True)
class _Exited:
    run: int
    returncode: int


class AgentActor(Actor):
    """Owns one agent's process across its restarts. ``restarted`` says that an earlier
    incarnation of this actor crashed (the supervisor is running it again)."""

    #: how long the context of a new agent may wait for a restarting or busy server part
    prepare_seconds = 15.0

    def __init__(
        self,
        spec: AgentSpec,
        hooks: AgentHooks,
        store: ActorRef,
        registry: ActorRef,
        *,
        restarted: bool = False,
        log_max_bytes: int = 10 * 1024 * 1024,
        log_backups: int = 2,
        store_timeout: float = 10.0,
        rng: Callable[[], float] = random.random,
        wall_clock: Callable[[], float] = time.time,
    ) -> None:
        self.spec = spec
        self.hooks = hooks
        self.store = store
        self.registry = registry
        self.restarted = restarted
        self.log_max_bytes = log_max_bytes
        self.log_backups = log_backups
        self.store_timeout = store_timeout
        self.rng = rng
        self.wall_clock = wall_clock

    # -- lifecycle --

    async def on_start(self) -> None:
        spec = self.spec
        self.policy = RestartPolicy.of(spec.profile)
        self.record = spec.initial_record()
        self.answer: dict[str, Any] | None = None
        self.proc: trio.Process | None = None
        self.run = 0
        self.kill_at = self.restart_at = self.stall_at = math.inf
        self.stopping = False
        #: why the agent is being stopped; None: on request (published), else the server's stop
        self.stop_reason: str | None = None
        #: how a stop not on request ends it: ``stopped`` (the server's stop) or ``failed`` (fenced)
        self.stop_state = "stopped"
        self.stoppers: list[Call] = []
        self.last_activity: float | None = None
        self.cwd = spec.root
        self.worktree = False
        self._first_token: str | None = None
        self.log: RotatingLog | None = None
        self.log = RotatingLog(spec.log_path, self.log_max_bytes, self.log_backups)
        if self.restarted:
            await self._after_crash()
            return
        try:
            if spec.profile.workspace == "worktree":
                self.cwd = await add_worktree(spec.root, spec.worktree_path, spec.agent_id)
                self.worktree = True
                self.record["workspace"] = str(self.cwd)
            if spec.profile.mcp:
                write_mcp_config(self.cwd)
            spec.context_path.parent.mkdir(parents=True, exist_ok=True)
            await self._write_context(spec)
        except Exception as exc:  # any: this agent fails, its actor (and the registry) serve on
            await self._end("failed", f"could not prepare the agent: {exc!r}"
                            if not isinstance(exc, WorkspaceError | OSError) else
                            f"could not prepare the agent: {exc}")
        else:
            await self._launch()
        self.answer = {
            "agent_id": spec.agent_id,
            "spawned": self.record["pid"] is not None,
            "process_id": self.record["pid"],
            "context_injected": spec.context_path.exists(),
            "jwt_token": self._first_token,
            "webhook_url": None,
            "state": self.record["state"],
        }
        await self._save(answer=self.answer)

    async def _after_crash(self) -> None:
        """The previous incarnation crashed: end whatever is left of its process group and
        count that run as failed."""
        row = await self._load()
        if row is not None:
            self.record = orjson.loads(row.body)
            if row.answer is not None:
                self.answer = orjson.loads(row.answer)
        self.worktree = self.spec.profile.workspace == "worktree" and self.record["workspace"] != str(self.spec.root)
        if self.worktree:
            self.cwd = self.spec.worktree_path
        ident = self.record.get("_identity")
        if ident is not None:
            pgid = ident["pid"]
            if is_own_group(ProcessIdentity(**ident)):
                signal_group(pgid, signal.SIGKILL)
            await _reap(pgid)
        # restarts already counted by earlier incarnations still count against the policy
        self.policy.history.extend(self.record.get("_restart_times") or ())
        if self.record["state"] in LIVE_STATES:
            await self._failed_run(None, "the agent's actor crashed")

    def on_exit(self) -> None:
        # A crash too: the process group must not outlive its owner.
        if self.proc is not None and self.proc.poll() is None:
            signal_group(self.proc.pid, signal.SIGKILL)
        if self.log is not None:  # None: the start failed before the log was opened
            self.log.close()

    async def on_stop(self) -> None:
        """The server stops (or the registry forgets an ended agent): end the process group,
        SIGTERM then SIGKILL after the grace, and record the agent ``stopped``."""
        proc = self.proc
        if proc is not None and proc.poll() is None:
            signal_group(proc.pid, signal.SIGTERM)
            with trio.move_on_after(self.spec.profile.stop_grace):
                await proc.wait()
            signal_group(proc.pid, signal.SIGKILL)
            with trio.move_on_after(2):
                await proc.wait()
        if proc is not None:
            signal_group(proc.pid, signal.SIGKILL)  # members that left the leader behind
        if self.record["state"] in LIVE_STATES:
            if proc is not None:
                self.record["exit_code"] = proc.poll()
            with trio.move_on_after(self.store_timeout):
                await self._end("stopped", "the server stopped", publish=False)
        else:
            # the save of its end may have been cut short by this stop (cancelled before the
            # store had it): the durable record must not stay live
            with trio.move_on_after(self.store_timeout):
                await self._save()
        for call in self.stoppers:
            call.reply(public_record(self.record))

    def next_deadline(self) -> float:
        return min(self.kill_at, self.restart_at, self.stall_at)

    async def on_timeout(self) -> None:
        now = trio.current_time()
        if now >= self.kill_at:
            self.kill_at = math.inf
            if self.proc is not None:
                signal_group(self.proc.pid, signal.SIGKILL)
        if now >= self.restart_at:
            self.restart_at = math.inf
            await self._launch()
        if now >= self.stall_at:
            self.stall_at = math.inf
            if self.record["state"] == "running":
                self.record["state"] = "stalled"
                await self._changed()
                await self._publish("agent_stalled")

    # -- messages --

    async def handle(self, msg: Any) -> Any:
        if isinstance(msg, Touch):
            return await self._touch()
        if isinstance(msg, GetRecord):
            return self._snapshot()
        if isinstance(msg, GetAnswer):
            return self.answer
        if isinstance(msg, _Exited):
            return await self._exited(msg)
        if isinstance(msg, Stop):
            return await self._stop(msg)
        if isinstance(msg, ServerStopping):
            self.stopping = True
            self.stop_reason = "the server stopped"
            self.restart_at = math.inf
            return None
        if isinstance(msg, Fence):
            return await self._fence(msg)
        raise TypeError(f"not an agent message: {msg!r}")

    def _snapshot(self) -> dict[str, Any]:
        record = dict(self.record)
        if self.last_activity is not None:
            record["last_activity"] = iso_time(self.last_activity)
        return record

    async def _touch(self) -> None:
        self.last_activity = self.wall_clock()
        state = self.record["state"]
        if state in ("running", "stalled"):
            self.stall_at = trio.current_time() + self.spec.profile.stall_timeout
        if state == "stalled":
            self.record["state"] = "running"
            await self._changed()

    async def _stop(self, msg: Stop) -> Any:
        if self.record["state"] in TERMINAL_STATES:
            return public_record(self._snapshot())
        self.stoppers.append(self.defer())
        if self.stopping:
            return DEFERRED
        self.stopping = True
        if self.proc is None:  # waiting to restart: nothing runs
            self.restart_at = math.inf
            await self._end("stopped", "stopped on request")
            return DEFERRED
        grace = self.spec.profile.stop_grace if msg.grace is None else msg.grace
        signal_group(self.proc.pid, signal.SIGTERM)
        self.kill_at = trio.current_time() + grace
        return DEFERRED

    async def _fence(self, msg: Fence) -> None:
        if self.record["state"] in TERMINAL_STATES:
            return
        self.stopping = True
        self.stop_reason, self.stop_state = msg.reason, "failed"
        self.restart_at = math.inf
        if self.proc is None:  # waiting to restart: nothing runs
            await self._end("failed", msg.reason, publish=False)
            return
        signal_group(self.proc.pid, signal.SIGTERM)
        self.kill_at = min(self.kill_at, trio.current_time() + self.spec.profile.stop_grace)

    async def _exited(self, msg: _Exited) -> None:
        if msg.run != self.run:
            return
        self.proc = None
        self.kill_at = self.stall_at = math.inf
        code = msg.returncode
        self.record["exit_code"] = code
        if self.stopping:
            if self.stop_reason is None:
                await self._end("stopped", "stopped on request")
            else:
                await self._end(self.stop_state, self.stop_reason, publish=False)
        elif code == 0:
            await self._end("exited", None)
        else:
            why = f"exit code {code}" if code > 0 else f"killed by signal {-code}"
            await self._failed_run(code, why)

    # -- runs --

    def _environment(self, token: str) -> dict[str, str]:
        spec = self.spec
        # the server's own ORCHESTRA_* (its JWT secret among them) never reach an agent
        env = {k: v for k, v in os.environ.items() if not k.upper().startswith("ORCHESTRA_")}
        if spec.traceparent is not None:  # W3C: the child continues the spawning request's trace
            env["TRACEPARENT"] = spec.traceparent
        env.update((k, v) for k, v in spec.environment if not k.upper().startswith("ORCHESTRA_"))
        env.update({
            "ORCHESTRA_URL": self.hooks.url(),
            "ORCHESTRA_TOKEN": token,
            "ORCHESTRA_AGENT_ID": spec.agent_id,
            "ORCHESTRA_PROJECT_ID": spec.project_id,
            "ORCHESTRA_ISSUE_ID": spec.issue_id,
            "ORCHESTRA_TASK": spec.task or "",
            "ORCHESTRA_CONTEXT_FILE": str(spec.context_path),
        })
        return env

    async def _launch(self) -> None:
        spec = self.spec
        self.run += 1
        token = self.hooks.mint_token(spec)
        if self.run == 1 and not self.restarted:
            self._first_token = token
        try:
            proc = await trio.lowlevel.open_process(
                list(spec.profile.command), cwd=str(self.cwd), env=self._environment(token),
                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        except (OSError, ValueError) as exc:  # ValueError: a NUL or '=' in the environment
            why = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
            await self._failed_run(None, f"cannot start {spec.profile.command[0]!r}: {why}")
            return
        self.proc = proc
        ident = identity_of(proc.pid)
        now = self.wall_clock()
        first = self.record["started_at"] is None
        self.record.update(
            state="running", pid=proc.pid, exit_code=None, started_at=iso_time(now),
            ended_at=None, _identity=ident.__dict__ if ident is not None else None,
        )
        self.last_activity = now
        self.stall_at = trio.current_time() + spec.profile.stall_timeout
        self.helpers.start_soon(self._watch, proc, self.run)
        await self._changed()
        if first:
            await self._publish("agent_spawned", agent_type=spec.agent_type, issue_id=spec.issue_id,
                                pid=proc.pid)

    async def _watch(self, proc: trio.Process, run: int) -> None:
        """Copies the process's output into the log; once it exited, ends what is left of its
        group and reports the exit (after the output it wrote, at most 1 s later)."""
        drained = trio.Event()
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._pump, proc, drained)
            code = await proc.wait()
            signal_group(proc.pid, signal.SIGKILL)  # what it forked ends with it
            with trio.move_on_after(1):
                await drained.wait()
            nursery.cancel_scope.cancel()
        await self.ref.cast(_Exited(run, code))

    async def _pump(self, proc: trio.Process, drained: trio.Event) -> None:
        stream = proc.stdout
        assert stream is not None
        failed = False
        try:
            while data := await stream.receive_some(65536):
                try:
                    assert self.log is not None
                    self.log.write(data)
                except OSError as exc:  # a full disk loses log lines, not the agent
                    if not failed:
                        log.warning("agent %s: cannot write its log: %s", self.spec.agent_id, exc)
                    failed = True
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            pass
        finally:
            drained.set()
            await trio.aclose_forcefully(stream)

    async def _write_context(self, spec: AgentSpec) -> None:
        """The agent's context file, before its start. A context actor (or store) that is
        restarting or busy is waited for, with backoff, for up to ``prepare_seconds``: a crash
        of the server's parts must not fail an agent that has not started yet. Anything else,
        or still failing at the end, fails the agent (the caller's answer)."""
        deadline = trio.current_time() + self.prepare_seconds
        delay = 0.05
        while True:
            try:
                await self.hooks.write_context(spec, spec.context_path)
                return
            except (ActorError, Unavailable) as exc:
                if trio.current_time() + delay >= deadline:
                    raise
                log.info("agent %s: its context is not ready yet (%s); trying again", spec.agent_id, exc)
                await trio.sleep(delay)
                delay = min(delay * 2, 1.0)

    async def _failed_run(self, code: int | None, why: str) -> None:
        delay = self.policy.after_failure(trio.current_time(), self.rng())
        if delay is None:
            never = self.spec.profile.restart == "never"
            if never and code is not None:
                await self._end("exited", why)
            else:
                await self._end("failed", why if never else
                                f"{why}; gave up after {self.policy.max_restarts} restarts "
                                f"within {self.policy.period:g} s")
            return
        self.record.update(state="starting", restarts=self.record["restarts"] + 1,
                           reason=f"{why}; restarting in {delay:.2f} s",
                           _restart_times=list(self.policy.history))
        self.restart_at = trio.current_time() + delay
        await self._changed()

    async def _end(self, state: str, why: str | None, *, publish: bool = True) -> None:
        self.record.update(state=state, reason=why, ended_at=iso_time(self.wall_clock()))
        self.kill_at = self.restart_at = self.stall_at = math.inf
        if self.worktree and not self.spec.profile.keep_worktree:
            self.worktree = False
            with trio.move_on_after(30):
                await remove_worktree(self.spec.root, self.spec.worktree_path, self.spec.agent_id)
        await self._changed()
        record = public_record(self._snapshot())
        for call in self.stoppers:
            call.reply(record)
        self.stoppers.clear()
        if publish:
            event = "agent_failed" if state == "failed" else "agent_exited"
            await self._publish(event, exit_code=self.record["exit_code"], reason=why)

    # -- telling others --

    async def _changed(self) -> None:
        """Record the change durably, then tell the registry."""
        await self._save()
        try:
            await self.registry.cast(AgentChanged(self._snapshot()))
        except ActorError:
            pass  # the registry is restarting: it asks every agent for its record when it starts

    async def _save(self, answer: dict[str, Any] | None = None) -> None:
        spec = self.spec
        record = self._snapshot()
        row = AgentRow(
            spec.agent_id, spec.project_id, record["state"], spec.seq, iso_time(self.wall_clock()),
            orjson.dumps(record), spec.spawn_key, orjson.dumps(answer) if answer is not None else None,
        )
        try:
            await self.store.call(SaveAgent(row), timeout=self.store_timeout)
        except (StoreError, ActorError) as exc:
            # the record in memory stays right; the durable one catches up with the next change
            log.warning("agent %s: its record could not be stored: %s", spec.agent_id, exc)

    async def _load(self) -> AgentRow | None:
        try:
            return await self.store.call(  # type: ignore[no-any-return]
                GetAgent(self.spec.project_id, self.spec.agent_id), timeout=self.store_timeout
            )
        except (StoreError, ActorError) as exc:
            log.warning("agent %s: its record could not be read: %s", self.spec.agent_id, exc)
            return None

    async def _publish(self, event_type: str, **data: Any) -> None:
        spec = self.spec
        body = {"agent_id": spec.agent_id, "agent_type": spec.agent_type, "issue_id": spec.issue_id,
                "state": self.record["state"], "restarts": self.record["restarts"], **data}
        with trio.move_on_after(self.store_timeout):
            try:
                await self.hooks.publish(spec.project_id, event_type, body, spec.traceparent)
            except Exception as exc:  # any: an event that cannot be published is not the agent's fault
                log.warning("agent %s: %s could not be published: %r", spec.agent_id, event_type, exc)


async def _reap(pid: int) -> None:
    """Collect the exit status of a child whose waiter died with a crashed incarnation (it
    was SIGKILLed: it is gone within moments); gives up after a second."""
    with trio.move_on_after(1):
        while True:
            try:
                done, _ = os.waitpid(pid, os.WNOHANG)  # noqa: ASYNC222 - WNOHANG never blocks
            except ChildProcessError:
                return  # not our child (or already collected)
            if done:
                return
            await trio.sleep(0.01)
