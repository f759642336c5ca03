"""The HTTP connection as a client sees it (transport/server.py on transport/http1.py): when it
stays open, when it ends, and what the refusals of the HTTP layer look like."""

from __future__ import annotations

import orjson
import trio

from orchestra.testing import InProcessServer


async def _raw(server: InProcessServer, data: bytes, within: float = 10) -> bytes:
    """Everything the server sends back to ``data`` until it closes the connection."""
    stream = await trio.open_tcp_stream(server.host, server.port)
    out = bytearray()
    with trio.fail_after(within):
        await stream.send_all(data)
        while chunk := await stream.receive_some(65536):
            out += chunk
    await stream.aclose()
    return bytes(out)


def _answers(raw: bytes) -> list[tuple[int, dict[bytes, bytes], bytes]]:
    """The answers in ``raw``: status, headers, body (Content-Length framed)."""
    out = []
    while raw:
        head, _, rest = raw.partition(b"\r\n\r\n")
        status_line, *lines = head.split(b"\r\n")
        headers = dict(line.split(b": ", 1) for line in lines)
        length = int(headers[b"content-length"])
        out.append((int(status_line.split(b" ")[1]), headers, rest[:length]))
        raw = rest[length:]
    return out


async def _start(nursery, tmp_path) -> InProcessServer:
    return await InProcessServer(tmp_path / "d", root=tmp_path).start(nursery)


async def test_connection_close_and_http_1_0_end_the_connection_after_their_answer(nursery, tmp_path):
    server = await _start(nursery, tmp_path)
    try:
        health = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
        closing = b"GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
        answers = _answers(await _raw(server, health + closing + health))  # the third: never answered
        assert [(status, h.get(b"connection")) for status, h, _ in answers] == [(200, None), (200, b"close")]
        answers = _answers(await _raw(server, b"GET /health HTTP/1.0\r\n\r\n"))
        assert [(status, h.get(b"connection")) for status, h, _ in answers] == [(200, b"close")]
    finally:
        await server.stop()


async def test_refusals_of_the_http_layer_carry_the_error_object_and_close(nursery, tmp_path):
    server = await _start(nursery, tmp_path)
    try:
        for raw, status in [
            (b"GET /health HTTP/1.1\r\n\r\n", 400),  # no Host
            (b"FOO /health HTTP/1.1\r\nHost: x\r\n\r\n", 400),  # a method llhttp does not know
            (b"GET /h\xc3\xa9 HTTP/1.1\r\nHost: x\r\n\r\n", 400),
            (b"POST /api/results HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n", 413),
            (b"GET /health HTTP/1.1\r\nHost: x\r\nX-Big: " + b"y" * 40000 + b"\r\n\r\n", 431),
        ]:
            answers = _answers(await _raw(server, raw))
            assert len(answers) == 1, raw[:60]
            got, headers, body = answers[0]
            error = orjson.loads(body)
            assert (got, headers[b"connection"]) == (status, b"close"), raw[:60]
            assert error["code"] == ("REQ_001" if status == 400 else "REQ_002") and error["request_id"], error
    finally:
        await server.stop()


async def test_a_head_answer_has_the_get_headers_and_no_body_and_the_connection_goes_on(nursery, tmp_path):
    server = await _start(nursery, tmp_path)
    try:
        raw = await _raw(server, b"HEAD /health HTTP/1.1\r\nHost: x\r\n\r\nGET /health HTTP/1.1\r\nHost: x\r\n"
                                 b"Connection: close\r\n\r\n")
        head, _, rest = raw.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200 \r\n") and b"content-length: " in head
        assert _answers(rest)[0][0] == 200 and orjson.loads(_answers(rest)[0][2])["status"] == "healthy"
    finally:
        await server.stop()

