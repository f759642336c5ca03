"""The actor runtime: calls, casts, crashes, restarts, escalation, backpressure, shutdown.

Time is driven by MockClock(autojump_threshold=0): no test sleeps for real.
"""

from __future__ import annotations

import pytest
import trio
import trio.lowlevel
import trio.testing
from orchestra.actors.runtime import (
    DEFERRED,
    Actor,
    ActorCrashed,
    ActorRef,
    ActorUnavailable,
    CallTimeout,
    ChildSpec,
    DuplicateChild,
    Outbox,
    ReplyError,
    Restart,
    Strategy,
    Supervisor,
    SupervisorError,
    SupervisorGaveUp,
    SupervisorStopped,
)


class Boom(Exception):
    pass


class NotThere(ReplyError):
    pass


class Counter(Actor):
    """Counts; crashes on "boom"; answers NotThere on "missing"; parks on "park"."""

    instances = 0

    def __init__(self, log: list[str] | None = None, name: str = "counter") -> None:
        self.log = log if log is not None else []
        self.name = name
        self.parked = []

    async def on_start(self) -> None:
        self.count = 0
        self.log.append(f"start {self.name}")

    async def on_stop(self) -> None:
        self.log.append(f"stop {self.name}")

    async def handle(self, msg):
        if msg == "incr":
            self.count += 1
            return self.count
        if msg == "boom":
            raise Boom("asked to crash")
        if msg == "missing":
            raise NotThere("no such thing")
        if msg == "park":
            self.parked.append(self.defer())
            return DEFERRED
        if msg == "slow":
            await trio.sleep(10)
            return "slow done"
        if msg == "release":
            for call in self.parked:
                call.reply("released")
            return len(self.parked)
        raise AssertionError(msg)


def counter_spec(id="counter", log=None, restart=Restart.PERMANENT, mailbox=16):
    ref = ActorRef(id, mailbox_size=mailbox)
    return ref, ChildSpec.actor(id, ref, lambda: Counter(log, id), restart=restart)


async def start_tree(nursery, sup):
    await nursery.start(sup.run)
    return sup


async def test_call_reply_and_reply_error(autojump_clock):
    ref, spec = counter_spec()
    async with trio.open_nursery() as nursery:
        await start_tree(nursery, Supervisor("root", [spec]))
        assert await ref.call("incr") == 1
        assert await ref.call("incr") == 2
        with pytest.raises(NotThere):
            await ref.call("missing")
        # a reply error does not crash: the state survives
        assert await ref.call("incr") == 3
        nursery.cancel_scope.cancel()


async def test_crash_restarts_with_fresh_state_and_is_visible(autojump_clock):
    ref, spec = counter_spec()
    sup = Supervisor("root", [spec])
    async with trio.open_nursery() as nursery:
        await start_tree(nursery, sup)
        await ref.call("incr")
        await ref.call("incr")
        with pytest.raises(ActorCrashed) as info:
            await ref.call("boom")
        assert "Boom" in info.value.reason
        await trio.testing.wait_all_tasks_blocked()
        assert await ref.call("incr") == 1  # fresh state
        child = sup.tree()["children"][0]
        assert child["restarts"] == 1
        assert child["last_crash"] == "Boom: asked to crash"
        assert sup.total_restarts() == 1
        nursery.cancel_scope.cancel()


async def test_queued_deferred_and_in_flight_calls_fail_at_the_crash(autojump_clock):
    ref, spec = counter_spec()
    outcomes = []

    async def caller(msg):
        try:
            outcomes.append((msg, await ref.call(msg), trio.current_time()))
        except ActorCrashed:
            outcomes.append((msg, "crashed", trio.current_time()))

    async with trio.open_nursery() as nursery:
        await start_tree(nursery, Supervisor("root", [spec]))
        for msg in ["park", "slow", "boom", "incr", "incr"]:
            nursery.start_soon(caller, msg)  # park is deferred, slow in flight, the rest queued
            await trio.testing.wait_all_tasks_blocked()
        await trio.sleep(20)
        assert await ref.call("incr") == 1  # restarted, fresh state
        nursery.cancel_scope.cancel()
    assert outcomes[0] == ("slow", "slow done", 10)
    # everything pending at the crash (t=10) failed right then, not after a timeout
    assert sorted(outcomes[1:]) == [
        ("boom", "crashed", 10),
        ("incr", "crashed", 10),
        ("incr", "crashed", 10),
        ("park", "crashed", 10),
    ]


async def test_too_many_crashes_escalate(autojump_clock):
    ref, spec = counter_spec()
    inner = Supervisor("inner", [spec], max_restarts=3, period=10)
    with pytest.RaisesGroup(SupervisorGaveUp) as info:
        async with trio.open_nursery() as nursery:
            await nursery.start(inner.run)
            for _ in range(4):
                with pytest.raises(ActorCrashed):
                    await ref.call("boom")
                await trio.testing.wait_all_tasks_blocked()
    assert info.value.exceptions[0].child == "counter"
    # the supervisor that gave up closed its children's mailboxes
    with pytest.raises(ActorUnavailable):
        await ref.call("incr")


async def test_crashes_spread_over_time_do_not_escalate(autojump_clock):
    ref, spec = counter_spec()
    async with trio.open_nursery() as nursery:
        await nursery.start(Supervisor("root", [spec], max_restarts=3, period=10).run)
        for _ in range(10):
            with pytest.raises(ActorCrashed):
                await ref.call("boom")
            await trio.sleep(4)
        assert await ref.call("incr") == 1
        nursery.cancel_scope.cancel()


async def test_escalation_is_seen_by_the_parent_which_restarts_the_subtree(autojump_clock):
    ref, spec = counter_spec()
    parent = Supervisor(
        "parent",
        [ChildSpec("inner", lambda: Supervisor("inner", [spec], max_restarts=1, period=10))],
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(parent.run)
        for _ in range(2):
            with pytest.raises(ActorCrashed):
                await ref.call("boom")
            await trio.testing.wait_all_tasks_blocked()
        # the inner supervisor gave up; the parent restarted it with its child
        assert await ref.call("incr") == 1
        tree = parent.tree()["children"][0]
        assert tree["restarts"] == 1
        assert "SupervisorGaveUp" in tree["last_crash"]
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize(
    "strategy, restarted",
    [
        (Strategy.ONE_FOR_ONE, ["b"]),
        (Strategy.ONE_FOR_ALL, ["a", "b", "c"]),
        (Strategy.REST_FOR_ONE, ["b", "c"]),
    ],
)
async def test_strategies(autojump_clock, strategy, restarted):
    log: list[str] = []
    refs = {}
    specs = []
    for name in "abc":
        ref, spec = counter_spec(name, log)
        refs[name] = ref
        specs.append(spec)
    async with trio.open_nursery() as nursery:
        await nursery.start(Supervisor("root", specs, strategy=strategy).run)
        for ref in refs.values():
            await ref.call("incr")
        log.clear()
        with pytest.raises(ActorCrashed):
            await refs["b"].call("boom")
        await trio.testing.wait_all_tasks_blocked()
        assert sorted(e.split()[1] for e in log if e.startswith("start")) == restarted
        # stops of the others happen in reverse order
        stops = [e.split()[1] for e in log if e.startswith("stop")]
        assert stops == sorted(stops, reverse=True)
        for name, ref in refs.items():
            assert await ref.call("incr") == (1 if name in restarted else 2)
        nursery.cancel_scope.cancel()


async def test_full_mailbox_applies_backpressure(autojump_clock):
    ref, spec = counter_spec(mailbox=2)
    async with trio.open_nursery() as nursery:
        await nursery.start(Supervisor("root", [spec]).run)
        nursery.start_soon(ref.call, "slow")  # occupies the actor for 10 s
        await trio.testing.wait_all_tasks_blocked()
        assert ref.try_cast("incr") and ref.try_cast("incr")
        assert not ref.try_cast("incr")  # full: refused, not queued
        t0 = trio.current_time()
        with pytest.raises(CallTimeout):
            await ref.call("incr", timeout=1)
        assert trio.current_time() - t0 == pytest.approx(1)
        # once the actor drains its mailbox, calls go through again
        assert await ref.call("incr", timeout=20) == 3
        nursery.cancel_scope.cancel()


async def test_temporary_children_are_not_restarted_and_dynamic_children(autojump_clock):
    sup = Supervisor("sessions")
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        ref, spec = counter_spec("s1", restart=Restart.TEMPORARY)
        await sup.start_child(spec)
        assert sup.lookup("s1") is ref
        with pytest.raises(DuplicateChild):
            await sup.start_child(spec)
        with pytest.raises(ActorCrashed):
            await ref.call("boom")
        await trio.testing.wait_all_tasks_blocked()
        assert sup.lookup("s1") is None
        with pytest.raises(ActorUnavailable):
            await ref.call("incr")
        ref2, spec2 = counter_spec("s2")
        await sup.start_child(spec2)
        assert await ref2.call("incr") == 1
        assert await sup.stop_child("s2") is True
        assert await sup.stop_child("s2") is False
        with pytest.raises(ActorUnavailable):
            await ref2.call("incr")
        nursery.cancel_scope.cancel()


async def test_a_stopped_tree_leaves_no_task_behind(autojump_clock):
    log: list[str] = []
    specs = [counter_spec(n, log)[1] for n in "abc"]
    sub = ChildSpec("sub", lambda: Supervisor("sub", [counter_spec("d", log)[1]]))
    root = Supervisor("root", [*specs, sub])
    before = len(trio.lowlevel.current_root_task().child_nurseries[0].child_tasks)
    async with trio.open_nursery() as nursery:
        await nursery.start(root.run)
        assert len(root) == 4
        nursery.cancel_scope.cancel()
    assert [e for e in log if e.startswith("stop")] == ["stop d", "stop c", "stop b", "stop a"]
    assert len(root) == 0
    after = len(trio.lowlevel.current_root_task().child_nurseries[0].child_tasks)
    assert after == before


async def test_a_child_that_fails_to_start_is_retried_then_escalates(autojump_clock):
    attempts = []

    class BadStart(Actor):
        async def on_start(self):
            attempts.append(1)
            raise Boom("cannot open")

    ref = ActorRef("bad")
    sup = Supervisor("root", [ChildSpec.actor("bad", ref, BadStart)], max_restarts=2)
    with pytest.raises(SupervisorGaveUp):
        await sup.run()
    assert len(attempts) == 3


def test_outbox_bounds_by_count_and_bytes():
    box = Outbox(max_messages=3, max_bytes=10)
    assert box.offer(b"1234") and box.offer(b"1234")
    assert not box.offer(b"123")  # 11 bytes > 10
    assert box.overflowed
    assert not box.offer(b"1")  # stays refused once overflowed
    box = Outbox(max_messages=2, max_bytes=100)
    assert box.offer(b"a") and box.offer(b"b") and not box.offer(b"c")


async def test_outbox_delivers_in_order_and_ends(autojump_clock):
    box = Outbox()
    got = []

    async def consumer():
        try:
            while True:
                got.extend(f for f, _ in await box.get_batch())
        except trio.EndOfChannel:
            got.append("end")

    async with trio.open_nursery() as nursery:
        nursery.start_soon(consumer)
        for i in range(5):
            box.offer(str(i).encode())
            await trio.lowlevel.checkpoint()
        await trio.testing.wait_all_tasks_blocked()
        box.close()
    assert got == [b"0", b"1", b"2", b"3", b"4", "end"]


async def test_a_crash_fault_inside_a_drained_batch_fails_every_call_of_it(autojump_clock):
    gate = trio.Event()

    class Batcher(Actor):
        max_batch = 100

        async def handle_batch(self, calls):
            if any(c.msg == "hold" for c in calls):
                await gate.wait()
            for call in calls:
                call.reply("done")

    ref = ActorRef("batcher")
    outcomes = {}

    async def caller(msg):
        try:
            outcomes[msg] = await ref.call(msg)
        except ActorCrashed:
            outcomes[msg] = "crashed"

    async with trio.open_nursery() as nursery:
        await nursery.start(Supervisor("root", [ChildSpec.actor("batcher", ref, Batcher)]).run)
        nursery.start_soon(caller, "hold")
        await trio.testing.wait_all_tasks_blocked()
        for msg in ("a", "b"):
            nursery.start_soon(caller, msg)
            await trio.testing.wait_all_tasks_blocked()
        assert ref.inject_fault("crash")
        for msg in ("c", "d"):
            nursery.start_soon(caller, msg)
            await trio.testing.wait_all_tasks_blocked()
        gate.set()  # the next drain takes a, b, the fault, c and d at once
        await trio.testing.wait_all_tasks_blocked()
        assert await ref.call("after") == "done"  # restarted
        nursery.cancel_scope.cancel()
    assert outcomes == {"hold": "done", "a": "crashed", "b": "crashed", "c": "crashed", "d": "crashed"}


async def test_worker_thread_runs_jobs_in_order_and_returns_errors():
    import threading

    from orchestra.actors.runtime import WorkerThread

    worker = WorkerThread("test-worker")
    names = set()
    seen = []

    def job(i):
        names.add(threading.current_thread().name)
        seen.append(i)
        return i * 2

    try:
        with trio.fail_after(10):
            assert [await worker.run(lambda i=i: job(i)) for i in range(5)] == [0, 2, 4, 6, 8]
            with pytest.raises(ZeroDivisionError):
                await worker.run(lambda: 1 / 0)
            assert await worker.run(lambda: "still alive") == "still alive"
    finally:
        worker.stop()
    assert seen == [0, 1, 2, 3, 4] and names == {"test-worker"}
    worker._thread.join(5)
    assert not worker._thread.is_alive()


async def test_a_job_handed_over_finishes_even_if_the_caller_is_cancelled():
    import threading

    from orchestra.actors.runtime import WorkerThread

    worker = WorkerThread("test-worker")
    started, release = threading.Event(), threading.Event()
    order: list[str] = []
    results = []

    def slow():
        started.set()
        release.wait(5)
        order.append("job ended")
        return "late"

    async def cancel_then_release(scope: trio.CancelScope) -> None:
        assert await trio.to_thread.run_sync(started.wait, 5)  # the job runs on the worker
        scope.cancel()
        order.append("cancelled")
        await trio.lowlevel.checkpoint()  # the caller sees the cancellation before the job can end
        release.set()

    try:
        with trio.fail_after(10):
            async with trio.open_nursery() as nursery:
                with trio.CancelScope() as scope:
                    nursery.start_soon(cancel_then_release, scope)
                    results.append(await worker.run(slow))
        assert order == ["cancelled", "job ended"]
        assert results == ["late"]  # the job was not abandoned half-way: its result came back
    finally:
        worker.stop()


async def test_on_exit_runs_after_a_crash(autojump_clock):
    exits = []

    class Leaky(Counter):
        def on_exit(self):
            exits.append(self.count)

    ref = ActorRef("leaky")
    async with trio.open_nursery() as nursery:
        await nursery.start(Supervisor("root", [ChildSpec.actor("leaky", ref, Leaky)]).run)
        await ref.call("incr")
        with pytest.raises(ActorCrashed):
            await ref.call("boom")
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert exits == [1, 0]  # the crashed incarnation, then the stopped one


async def test_helpers_end_with_their_incarnation_and_a_failing_helper_crashes_it(autojump_clock):
    events = []

    class WithHelper(Counter):
        async def on_start(self):
            await super().on_start()
            self.helpers.start_soon(self.tick)

        async def tick(self):
            try:
                while True:
                    await trio.sleep(1)
                    events.append("tick")
            finally:
                events.append("helper stopped")

        async def handle(self, msg):
            if msg == "helper-boom":
                async def boom():
                    raise Boom("helper failed")
                self.helpers.start_soon(boom)
                return "started"
            return await super().handle(msg)

    ref = ActorRef("helped")
    sup = Supervisor("root", [ChildSpec.actor("helped", ref, WithHelper)])
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await trio.sleep(2.5)
        assert events.count("tick") == 2
        await ref.call("incr")
        assert await ref.call("helper-boom") == "started"
        await trio.testing.wait_all_tasks_blocked()
        assert "Boom: helper failed" in sup.tree()["children"][0]["last_crash"]
        assert await ref.call("incr") == 1  # restarted with fresh state
        nursery.cancel_scope.cancel()
    assert events.count("helper stopped") == 2  # the crashed incarnation's and the last one's


async def test_a_published_view_ends_with_its_incarnation(autojump_clock):
    class Viewed(Counter):
        async def on_start(self):
            await super().on_start()
            self.table = {"started": True}
            self.ref.view = self.table

    ref = ActorRef("viewed")
    async with trio.open_nursery() as nursery:
        await nursery.start(Supervisor("root", [ChildSpec.actor("viewed", ref, Viewed)]).run)
        first = ref.view
        assert first == {"started": True}
        with pytest.raises(ActorCrashed):
            await ref.call("boom")
        await trio.testing.wait_all_tasks_blocked()
        assert ref.view is not None and ref.view is not first  # the new incarnation's own
        nursery.cancel_scope.cancel()
    assert ref.view is None


class PickyBatcher(Actor):
    """Answers "ok" items, defers "park" items, then raises NotThere if any item is "bad"
    (or Boom if any is "boom"): an answer-type error, or a bug, out of the whole batch."""

    max_batch = 100

    def __init__(self, gate: trio.Event, starts: list[int]) -> None:
        self.gate = gate
        self.parked: list = []
        starts.append(1)

    async def handle_batch(self, calls):
        if any(c.msg == "hold" for c in calls):
            await self.gate.wait()
        for call in calls:
            if call.msg in ("ok", "hold"):
                call.reply("done")
            elif call.msg == "park":
                self.parked.append(self.defer_call(call))
            elif call.msg == "release":
                for parked in self.parked:
                    parked.reply("released")
                call.reply(len(self.parked))
        if any(c.msg == "bad" for c in calls):
            raise NotThere("one item of this batch is bad")
        if any(c.msg == "boom" for c in calls):
            raise Boom("a bug in handle_batch")


async def _drive_batch(ref, nursery, gate, msgs, outcomes):
    async def caller(key, msg):
        try:
            outcomes[key] = await ref.call(msg)
        except NotThere:
            outcomes[key] = "not there"
        except ActorCrashed:
            outcomes[key] = "crashed"

    nursery.start_soon(caller, "hold", "hold")
    await trio.testing.wait_all_tasks_blocked()
    for key, msg in msgs:
        nursery.start_soon(caller, key, msg)
        await trio.testing.wait_all_tasks_blocked()
    gate.set()  # the next drain takes every call above at once
    await trio.testing.wait_all_tasks_blocked()


async def test_a_reply_error_out_of_handle_batch_fails_the_unresolved_calls_and_the_actor_serves_on(autojump_clock):
    gate, starts, outcomes = trio.Event(), [], {}
    ref = ActorRef("batcher")
    sup = Supervisor("root", [ChildSpec.actor("batcher", ref, lambda: PickyBatcher(gate, starts))])
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await _drive_batch(ref, nursery, gate, [("ok", "ok"), ("park", "park"), ("bad", "bad"), ("x", "other")],
                           outcomes)
        # answered items keep their answer; the unresolved ones get the batch's error
        assert outcomes == {"hold": "done", "ok": "done", "bad": "not there", "x": "not there"}
        # the deferred call is still pending in the same incarnation, which serves on
        assert await ref.call("release") == 1
        await trio.testing.wait_all_tasks_blocked()
        assert outcomes["park"] == "released"
        assert starts == [1] and ref.incarnation == 1
        assert sup.tree()["children"][0]["restarts"] == 0
        nursery.cancel_scope.cancel()


async def test_any_other_exception_out_of_handle_batch_still_crashes_the_actor(autojump_clock):
    gate, starts, outcomes = trio.Event(), [], {}
    ref = ActorRef("batcher")
    sup = Supervisor("root", [ChildSpec.actor("batcher", ref, lambda: PickyBatcher(gate, starts))])
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        await _drive_batch(ref, nursery, gate, [("park", "park"), ("boom", "boom"), ("x", "other")], outcomes)
        assert outcomes == {"hold": "done", "park": "crashed", "boom": "crashed", "x": "crashed"}
        assert await ref.call("ok") == "done"
        assert starts == [1, 1] and sup.tree()["children"][0]["restarts"] == 1
        nursery.cancel_scope.cancel()


async def test_every_crash_is_counted_also_of_temporary_children_and_in_nested_supervisors(autojump_clock):
    perm_ref, perm = counter_spec("perm")
    nested_ref, nested_spec = counter_spec("nested")
    sessions = Supervisor("sessions")
    root = Supervisor("root", [
        perm,
        ChildSpec("sessions", lambda: sessions),
        ChildSpec("sub", lambda: Supervisor("sub", [nested_spec])),
    ])
    async with trio.open_nursery() as nursery:
        await nursery.start(root.run)
        for n in range(3):  # temporary children: forgotten after their crash, still counted
            temp_ref, temp = counter_spec(f"s{n}", restart=Restart.TEMPORARY)
            await sessions.start_child(temp)
            with pytest.raises(ActorCrashed):
                await temp_ref.call("boom")
            await trio.testing.wait_all_tasks_blocked()
        assert len(sessions) == 0
        assert (root.total_crashes(), root.total_restarts()) == (3, 0)
        with pytest.raises(ActorCrashed):
            await perm_ref.call("boom")
        with pytest.raises(ActorCrashed):
            await nested_ref.call("boom")
        await trio.testing.wait_all_tasks_blocked()
        assert (root.total_crashes(), root.total_restarts()) == (5, 2)
        kids = {c["id"]: c for c in root.tree()["children"]}
        assert kids["perm"]["crashes"] == 1 and kids["sessions"]["crashes"] == 0
        assert kids["sessions"]["supervisor"]["crashes"] == 3
        assert kids["sub"]["supervisor"]["children"][0]["crashes"] == 1
        nursery.cancel_scope.cancel()


async def test_a_child_that_fails_to_start_counts_as_a_crash(autojump_clock):
    class BadStart(Actor):
        async def on_start(self):
            raise Boom("cannot open")

    sup = Supervisor("dyn")
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        with pytest.raises(Boom):
            await sup.start_child(ChildSpec.actor("bad", ActorRef("bad"), BadStart, restart=Restart.TEMPORARY))
        assert sup.total_crashes() == 1 and sup.total_restarts() == 0
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize("fresh", [True, False])
async def test_a_nested_supervisor_that_gives_up_is_restarted_whole_and_its_counts_kept(autojump_clock, fresh):
    ref, spec = counter_spec("c")
    reused = Supervisor("sub", [spec], max_restarts=1)
    make = (lambda: Supervisor("sub", [spec], max_restarts=1)) if fresh else (lambda: reused)
    root = Supervisor("root", [ChildSpec("sub", make)], max_restarts=3)
    async with trio.open_nursery() as nursery:
        await nursery.start(root.run)
        for _ in range(2):  # the second crash passes sub's intensity: it gives up, root restarts it
            with pytest.raises(ActorCrashed):
                await ref.call("boom")
            await trio.testing.wait_all_tasks_blocked()
        assert await ref.call("incr") == 1  # served again, by the restarted subtree
        assert root.tree()["children"][0]["restarts"] == 1
        # c crashed twice, sub once (gave up); c restarted once, sub once
        assert (root.total_crashes(), root.total_restarts()) == (3, 2)
        with pytest.raises(ActorCrashed):  # the restarted sub has a fresh restart history
            await ref.call("boom")
        await trio.testing.wait_all_tasks_blocked()
        assert await ref.call("incr") == 1
        assert root.tree()["children"][0]["restarts"] == 1
        nursery.cancel_scope.cancel()


async def test_the_supervisors_own_refusals_are_specific_errors(autojump_clock):
    sup = Supervisor("dyn")
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        _, spec = counter_spec("a", restart=Restart.TEMPORARY)
        await sup.start_child(spec)
        with pytest.raises(DuplicateChild) as info:
            await sup.start_child(spec)
        assert isinstance(info.value, SupervisorError) and info.value.child_id == "a"
        nursery.cancel_scope.cancel()
    with pytest.raises(SupervisorStopped) as stopped:
        await sup.start_child(counter_spec("b")[1])
    assert isinstance(stopped.value, SupervisorError) and stopped.value.supervisor == "dyn"


async def test_a_caller_that_gives_up_on_start_child_does_not_harm_the_supervisor(autojump_clock):
    class SlowStart(Counter):
        async def on_start(self):
            await trio.sleep(1)
            await super().on_start()

    sup = Supervisor("dyn")
    async with trio.open_nursery() as nursery:
        await nursery.start(sup.run)
        ref = ActorRef("slow")
        with trio.move_on_after(0.5) as scope:  # the request that asked for it went away
            await sup.start_child(ChildSpec.actor("slow", ref, SlowStart))
        assert scope.cancelled_caught
        with trio.move_on_after(0.1):
            await sup.stop_child("nothing")  # likewise while asking to stop
        await trio.sleep(1)
        assert sup.running and sup.lookup("slow") is ref  # started anyway, and kept
        assert await ref.call("incr") == 1
        _, other = counter_spec("other", restart=Restart.TEMPORARY)
        await sup.start_child(other)  # the supervisor still serves
        assert sup.total_crashes() == 0
        nursery.cancel_scope.cancel()


async def test_a_job_for_a_stopped_worker_thread_is_refused_not_left_waiting():
    # A job handed to a thread that has ended would never be answered, and its caller cannot
    # be cancelled: before this, a server stop could hang for good (tests/harness/test_points.py,
    # the WebSocket wait at a project crash, hung 4 runs in 12).
    from orchestra.actors.runtime import WorkerThread

    worker = WorkerThread("test-worker")
    assert await worker.run(lambda: 41 + 1) == 42
    worker.stop()
    with trio.fail_after(5), pytest.raises(RuntimeError, match="has stopped"):
        await worker.run(lambda: 1)


async def test_a_stopped_worker_thread_runs_its_last_act_after_the_jobs_handed_over():
    import threading

    from orchestra.actors.runtime import WorkerThread

    order: list[str] = []
    done = threading.Event()
    worker = WorkerThread("test-worker")
    assert await worker.run(lambda: order.append("job")) is None

    def last() -> None:
        order.append("last")
        done.set()
        raise OSError("dropped: nobody waits for the last act")

    worker.stop(then=last)
    assert await trio.to_thread.run_sync(done.wait, 5)
    assert order == ["job", "last"]
    with trio.fail_after(5), pytest.raises(RuntimeError, match="has stopped"):
        await worker.run(lambda: 1)


async def test_a_restart_under_way_when_the_supervisor_is_cancelled_does_not_hang_the_stop(autojump_clock):
    """A child crashes; while its next incarnation is still starting, the tree is stopped. The
    child's start completes under a cancelled supervisor: it must still be stopped, not left
    serving in its shielded scope with the supervisor waiting for it forever (seen as a hang of
    a test server's teardown after a project crash)."""
    gate = trio.Event()
    starts = []

    class SlowRestart(Counter):
        async def on_start(self) -> None:
            starts.append(1)
            if len(starts) > 1:
                await gate.wait()
            await super().on_start()

    ref = ActorRef("slow", mailbox_size=16)
    sup = Supervisor("root", [ChildSpec.actor("slow", ref, SlowRestart)])
    done = trio.Event()

    async def tree() -> None:
        async with trio.open_nursery() as nursery:
            await start_tree(nursery, sup)
            with pytest.raises(ActorCrashed):
                await ref.call("boom")
            await trio.testing.wait_all_tasks_blocked()
            assert len(starts) == 2  # the restart waits at the gate
            nursery.cancel_scope.cancel()
            gate.set()  # the restart completes after the stop began
        done.set()

    async with trio.open_nursery() as outer:
        outer.start_soon(tree)
        with trio.move_on_after(30) as timer:
            await done.wait()
        if timer.cancelled_caught:
            for state in sup._children.values():  # release the stuck child so the test ends
                state.scope.cancel()
            pytest.fail("the supervisor's stop hung on a child that started while it was cancelled")
