"""Reading an HTTP request's body: what came with the head is taken without waiting, the rest
under the body's one deadline, and the body bound holds either way (``Server._respond_to``)."""

from __future__ import annotations

import orjson
import trio
from orchestra.transport.server import ServerConfig

from orchestra.testing import InProcessServer
from tests.conftest import result_body


async def _answers(stream: trio.SocketStream, n: int, within: float = 10) -> list[tuple[int, dict]]:
    """The next ``n`` answers on ``stream`` (status, JSON body); a short list if it closes."""
    import h11

    conn = h11.Connection(h11.CLIENT)
    out: list[tuple[int, dict]] = []
    status, body = 0, b""
    with trio.fail_after(within):
        while len(out) < n:
            if conn.our_state is h11.IDLE:  # (the requests went as raw bytes: h11 learns of one)
                conn.send(h11.Request(method="POST", target="/", headers=[("host", "x"), ("content-length", "0")]))
                conn.send(h11.EndOfMessage())
            event = conn.next_event()
            if event is h11.NEED_DATA:
                data = await stream.receive_some(65536)
                conn.receive_data(data)
                continue
            if isinstance(event, h11.Response):
                status = event.status_code
            elif isinstance(event, h11.Data):
                body += event.data
            elif isinstance(event, h11.EndOfMessage):
                out.append((status, orjson.loads(body)))
                body = b""
                if conn.our_state is h11.MUST_CLOSE or conn.their_state is h11.MUST_CLOSE:
                    return out
                conn.start_next_cycle()
            elif isinstance(event, h11.ConnectionClosed):
                return out
    return out


def _post(tok: str, body: bytes, *, chunked: bool = False) -> tuple[bytes, bytes]:
    """The head and the body bytes of a POST /api/results."""
    head = f"POST /api/results HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {tok}\r\nContent-Type: application/json\r\n"
    if chunked:
        return (head + "Transfer-Encoding: chunked\r\n\r\n").encode(), b"%x\r\n%s\r\n0\r\n\r\n" % (len(body), body)
    return (head + f"Content-Length: {len(body)}\r\n\r\n").encode(), body


async def _start(nursery, tmp_path, **config) -> InProcessServer:
    return await InProcessServer(tmp_path / "d", root=tmp_path, max_body_bytes=1000,
                                 server_config=ServerConfig(**config)).start(nursery)


async def test_bodies_that_came_with_their_heads_and_pipelined_requests_are_each_answered(nursery, tmp_path):
    server = await _start(nursery, tmp_path)
    tok = server.token("p1")
    try:
        stream = await trio.open_tcp_stream(server.host, server.port)
        one = b"".join(_post(tok, orjson.dumps(result_body())))
        two = b"".join(_post(tok, orjson.dumps(result_body()), chunked=True))
        await stream.send_all(one + two + one)  # three requests in one write
        answers = await _answers(stream, 3)
        assert [status for status, _ in answers] == [200, 200, 200]
        assert len({body["id"] for _, body in answers}) == 3
        await stream.aclose()
    finally:
        await server.stop()


async def test_a_body_over_the_bound_is_refused_whether_it_came_with_the_head_or_later(nursery, tmp_path):
    server = await _start(nursery, tmp_path)
    tok = server.token("p1")
    big = orjson.dumps({**result_body(), "pad": "x" * 2000})
    try:
        for split in (False, True):  # chunked: no declared length, only the bytes tell
            stream = await trio.open_tcp_stream(server.host, server.port)
            head, body = _post(tok, big, chunked=True)
            if split:
                await stream.send_all(head)
                await trio.sleep(0.1)
                await stream.send_all(body[:600])
                await trio.sleep(0.1)
                await stream.send_all(body[600:])
            else:
                await stream.send_all(head + body)
            answers = await _answers(stream, 2)
            assert [(status, answer["code"]) for status, answer in answers] == [(413, "REQ_002")]
            await stream.aclose()
    finally:
        await server.stop()


async def test_a_body_after_its_head_is_waited_for_until_the_body_deadline(nursery, tmp_path):
    server = await _start(nursery, tmp_path, request_timeout=1.0)
    tok = server.token("p1")
    try:
        stream = await trio.open_tcp_stream(server.host, server.port)
        head, body = _post(tok, orjson.dumps(result_body()))
        await stream.send_all(head)
        await trio.sleep(0.3)  # the body later, within the deadline: answered
        await stream.send_all(body)
        assert [status for status, _ in await _answers(stream, 1)] == [200]
        # a body that drips past the deadline: the connection is closed, no answer
        await stream.send_all(head + body[:5])
        started = trio.current_time()
        with trio.fail_after(10):
            while await stream.receive_some(65536):
                pass
        assert 0.9 <= trio.current_time() - started < 5
        await stream.aclose()
    finally:
        await server.stop()


async def _refused_then(stream: trio.SocketStream, tok: str) -> None:
    """Send a head whose declared body is over the bound and read the 413 that closes."""
    head, _ = _post(tok, b"x" * 5000)
    await stream.send_all(head)
    assert [(status, answer["code"]) for status, answer in await _answers(stream, 1)] == [(413, "REQ_002")]


async def _closed(stream: trio.SocketStream) -> bool:
    """Whether the server has closed: the stream ends, or a write is refused."""
    try:
        while await stream.receive_some(65536):
            pass
        return True
    except trio.BrokenResourceError:
        return True


async def test_what_a_client_sends_after_a_closing_answer_is_read_for_at_most_linger_seconds(nursery, tmp_path):
    """A client that neither closes nor stops sending after a 413 (a trickle, well under the
    byte bound) is closed once ``linger_seconds`` are up, not held open."""
    server = await _start(nursery, tmp_path, linger_seconds=0.5, linger_bytes=1 << 20)
    tok = server.token("p1")
    try:
        stream = await trio.open_tcp_stream(server.host, server.port)
        await _refused_then(stream, tok)
        started = trio.current_time()
        closed_at = None
        with trio.fail_after(10):
            try:
                while True:  # 100 bytes every 50 ms: the server's end is noticed by a write
                    await stream.send_all(b"y" * 100)
                    await trio.sleep(0.05)
            except trio.BrokenResourceError:
                closed_at = trio.current_time()
        assert closed_at is not None and 0.4 <= closed_at - started < 3
        await stream.aclose()
    finally:
        await server.stop()


async def test_what_a_client_sends_after_a_closing_answer_is_read_up_to_linger_bytes(nursery, tmp_path):
    """A client that sends as fast as it can after a 413 is cut off once ``linger_bytes`` are
    read, long before ``linger_seconds``."""
    server = await _start(nursery, tmp_path, linger_seconds=30.0, linger_bytes=64 * 1024)
    tok = server.token("p1")
    try:
        stream = await trio.open_tcp_stream(server.host, server.port)
        await _refused_then(stream, tok)
        started = trio.current_time()
        sent = 0
        with trio.fail_after(10):  # without the byte bound the server reads for 30 s
            try:
                while True:
                    await stream.send_all(b"y" * 65536)
                    sent += 65536
            except trio.BrokenResourceError:
                pass
        assert trio.current_time() - started < 10
        assert sent >= 64 * 1024
        await stream.aclose()
    finally:
        await server.stop()
