"""One long-lived thread that runs blocking jobs in order, for an actor that owns a resource
(a database connection) that must be used from one thread."""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from typing import Any, TypeVar

import trio

__all__ = ["WorkerThread"]

T = TypeVar("T")


class _Stop:
    __slots__ = ("then",)

    def __init__(self, then: Callable[[], object] | None) -> None:
        self.then = then


class _Post:
    __slots__ = ("fn",)

    def __init__(self, fn: Callable[[], object]) -> None:
        self.fn = fn


class WorkerThread:
    """Runs ``fn()`` calls one at a time on a dedicated thread.

    Cheaper per call than a general thread pool: a queue put to hand the job over and one
    wakeup of the trio loop to hand the result back. A job cannot be cancelled once handed
    over (it runs to completion; the caller waits for it), as with
    ``trio.to_thread.run_sync(..., abandon_on_cancel=False)``.
    """

    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._stopped = False
        self._thread = threading.Thread(target=self._loop, name=name, daemon=True)
        self._thread.start()

    def _loop(self) -> None:
        while True:
            job = self._jobs.get()
            if isinstance(job, _Post):
                try:
                    job.fn()
                except Exception:  # noqa: S110 - a posted job answers its callers itself
                    pass
                continue
            if isinstance(job, _Stop):
                if job.then is not None:
                    try:
                        job.then()
                    except Exception:  # noqa: S110 - the last act of a thread nobody waits on
                        pass
                return
            fn, token, task, box = job
            try:
                box.append((True, fn()))
            except BaseException as exc:  # handed back to the caller, never lost here
                box.append((False, exc))
            token.run_sync_soon(trio.lowlevel.reschedule, task)

    async def run(self, fn: Callable[[], T]) -> T:
        await trio.lowlevel.checkpoint_if_cancelled()
        if self._stopped or not self._thread.is_alive():
            # a job handed to a thread that has ended would never be answered, and its caller
            # cannot be cancelled: refuse it instead
            raise RuntimeError(f"worker thread {self._thread.name} has stopped")
        box: list[tuple[bool, Any]] = []
        self._jobs.put((fn, trio.lowlevel.current_trio_token(), trio.lowlevel.current_task(), box))

        def abort(_: Any) -> trio.lowlevel.Abort:
            return trio.lowlevel.Abort.FAILED  # the job runs to the end; wait for it

        await trio.lowlevel.wait_task_rescheduled(abort)
        ok, value = box[0]
        if not ok:
            raise value
        return value  # type: ignore[no-any-return]

    def post(self, fn: Callable[[], object]) -> None:
        """Hand ``fn`` to the thread without waiting for it: it runs in order with the other
        jobs, and answers whoever waits for it itself (what it raises is dropped). Refused
        (RuntimeError) once the thread is stopped."""
        if self._stopped or not self._thread.is_alive():
            raise RuntimeError(f"worker thread {self._thread.name} has stopped")
        self._jobs.put(_Post(fn))

    def stop(self, then: Callable[[], object] | None = None) -> None:
        """Let the thread end after the jobs already handed over; later jobs are refused.
        ``then``: run on the thread last (nobody waits for it; what it raises is dropped)."""
        self._stopped = True
        self._jobs.put(_Stop(then))
