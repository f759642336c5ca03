"""Supervisors in the manner of Erlang/OTP, on trio nurseries.

Children are declared as data (:class:`ChildSpec`); the strategy and the restart intensity
are configuration. A supervisor runs its children in its own nursery, restarts those that
crash according to its strategy, and gives up (stopping every child, then raising
:class:`SupervisorGaveUp` to its own supervisor) when they crash too often.

Every crash is counted, also of children that are not restarted (temporary ones) and of
children that fail to start, and every restart; a supervisor's totals include those of the
supervisors below it.
"""

from __future__ import annotations

import enum
import logging
import math
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import trio

from ._actor import Actor, ActorRef, run_actor
from ._errors import DuplicateChild, ExitedBeforeStarting, SupervisorGaveUp, SupervisorStopped

__all__ = ["ChildSpec", "Restart", "Strategy", "Supervisor", "Child"]

log = logging.getLogger("orchestra.actors.runtime")


class Restart(enum.Enum):
    #: Always restarted, whether it crashed or returned.
    PERMANENT = "permanent"
    #: Restarted only after a crash.
    TRANSIENT = "transient"
    #: Never restarted (a connection's session, say).
    TEMPORARY = "temporary"


class Strategy(enum.Enum):
    ONE_FOR_ONE = "one_for_one"
    ONE_FOR_ALL = "one_for_all"
    REST_FOR_ONE = "rest_for_one"


class Child(Protocol):
    async def run(self, *, task_status: trio.TaskStatus[Any] = ...) -> None: ...


@dataclass(frozen=True)
class ChildSpec:
    """What to run under a supervisor. ``start`` builds a fresh child for every (re)start."""

    id: str
    start: Callable[[], Child]
    restart: Restart = Restart.PERMANENT
    #: The address of an actor child, closed when the child is removed for good.
    ref: ActorRef | None = None

    @classmethod
    def actor(
        cls,
        id: str,
        ref: ActorRef,
        factory: Callable[[], Actor],
        restart: Restart = Restart.PERMANENT,
    ) -> ChildSpec:
        """A child that runs a fresh ``factory()`` actor behind the stable ``ref``."""
        return cls(id=id, start=lambda: _ActorChild(ref, factory()), restart=restart, ref=ref)


class _ActorChild:
    def __init__(self, ref: ActorRef, actor: Actor) -> None:
        self.ref = ref
        self.actor = actor

    async def run(self, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        await run_actor(self.ref, self.actor, task_status=task_status)


@dataclass
class _ChildState:
    spec: ChildSpec
    child: Child | None = None
    scope: trio.CancelScope = field(default_factory=lambda: trio.CancelScope(shield=True))
    done: trio.Event = field(default_factory=trio.Event)
    running: bool = False
    restarts: int = 0
    crashes: int = 0
    last_crash: str | None = None
    last_crash_at: float | None = None
    started_at: float | None = None


class _StartFailed(Exception):
    def __init__(self, error: BaseException) -> None:
        self.error = error


@dataclass(frozen=True)
class _Exit:
    state: _ChildState
    error: BaseException | None


@dataclass(frozen=True)
class _Command:
    kind: str  # "start" | "stop"
    spec: ChildSpec | None
    child_id: str | None
    reply: Any  # trio.MemorySendChannel


def _answer(cmd: _Command, outcome: Any) -> None:
    try:
        cmd.reply.send_nowait(outcome)
    except trio.BrokenResourceError:
        pass  # the caller gave up waiting (cancelled): the outcome stands, nobody to tell


class Supervisor:
    """Runs children; restarts them by ``strategy``; gives up after ``max_restarts`` in ``period``.

    Guarantees: children start in declaration order, each only after the previous reported
    started; they stop in reverse order; when :meth:`run` returns or raises, no child task is
    left running.
    """

    def __init__(
        self,
        name: str,
        children: list[ChildSpec] | None = None,
        *,
        strategy: Strategy = Strategy.ONE_FOR_ONE,
        max_restarts: int = 10,
        period: float = 60.0,
        stop_timeout: float = 5.0,
    ) -> None:
        self.name = name
        self.strategy = strategy
        self.max_restarts = max_restarts
        self.period = period
        self.stop_timeout = stop_timeout
        self._initial = list(children or [])
        self._children: dict[str, _ChildState] = {}
        self._restart_times: deque[float] = deque()
        self._nursery: trio.Nursery | None = None
        # Bounded by the number of children: each incarnation reports its exit once.
        self._inbox_send, self._inbox_recv = trio.open_memory_channel[Any](math.inf)
        self._inbox_closed = False
        self.running = False
        # Cumulative since this object was made, across its runs: of its own children, and
        # of the supervisors below it (each reports its events up the chain as they happen,
        # so nothing is lost when a child is forgotten or a sub-supervisor replaced).
        self._parent: Supervisor | None = None
        self._crashes = 0
        self._restarts = 0

    # -- introspection (read-only views of state only the supervisor task writes) --

    def lookup(self, child_id: str) -> ActorRef | None:
        """The ref of a running-or-restarting actor child, or None."""
        state = self._children.get(child_id)
        return state.spec.ref if state is not None else None

    def child_ids(self) -> list[str]:
        return list(self._children)

    def __len__(self) -> int:
        return len(self._children)

    def tree(self) -> dict[str, Any]:
        """Restart counts, last crash and state of every child, nested for sub-supervisors."""
        now = trio.current_time()
        kids = []
        for st in self._children.values():
            info: dict[str, Any] = {
                "id": st.spec.id,
                "restart": st.spec.restart.value,
                "state": "running" if st.running else "restarting",
                "restarts": st.restarts,
                "crashes": st.crashes,
                "last_crash": st.last_crash,
                "uptime_seconds": round(now - st.started_at, 3) if st.started_at else None,
            }
            if st.spec.ref is not None:
                info["mailbox"] = st.spec.ref.queued
            if isinstance(st.child, Supervisor):
                info["supervisor"] = st.child.tree()
            kids.append(info)
        return {
            "name": self.name,
            "strategy": self.strategy.value,
            "max_restarts": self.max_restarts,
            "period": self.period,
            "restarts": self._restarts,
            "crashes": self._crashes,
            "children": kids,
        }

    def total_restarts(self) -> int:
        """Restarts of every child since this supervisor was made, nested supervisors included."""
        return self._restarts

    def total_crashes(self) -> int:
        """Crashes (failed starts included) of every child since this supervisor was made,
        restarted or not (temporary children too), nested supervisors included."""
        return self._crashes

    def _count(self, crashes: int = 0, restarts: int = 0) -> None:
        sup: Supervisor | None = self
        while sup is not None:
            sup._crashes += crashes
            sup._restarts += restarts
            sup = sup._parent

    # -- dynamic children --

    async def start_child(self, spec: ChildSpec) -> None:
        """Start a child at run time.

        Raises :class:`DuplicateChild` if the id is taken, :class:`SupervisorStopped` if the
        supervisor is not running, or the child's own start error.
        """
        await self._command("start", spec=spec)

    async def stop_child(self, child_id: str) -> bool:
        """Stop a child and forget it. False if there was no such child."""
        return bool(await self._command("stop", child_id=child_id))

    async def _command(
        self, kind: str, spec: ChildSpec | None = None, child_id: str | None = None
    ) -> Any:
        send, recv = trio.open_memory_channel[Any](1)
        try:
            self._inbox_send.send_nowait(_Command(kind, spec, child_id, send))
        except trio.ClosedResourceError:
            raise SupervisorStopped(self.name) from None
        async with recv:
            outcome = await recv.receive()
        if isinstance(outcome, BaseException):
            raise outcome
        return outcome

    # -- running --

    async def run(self, *, task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
        gave_up: SupervisorGaveUp | None = None
        if self._inbox_closed:  # run again (restarted by its own supervisor): a fresh start
            self._inbox_send, self._inbox_recv = trio.open_memory_channel[Any](math.inf)
            self._inbox_closed = False
        self._restart_times.clear()
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            try:
                for spec in self._initial:
                    await self._start_with_restarts(self._add(spec))
                self.running = True
                task_status.started()
                await self._serve()
            except SupervisorGaveUp as exc:
                gave_up = exc  # re-raised bare below, not wrapped in the nursery's group
            finally:
                self.running = False
                self._inbox_send.close()
                self._inbox_closed = True
                with trio.CancelScope(shield=True):
                    await self._stop_all(forget=True)
                    self._fail_commands()
        if gave_up is not None:
            raise gave_up

    def _add(self, spec: ChildSpec) -> _ChildState:
        if spec.id in self._children:
            raise DuplicateChild(self.name, spec.id)
        state = _ChildState(spec)
        self._children[spec.id] = state
        return state

    async def _serve(self) -> None:
        async for item in self._inbox_recv:
            if isinstance(item, _Exit):
                await self._on_exit(item)
            else:
                await self._on_command(item)

    async def _on_command(self, cmd: _Command) -> None:
        try:
            if cmd.kind == "start":
                assert cmd.spec is not None
                state = self._add(cmd.spec)
                try:
                    await self._start(state)
                except _StartFailed as failed:
                    self._note_crash(state, failed.error)
                    self._forget(state, "failed to start")
                    raise failed.error from None
                outcome: Any = None
            else:
                found = self._children.get(cmd.child_id or "")
                if found is not None:
                    await self._stop(found)
                    self._forget(found, "stopped")
                outcome = found is not None
        except Exception as exc:
            outcome = exc
        _answer(cmd, outcome)

    def _fail_commands(self) -> None:
        while True:
            try:
                item = self._inbox_recv.receive_nowait()
            except (trio.WouldBlock, trio.EndOfChannel):
                return
            if isinstance(item, _Command):
                _answer(item, SupervisorStopped(self.name))

    async def _on_exit(self, exit: _Exit) -> None:
        state = exit.state
        if self._children.get(state.spec.id) is not state:
            return  # a child already stopped and forgotten
        crashed = exit.error is not None
        if exit.error is not None:
            self._note_crash(state, exit.error)
            log.warning(
                "%s: child %s crashed (%s)", self.name, state.spec.id, state.last_crash,
                exc_info=exit.error,
            )
        restart = state.spec.restart
        if restart is Restart.TEMPORARY or (restart is Restart.TRANSIENT and not crashed):
            self._forget(state, "exited")
            return
        self._note_restart(state)
        ordered = list(self._children.values())
        if self.strategy is Strategy.ONE_FOR_ONE:
            group = [state]
        elif self.strategy is Strategy.ONE_FOR_ALL:
            group = ordered
        else:
            group = ordered[ordered.index(state) :]
        for other in reversed(group):
            if other is not state:
                await self._stop(other)
        for member in group:
            if member is not state:
                member.restarts += 1
                self._count(restarts=1)
            await self._start_with_restarts(member)

    def _note_crash(self, state: _ChildState, error: BaseException) -> None:
        state.last_crash = f"{type(error).__name__}: {error}"
        state.last_crash_at = trio.current_time()
        state.crashes += 1
        self._count(crashes=1)

    def _note_restart(self, state: _ChildState) -> None:
        now = trio.current_time()
        self._restart_times.append(now)
        while self._restart_times and self._restart_times[0] < now - self.period:
            self._restart_times.popleft()
        if len(self._restart_times) > self.max_restarts:
            raise SupervisorGaveUp(self.name, state.spec.id, state.last_crash or "exited")
        state.restarts += 1
        self._count(restarts=1)

    async def _start_with_restarts(self, state: _ChildState) -> None:
        while True:
            try:
                await self._start(state)
                return
            except _StartFailed as failed:
                self._note_crash(state, failed.error)
                self._note_restart(state)

    async def _start(self, state: _ChildState) -> None:
        assert self._nursery is not None
        # Shielded from the nursery's cancellation: only this supervisor stops its children,
        # one by one in reverse start order (see ``run``'s ``finally``).
        state.scope = trio.CancelScope(shield=True)
        state.done = trio.Event()
        if state.spec.ref is not None:
            state.spec.ref.reopen()
        state.child = state.spec.start()
        if isinstance(state.child, Supervisor):
            state.child._parent = self
        # Shielded: were this task cancelled while the child starts (a restart under way when
        # the tree is stopped), trio's start() would not move the child into the nursery when it
        # calls started(); the child, shielded in its own scope, would serve on and start()
        # would wait for it forever. Started whole, it is stopped with the others.
        with trio.CancelScope(shield=True):
            error = await self._nursery.start(self._child_task, state)
        if error is not None:
            raise _StartFailed(error)
        state.running = True
        state.started_at = trio.current_time()

    async def _child_task(
        self, state: _ChildState, *, task_status: trio.TaskStatus[BaseException | None]
    ) -> None:
        started = False

        class _Status:
            def started(self, value: Any = None) -> None:
                nonlocal started
                started = True
                task_status.started(None)

        error: BaseException | None = None
        try:
            with state.scope:
                try:
                    assert state.child is not None
                    await state.child.run(task_status=_Status())
                except Exception as exc:
                    error = exc
        finally:
            state.running = False
            state.done.set()
        if not started:
            task_status.started(error if error is not None else ExitedBeforeStarting(state.spec.id))
            return
        if state.scope.cancelled_caught:
            return  # stopped by us: not an exit to act on
        try:
            self._inbox_send.send_nowait(_Exit(state, error))
        except trio.ClosedResourceError:
            pass  # the supervisor is stopping: it stops and forgets every child anyway

    async def _stop(self, state: _ChildState) -> None:
        state.scope.cancel()
        with trio.move_on_after(self.stop_timeout):
            await state.done.wait()

    async def _stop_all(self, forget: bool) -> None:
        for state in reversed(list(self._children.values())):
            await self._stop(state)
            if forget:
                self._forget(state, "supervisor stopped")

    def _forget(self, state: _ChildState, why: str) -> None:
        self._children.pop(state.spec.id, None)
        if state.spec.ref is not None:
            state.spec.ref.close(why)
