"""The idle bound of an HTTP connection (``ServerConfig.idle_timeout``): it bounds the wait for
a request's head, never the answer to one (the server's one watch of all connections,
``Server._close_idle``)."""

from __future__ import annotations

import h11
import trio
from orchestra.transport.http_client import read_response
from orchestra.transport.server import ServerConfig

from orchestra.testing import InProcessServer


async def _closed_within(stream: trio.SocketStream, seconds: float) -> float:
    """Seconds until the server closes ``stream`` (fails if it sends anything or takes longer)."""
    started = trio.current_time()
    with trio.fail_after(seconds):
        assert await stream.receive_some(65536) == b""
    return trio.current_time() - started


async def test_a_long_answer_outlasts_the_idle_bound_then_the_idle_connection_is_closed(nursery, tmp_path):
    server = await InProcessServer(tmp_path / "d", root=tmp_path,
                                   server_config=ServerConfig(idle_timeout=0.5)).start(nursery)
    tok = server.token("p1")
    try:
        stream = await trio.open_tcp_stream(server.host, server.port)
        conn = h11.Connection(h11.CLIENT)
        for _ in range(2):  # a long poll three times the bound, twice on one connection
            await stream.send_all(conn.send(h11.Request(
                method="GET", target="/api/events/wait/never.sent?timeout=1500",
                headers=[("host", "x"), ("authorization", f"Bearer {tok}")])) + conn.send(h11.EndOfMessage()))
            started = trio.current_time()
            with trio.fail_after(10):
                r = await read_response(stream, conn)
            assert r.status == 200, r.body
            assert trio.current_time() - started >= 1.4
            conn.start_next_cycle()
        # then no request: closed at the bound (checked every 0.05 s here), not before
        assert 0.45 <= await _closed_within(stream, 5) < 3
        await stream.aclose()
    finally:
        await server.stop()


async def test_a_connection_that_sends_nothing_is_closed_at_the_bound(nursery, tmp_path):
    server = await InProcessServer(tmp_path / "d", root=tmp_path,
                                   server_config=ServerConfig(idle_timeout=0.3)).start(nursery)
    try:
        streams = [await trio.open_tcp_stream(server.host, server.port) for _ in range(3)]
        for stream in streams:
            assert await _closed_within(stream, 5) < 3
            await stream.aclose()
        assert server.server.connections == 0
    finally:
        await server.stop()
