"""A small HTTP/1.1 client on h11 and trio: one request per connection, the whole answer read.

For the test suite, the benchmarks and the command-line tools: it speaks the protocol's plain
HTTP routes and nothing else (no redirects, no TLS, no pooling).
"""

from __future__ import annotations

from dataclasses import dataclass

import h11
import orjson
import trio

__all__ = ["HttpResponse", "read_response", "request"]


@dataclass(frozen=True, slots=True)
class HttpResponse:
    status: int
    #: header names lower-cased, the last value of a repeated header
    headers: dict[str, str]
    body: bytes

    def json(self) -> object:
        return orjson.loads(self.body)


async def request(
    host: str,
    port: int,
    method: str,
    target: str,
    *,
    token: str | None = None,
    body: bytes = b"",
    headers: list[tuple[str, str]] | None = None,
) -> HttpResponse:
    """Send one request on a new connection and read the whole answer. Bound it with a trio
    scope (``trio.fail_after``): it waits as long as the server takes."""
    stream = await trio.open_tcp_stream(host, port)
    async with stream:
        conn = h11.Connection(h11.CLIENT)
        sent = [("host", f"{host}:{port}"), ("content-length", str(len(body)))]
        if token:
            sent.append(("authorization", f"Bearer {token}"))
        sent.extend(headers or [])
        data = conn.send(h11.Request(method=method, target=target, headers=sent))
        if body:
            data += conn.send(h11.Data(data=body))
        data += conn.send(h11.EndOfMessage())
        await stream.send_all(data)
        return await read_response(stream, conn)


async def read_response(stream: trio.SocketStream, conn: h11.Connection) -> HttpResponse:
    """Read one whole answer from ``stream`` with the client connection ``conn`` (on a kept-alive
    connection, ``conn.start_next_cycle()`` then readies it for the next request)."""
    status, received, out = 0, {}, bytearray()
    while True:
        event = conn.next_event()
        if event is h11.NEED_DATA:
            conn.receive_data(await stream.receive_some(65536))
        elif isinstance(event, h11.Response):
            status = event.status_code
            received = {k.decode(): v.decode("latin-1") for k, v in event.headers}
        elif isinstance(event, h11.Data):
            out += event.data
        elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
            return HttpResponse(status, received, bytes(out))
