"""Actors: a task that owns its state and serves a bounded mailbox.

An :class:`ActorRef` is the stable address of an actor. It outlives restarts: a supervisor
restarts a crashed actor with fresh state behind the same ref, so holders of the ref never
need to look it up again.
"""

from __future__ import annotations

import math
from typing import Any

import trio

from ._errors import (
    ActorCrashed,
    ActorError,
    ActorUnavailable,
    CallTimeout,
    InjectedCrash,
    ReplyError,
)

__all__ = ["DEFERRED", "Actor", "ActorRef", "Call", "run_actor"]


class _Deferred:
    def __repr__(self) -> str:
        return "DEFERRED"


#: Returned by :meth:`Actor.handle` when the reply is sent later through :meth:`Call.reply`.
DEFERRED: Any = _Deferred()


class Call:
    """One request/reply exchange. Resolved exactly once; later resolutions are ignored."""

    __slots__ = ("msg", "abandoned", "_done", "_value", "_error", "_owner")

    def __init__(self, msg: Any) -> None:
        self.msg = msg
        #: Set when the caller stopped waiting (timeout or cancellation).
        self.abandoned = False
        self._done = trio.Event()
        self._value: Any = None
        self._error: BaseException | None = None
        self._owner: set[Call] | None = None

    @property
    def resolved(self) -> bool:
        return self._done.is_set()

    def reply(self, value: Any) -> None:
        if self._done.is_set():
            return
        self._value = value
        self._finish()

    def fail(self, error: BaseException) -> None:
        if self._done.is_set():
            return
        self._error = error
        self._finish()

    def result(self) -> Any:
        """The reply's value, or its error raised (only once resolved)."""
        if self._error is not None:
            raise self._error
        return self._value

    async def answer(self) -> Any:
        """Wait for the reply and give :meth:`result`; a caller that stops waiting (cancelled)
        marks the call abandoned."""
        try:
            await self._done.wait()
        except BaseException:
            self.abandoned = True
            raise
        return self.result()

    def _finish(self) -> None:
        if self._owner is not None:
            self._owner.discard(self)
            self._owner = None
        self._done.set()


class _Fault:
    __slots__ = ("kind", "ms")

    def __init__(self, kind: str, ms: float) -> None:
        self.kind = kind
        self.ms = ms


class ActorRef:
    """The address of an actor: send it calls and casts.

    The mailbox is bounded; ``call`` and ``cast`` wait while it is full (backpressure),
    ``try_cast`` refuses instead.
    """

    def __init__(self, name: str, mailbox_size: int = 1024) -> None:
        self.name = name
        self.mailbox_size = mailbox_size
        self._send, self._recv = trio.open_memory_channel[Any](mailbox_size)
        self._closed = False
        #: True while an incarnation of the actor is serving the mailbox.
        self.alive = False
        #: Counts starts; a restart makes a new incarnation.
        self.incarnation = 0
        #: A read-only view the actor may publish for readers that must not queue behind its
        #: mailbox (in the manner of an Erlang ETS table): only the actor writes it, in its
        #: own task; readers read it between the actor's steps (trio tasks do not preempt).
        #: Reset to None whenever an incarnation ends.
        self.view: Any = None
        self._down: trio.Event | None = trio.Event()
        #: crash points armed by fault injection (names the actor's code passes to
        #: :meth:`Actor.fault_point`); kept on the ref, so they outlive a restart until fired
        self.armed_points: set[str] = set()

    def __repr__(self) -> str:
        return f"<ActorRef {self.name}>"

    def monitor(self) -> trio.Event:
        """An event set when the current incarnation stops or crashes (an Erlang monitor)."""
        assert self._down is not None
        return self._down

    @property
    def queued(self) -> int:
        """Messages waiting in the mailbox."""
        return self._send.statistics().current_buffer_used

    async def call(self, msg: Any, timeout: float | None = None) -> Any:
        """Send ``msg`` and wait for the reply.

        Raises the actor's :class:`ReplyError` if it answered with one, :class:`ActorCrashed`
        if it died first, :class:`ActorUnavailable` if it is stopped, :class:`CallTimeout`
        after ``timeout`` seconds (which covers waiting for mailbox space too).
        """
        call = Call(msg)
        try:
            if timeout is None:
                await self._deliver(call)
            else:
                # a bare scope: trio.fail_after is a generator-based context manager, and this
                # is every request's path
                with trio.CancelScope(deadline=trio.current_time() + timeout) as scope:
                    await self._deliver(call)
                if scope.cancelled_caught:
                    call.abandoned = True
                    raise CallTimeout(self.name, timeout)
        except BaseException:
            call.abandoned = True
            raise
        return call.result()

    async def _deliver(self, call: Call) -> None:
        try:
            # with room in the mailbox: put without ``send``'s trip through the scheduler (the
            # wait for the reply is one anyway); a cancelled caller still sends nothing
            await trio.lowlevel.checkpoint_if_cancelled()
            try:
                self._send.send_nowait(call)
            except trio.WouldBlock:
                await self._send.send(call)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise ActorUnavailable(self.name) from None
        await call._done.wait()

    async def cast(self, msg: Any) -> None:
        """Put ``msg`` in the mailbox, waiting for space; no reply."""
        try:
            await self._send.send(msg)
        except (trio.ClosedResourceError, trio.BrokenResourceError):
            raise ActorUnavailable(self.name) from None

    def try_cast(self, msg: Any) -> bool:
        """Put ``msg`` in the mailbox if there is room; never waits. False if full or closed."""
        try:
            self._send.send_nowait(msg)
        except (trio.WouldBlock, trio.ClosedResourceError, trio.BrokenResourceError):
            return False
        return True

    def inject_fault(self, kind: str, ms: float = 0.0) -> bool:
        """Ask the actor to crash (``"crash"``) or stall for ``ms`` (``"delay"``)."""
        if kind not in ("crash", "delay"):
            raise ValueError(f"unknown fault kind {kind!r}")
        return self.try_cast(_Fault(kind, ms))

    def arm_crash(self, point: str) -> None:
        """Crash the actor the next time its code reaches ``point`` (see :meth:`Actor.fault_point`)."""
        self.armed_points.add(point)

    def reopen(self) -> None:
        """Give a closed ref a fresh, empty mailbox (when its actor is started again)."""
        if self._closed:
            self._send, self._recv = trio.open_memory_channel[Any](self.mailbox_size)
            self._closed = False

    def close(self, why: str = "stopped") -> None:
        """Stop accepting messages and fail every queued call. Idempotent."""
        if self._closed:
            return
        self._closed = True
        self._send.close()
        _fail_queued(self, ActorUnavailable(self.name, why))


def _fail_queued(ref: ActorRef, error: ActorError) -> None:
    while True:
        try:
            item = ref._recv.receive_nowait()
        except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
            return
        if isinstance(item, Call):
            item.fail(error)


class Actor:
    """Base class of actors. Subclasses override :meth:`handle` and optionally the hooks.

    Everything on ``self`` is owned by the actor's single task: it is read and written only
    from ``on_start``, ``handle``, ``on_timeout`` and ``on_stop``, one message at a time.
    """

    ref: ActorRef
    #: Helper tasks of this incarnation: cancelled when it ends; one that raises crashes it.
    helpers: trio.Nursery
    _deferred: set[Call]
    _current: Call | None
    _batch: list[Call]

    #: When > 1, the runtime hands every message already waiting (up to this many) to
    #: :meth:`handle_batch` at once: the way to group work such as commits.
    max_batch: int = 1

    async def handle_batch(self, calls: list[Call]) -> None:
        """Handle several messages at once (only when ``max_batch > 1``).

        Casts arrive wrapped in a :class:`Call` nobody waits on. Reply to each call with
        :meth:`Call.reply` / :meth:`Call.fail`, or :meth:`defer_call` it; calls left
        unresolved are answered with None. A :class:`ReplyError` raised out of this method
        answers every call still unresolved (not the deferred ones) and the actor serves on;
        any other exception crashes it, failing every call of the batch with
        :class:`ActorCrashed`.
        """
        raise NotImplementedError

    def fault_point(self, point: str) -> None:
        """A named place where fault injection may crash this actor: raises
        :class:`InjectedCrash` once if :meth:`ActorRef.arm_crash` armed ``point``."""
        if point in self.ref.armed_points:
            self.ref.armed_points.discard(point)
            raise InjectedCrash(f"fault injected into {self.ref.name} at {point}")

    def take_queued(self) -> list[Call]:
        """Take every message still waiting in the mailbox, casts as calls nobody waits on
        (faults are dropped). For an orderly stop that must finish what was queued."""
        items = _take_ready(self.ref._recv, [], self.ref.mailbox_size)
        return [_as_call(item) for item in items if not isinstance(item, _Fault)]

    def defer_call(self, call: Call) -> Call:
        """Like :meth:`defer`, for a call taken from a batch."""
        call._owner = self._deferred
        self._deferred.add(call)
        return call

    async def on_start(self) -> None:
        """Build the initial state. The actor is reported started only after this returns."""

    async def handle(self, msg: Any) -> Any:
        """Handle one message; the return value is the reply to a call (ignored for casts)."""
        raise NotImplementedError

    def next_deadline(self) -> float:
        """The trio time at which :meth:`on_timeout` should run, or ``inf``."""
        return math.inf

    async def on_timeout(self) -> None:
        """Called when :meth:`next_deadline` passes with no message."""

    async def on_stop(self) -> None:
        """Called (shielded) on an orderly stop, not on a crash."""

    def on_exit(self) -> None:
        """Called on every exit of this incarnation, crash or stop, after ``on_stop``: release
        what must not outlive it (threads, files). Must not block."""

    def defer(self) -> Call:
        """Take the call being handled, to reply to it later with :meth:`Call.reply`.

        Deferred calls still pending when the actor crashes are failed by the runtime.
        """
        call = self._current
        if call is None:
            raise RuntimeError("defer() outside the handling of a call")
        call._owner = self._deferred
        self._deferred.add(call)
        return call


async def run_actor(
    ref: ActorRef,
    actor: Actor,
    *,
    task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve ``ref``'s mailbox with ``actor`` until cancelled or until it crashes.

    On a crash every call in flight, deferred or queued is failed with :class:`ActorCrashed`
    at once and the exception propagates (to the supervisor, which may restart it).
    """
    actor.ref = ref
    actor._deferred = set()
    actor._current = None
    actor._batch = []
    try:
        async with trio.open_nursery() as helpers:
            actor.helpers = helpers
            await _serve(ref, actor, task_status)
    except BaseExceptionGroup as group:
        # a helper's failure (or the loop's own) surfaces as itself, not wrapped
        raise group.exceptions[0] if len(group.exceptions) == 1 else group from None
    finally:
        ref.alive = False
        ref.view = None
        if ref._down is not None:
            ref._down.set()
        actor.on_exit()


async def _serve(ref: ActorRef, actor: Actor, task_status: trio.TaskStatus[None]) -> None:
    recv = ref._recv
    await actor.on_start()
    ref.incarnation += 1
    ref._down = trio.Event()
    ref.alive = True
    task_status.started()
    try:
        while True:
            deadline = actor.next_deadline()
            try:
                if deadline == math.inf:
                    item = await recv.receive()
                else:
                    with trio.move_on_at(deadline) as timer:
                        item = await recv.receive()
                    if timer.cancelled_caught:
                        await actor.on_timeout()
                        continue
            except trio.EndOfChannel:
                actor.helpers.cancel_scope.cancel()
                return  # the ref was closed: an orderly, final stop
            if actor.max_batch > 1:
                await _serve_batch(actor, recv, item)
                continue
            if isinstance(item, Call):
                actor._current = item
                try:
                    value = await actor.handle(item.msg)
                except ReplyError as exc:
                    item.fail(exc)
                else:
                    if value is not DEFERRED:
                        item.reply(value)
                actor._current = None
            elif isinstance(item, _Fault):
                if item.kind == "crash":
                    raise InjectedCrash(f"fault injected into {ref.name}")
                await trio.sleep(item.ms / 1000)
            else:
                try:
                    await actor.handle(item)
                except ReplyError:
                    pass  # a cast has nobody to answer
    except trio.Cancelled:
        ref.alive = False
        error: ActorError = ActorUnavailable(ref.name, "stopping")
        with trio.CancelScope(shield=True):
            try:
                await actor.on_stop()
            finally:
                _fail_pending(actor, error)
        raise
    except BaseException as exc:
        ref.alive = False
        _fail_pending(actor, ActorCrashed(ref.name, f"{type(exc).__name__}: {exc}"))
        _fail_queued(ref, ActorCrashed(ref.name, f"{type(exc).__name__}: {exc}"))
        raise


def _take_ready(recv: trio.MemoryReceiveChannel[Any], items: list[Any], limit: int) -> list[Any]:
    """Add the messages already waiting (up to ``limit`` in all) to ``items``; never waits."""
    while len(items) < limit:
        try:
            items.append(recv.receive_nowait())
        except (trio.WouldBlock, trio.EndOfChannel, trio.ClosedResourceError):
            break
    return items


def _as_call(item: Any) -> Call:
    """Batches hold calls only: a cast becomes a call nobody waits on."""
    if isinstance(item, Call):
        return item
    call = Call(item)
    call.abandoned = True
    return call


async def _serve_batch(actor: Actor, recv: trio.MemoryReceiveChannel[Any], first: Any) -> None:
    items = _take_ready(recv, [first], actor.max_batch)
    faults = [item for item in items if isinstance(item, _Fault)]
    # Every drained item is tracked before anything can raise, so a crash fails them all.
    batch = actor._batch = [_as_call(item) for item in items if not isinstance(item, _Fault)]
    for fault in faults:
        if fault.kind == "crash":
            raise InjectedCrash(f"fault injected into {actor.ref.name}")
        await trio.sleep(fault.ms / 1000)
    if batch:
        try:
            await actor.handle_batch(batch)
        except ReplyError as exc:
            # An answer, not a crash: it answers every call of the batch not yet answered
            # (deferred calls stay deferred) and the actor serves on.
            for call in batch:
                if call._owner is None:
                    call.fail(exc)
    for call in batch:
        if call._owner is None:
            call.reply(None)
    actor._batch = []


def _fail_pending(actor: Actor, error: ActorError) -> None:
    if actor._current is not None:
        actor._current.fail(error)
        actor._current = None
    for call in actor._batch:
        call.fail(error)
    actor._batch = []
    for call in list(actor._deferred):
        call.fail(error)
    actor._deferred.clear()
