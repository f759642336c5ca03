"""The unit costs a request is made of, measured on this machine: ``python -m bench.floors``.

Prints JSON, microseconds each (medians of several rounds):

- ``handoff``: one trio task handing a message to another through a memory channel and being
  answered back, divided by two (one hand-off: a channel send, a reschedule, a wake-up);
- ``thread_hop``: a no-op job through the store's :class:`WorkerThread` and back (the store's
  thread hop: a queue put, a thread wake-up, ``run_sync_soon`` back into the loop);
- ``ws_frame_in`` / ``ws_frame_out``: wsproto parsing one masked client text frame of a
  ``result.store`` request into a message, and framing one answer;
- ``json``: orjson decoding that request and encoding its answer.

A durable ``result.store`` over WebSocket crosses, by reading the code: the connection's reader
task -> the session's reader (1) -> a session worker (2) -> the project's mailbox (3) -> the
store's mailbox (4) -> the store's thread and back (the thread hop) -> the project (5) -> the
worker (6) -> the session's writer (7): 7 hand-offs and one thread hop, on top of the frame and
JSON work and SQLite's own insert.
"""

from __future__ import annotations

import json
import statistics
import sys
import time

import orjson
import trio
from orchestra.actors.runtime import WorkerThread
from wsproto.connection import Connection, ConnectionType
from wsproto.events import TextMessage
from wsproto.frame_protocol import FrameProtocol

REQUEST = {"id": 7, "op": "result.store", "agent_id": "w1", "agent_type": "python-specialist", "issue_id": "bench",
           "result": {"status": "success", "n": 0}}
ANSWER = {"id": 7, "ok": True, "result": {"id": "0f3c2a4e-8b1d-4c5e-9a7f-1234567890ab", "stored": True,
                                            "storage_path": "sqlite#results/0f3c", "next_agents": [],
                                            "event_published": True, "event_cursor": "AAAAAAAAAAE"}}


async def handoffs(rounds: int) -> float:
    a_send, a_recv = trio.open_memory_channel[int](0)
    b_send, b_recv = trio.open_memory_channel[int](0)

    async def echo() -> None:
        async for x in a_recv:
            await b_send.send(x)

    async with trio.open_nursery() as n:
        n.start_soon(echo)
        t = time.perf_counter()
        for i in range(rounds):
            await a_send.send(i)
            await b_recv.receive()
        elapsed = time.perf_counter() - t
        n.cancel_scope.cancel()
    return elapsed / rounds / 2


async def thread_hops(rounds: int) -> float:
    worker = WorkerThread("floors")
    try:
        t = time.perf_counter()
        for _ in range(rounds):
            await worker.run(lambda: None)
        return (time.perf_counter() - t) / rounds
    finally:
        worker.stop()


def frames(rounds: int) -> tuple[float, float]:
    client = FrameProtocol(client=True, extensions=[])
    server = Connection(ConnectionType.SERVER)
    raw = client.send_data(orjson.dumps(REQUEST).decode(), fin=True)
    t = time.perf_counter()
    for _ in range(rounds):
        server.receive_data(raw)
        for event in server.events():
            assert isinstance(event, TextMessage)
    frame_in = (time.perf_counter() - t) / rounds
    answer = orjson.dumps(ANSWER).decode()
    out = FrameProtocol(client=False, extensions=[])
    t = time.perf_counter()
    for _ in range(rounds):
        out.send_data(answer, fin=True)
    frame_out = (time.perf_counter() - t) / rounds
    return frame_in, frame_out


def codec(rounds: int) -> float:
    raw = orjson.dumps(REQUEST)
    t = time.perf_counter()
    for _ in range(rounds):
        orjson.loads(raw)
        orjson.dumps(ANSWER)
    return (time.perf_counter() - t) / rounds


def main() -> None:
    rounds = int(sys.argv[1]) if len(sys.argv) > 1 else 5000
    samples: dict[str, list[float]] = {"handoff": [], "thread_hop": [], "ws_frame_in": [], "ws_frame_out": [],
                                       "json": []}
    for _ in range(5):
        samples["handoff"].append(trio.run(handoffs, rounds))
        samples["thread_hop"].append(trio.run(thread_hops, rounds // 5))
        frame_in, frame_out = frames(rounds)
        samples["ws_frame_in"].append(frame_in)
        samples["ws_frame_out"].append(frame_out)
        samples["json"].append(codec(rounds))
    print(json.dumps({k: statistics.median(v) * 1e6 for k, v in samples.items()}))


if __name__ == "__main__":
    main()
