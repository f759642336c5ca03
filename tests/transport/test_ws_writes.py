"""Writes to one WebSocket connection from several tasks: the session's writer, the task that
answers a request, trio-websocket's own reader (pongs, close replies)."""

from __future__ import annotations

import trio
import trio.testing
from orchestra.transport.websocket import ReplayStream


async def test_a_write_while_a_corked_batch_is_flushing_waits_its_turn():
    """A corked batch is flushed outside trio-websocket's lock: a frame written meanwhile (a
    pong, an answer) must wait for the flush, not collide with it on the socket."""
    left, right = trio.testing.lockstep_stream_pair()  # a write blocks until the peer reads
    stream = ReplayStream(left, b"")
    stream.cork()
    await stream.send_all(b"a")
    await stream.send_all(b"b")
    got = bytearray()
    async with trio.open_nursery() as nursery:
        nursery.start_soon(stream.uncork)
        await trio.testing.wait_all_tasks_blocked()
        nursery.start_soon(stream.send_all, b"c")
        await trio.testing.wait_all_tasks_blocked()
        while len(got) < 3:
            got += await right.receive_some()
    assert bytes(got) == b"abc"
