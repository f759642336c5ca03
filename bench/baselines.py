"""Bare servers that bound what Orchestra can do: run as ``python -m bench.baselines MODE``.

- ``echo``: trio-websocket server that echoes each message (bounds ``ping``).
- ``relay``: trio-websocket server; a message from any client goes to every *other* client
  (bounds publish->deliver and fan-out).
- ``broadcast``: the fair fan-out: a message from any client goes to every other client through
  a bounded channel per subscriber and a send task per subscriber, so no subscriber waits for
  another; the message is the same ``str`` object for all of them (trio-websocket frames it per
  connection: as close to "encode once" as its API allows).
- ``h11``: a bare h11 HTTP/1.1 keep-alive server answering a fixed small JSON body
  (bounds ``GET /api/results/{id}`` and ``POST /api/results``).
Each prints ``listening on http://127.0.0.1:PORT`` like ``orchestra serve``.
"""

from __future__ import annotations

import sys
from functools import partial

import h11
import trio
import trio_websocket

BODY = b'{"id":"x","project_id":"p","result":{"status":"success"},"agent_id":"a","agent_type":"t","issue_id":"i","stored_at":"2026-01-01T00:00:00.000000Z","storage_path":"x"}'


async def echo(request: trio_websocket.WebSocketRequest) -> None:
    ws = await request.accept()
    try:
        while True:
            await ws.send_message(await ws.get_message())
    except trio_websocket.ConnectionClosed:
        pass


class Relay:
    def __init__(self) -> None:
        self.clients: set[trio_websocket.WebSocketConnection] = set()

    async def handler(self, request: trio_websocket.WebSocketRequest) -> None:
        ws = await request.accept()
        self.clients.add(ws)
        try:
            while True:
                msg = await ws.get_message()
                for other in list(self.clients):
                    if other is not ws:
                        try:
                            await other.send_message(msg)
                        except trio_websocket.ConnectionClosed:
                            self.clients.discard(other)
        except trio_websocket.ConnectionClosed:
            pass
        finally:
            self.clients.discard(ws)


class Broadcast:
    """One bounded outbox and one sender task per subscriber (a full outbox drops the
    subscriber, as a slow consumer would be dropped)."""

    def __init__(self, outbox: int = 4096) -> None:
        self.outbox = outbox
        self.clients: dict[trio_websocket.WebSocketConnection, trio.MemorySendChannel[str]] = {}

    async def handler(self, request: trio_websocket.WebSocketRequest) -> None:
        ws = await request.accept()
        send, receive = trio.open_memory_channel[str](self.outbox)
        self.clients[ws] = send
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._sender, ws, receive, nursery.cancel_scope)
                await self._reader(ws)
                nursery.cancel_scope.cancel()
        finally:
            self.clients.pop(ws, None)

    async def _reader(self, ws: trio_websocket.WebSocketConnection) -> None:
        try:
            while True:
                msg = await ws.get_message()
                for other, channel in list(self.clients.items()):
                    if other is not ws:
                        try:
                            channel.send_nowait(msg)
                        except (trio.WouldBlock, trio.ClosedResourceError):
                            self.clients.pop(other, None)
        except trio_websocket.ConnectionClosed:
            pass

    @staticmethod
    async def _sender(ws: trio_websocket.WebSocketConnection, receive: trio.MemoryReceiveChannel[str],
                      scope: trio.CancelScope) -> None:
        try:
            async for msg in receive:
                await ws.send_message(msg)
        except trio_websocket.ConnectionClosed:
            scope.cancel()


async def h11_handler(stream: trio.SocketStream) -> None:
    conn = h11.Connection(h11.SERVER)
    try:
        while True:
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await stream.receive_some(65536)
                if not data:
                    return
                conn.receive_data(data)
                continue
            if isinstance(event, (h11.Request, h11.Data)):
                continue
            if isinstance(event, h11.EndOfMessage):
                out = conn.send(h11.Response(status_code=200, headers=[
                    (b"content-type", b"application/json"), (b"content-length", str(len(BODY)).encode())]))
                out += conn.send(h11.Data(data=BODY)) + conn.send(h11.EndOfMessage())
                await stream.send_all(out)
                conn.start_next_cycle()
                continue
            return
    except (trio.BrokenResourceError, h11.RemoteProtocolError):
        return


async def main(mode: str) -> None:
    async with trio.open_nursery() as nursery:
        if mode == "h11":
            listeners = await nursery.start(partial(trio.serve_tcp, h11_handler, 0, host="127.0.0.1"))
            port = listeners[0].socket.getsockname()[1]
        else:
            handler = {"echo": echo, "relay": Relay().handler, "broadcast": Broadcast().handler}[mode]
            server = await nursery.start(trio_websocket.serve_websocket, handler, "127.0.0.1", 0, None)
            port = server.port
        print(f"listening on http://127.0.0.1:{port}", flush=True)


if __name__ == "__main__":
    trio.run(main, sys.argv[1])
