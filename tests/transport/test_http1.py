"""The HTTP/1.1 request reader (transport/http1.py), sans-IO: what it gives, bounds and refuses."""

from __future__ import annotations

import pytest
from orchestra.transport.http1 import HttpRefusal, Request, RequestReader, response_head


def _read(*feeds: bytes, header_bytes: int = 16384, body_bytes: int = 1000) -> list[Request | HttpRefusal]:
    """What a reader fed ``feeds`` one after another gives: requests, then a refusal if any."""
    reader = RequestReader(header_bytes, body_bytes)
    out: list[Request | HttpRefusal] = []
    for data in feeds:
        reader.feed(data)
        while True:
            try:
                req = reader.next()
            except HttpRefusal as refused:
                return [*out, refused]
            if req is None:
                break
            out.append(req)
    return out


def _refusal(*feeds: bytes, **bounds: int) -> tuple[int, str]:
    *_, last = _read(*feeds, **bounds)
    assert isinstance(last, HttpRefusal), last
    return last.status, last.message


def test_pipelined_requests_come_out_in_order_with_their_bodies():
    one = b"POST /a?x=1 HTTP/1.1\r\nHost: h\r\nContent-Length: 5\r\nX-Pad:  v \t\r\n\r\nhello"
    two = b"POST /b HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    three = b"GET /c HTTP/1.1\r\nHOST: h\r\n\r\n"
    reqs = _read(one + two + three)
    assert [(r.method, r.target, r.body(), r.keep_alive) for r in reqs] == [  # type: ignore[union-attr]
        (b"POST", b"/a?x=1", b"hello", True), (b"POST", b"/b", b"abcde", True), (b"GET", b"/c", b"", True)]
    first = reqs[0]
    assert isinstance(first, Request)
    assert first.fields[b"x-pad"] == b"v"  # names lower-cased, the whitespace around a value gone
    assert first.headers == [(b"host", b"h"), (b"content-length", b"5"), (b"x-pad", b"v")]


def test_a_request_is_given_at_its_head_and_its_body_follows():
    reader = RequestReader(16384, 1000)
    reader.feed(b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 6\r\n\r\nab")
    req = reader.next()
    assert req is not None and not req.complete and reader.in_message
    reader.feed(b"cd")
    reader.feed(b"ef")
    assert req.complete and req.body() == b"abcdef" and not reader.in_message and reader.next() is None


@pytest.mark.parametrize("cut", [1, 7, 30, 60])
def test_a_head_in_pieces_is_one_request(cut):
    raw = b"GET /a/b HTTP/1.1\r\nHost: h\r\nX-Request-ID: abc\r\n\r\n"
    reqs = _read(raw[:cut], raw[cut:])
    assert len(reqs) == 1 and isinstance(reqs[0], Request)
    assert reqs[0].target == b"/a/b" and reqs[0].fields[b"x-request-id"] == b"abc"


def test_a_head_over_the_bound_is_refused_431_whether_complete_or_still_arriving():
    big = b"GET / HTTP/1.1\r\nHost: h\r\nX-Big: " + b"y" * 3000
    assert _refusal(big + b"\r\n\r\n", header_bytes=2000)[0] == 431
    # never completed: refused once the bytes of the head held pass the bound
    assert _refusal(big[:1500], big[1500:], header_bytes=2000)[0] == 431
    assert isinstance(_read(b"GET / HTTP/1.1\r\nHost: h\r\nX-Big: " + b"y" * 1900 + b"\r\n\r\n",
                            header_bytes=2000)[0], Request)


def test_requests_before_a_refused_one_are_given_first():
    good = b"GET /a HTTP/1.1\r\nHost: h\r\n\r\n"
    out = _read(good + good + b"GET /a HTTP/1.1\r\nHost: h\r\nBad Name: x\r\n\r\n")
    assert [type(x) for x in out] == [Request, Request, HttpRefusal]
    assert isinstance(out[2], HttpRefusal) and out[2].status == 400


def test_a_body_over_the_bound_stops_the_parse():
    announced = _read(b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 1001\r\n\r\n")
    assert len(announced) == 1 and isinstance(announced[0], Request)
    assert announced[0].too_large and announced[0].content_length == 1001
    chunk = b"%x\r\n%s\r\n" % (600, b"x" * 600)
    counted = _read(b"POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n" + chunk, chunk + b"0\r\n\r\n")
    assert len(counted) == 1 and isinstance(counted[0], Request) and counted[0].too_large
    assert _refusal(b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 99999999999999999999\r\n\r\n")[0] == 413


def test_trailers_and_chunk_framing_are_bounded_too():
    head = b"POST /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\n"
    trailers = b"".join(b"X-T%d: %s\r\n" % (i, b"v" * 100) for i in range(30))
    assert _refusal(head + b"1\r\nx\r\n0\r\n" + trailers, b"\r\n", header_bytes=2000)[0] == 431
    # a trailer value that never ends: the request is over the bytes it may take
    reqs = _read(head + b"1\r\nx\r\n0\r\nX-T: ", *[b"v" * 1000] * 5, header_bytes=500, body_bytes=1000)
    assert len(reqs) == 1 and isinstance(reqs[0], Request) and reqs[0].too_large
    # a body within the bound in one-byte chunks: six bytes of framing each
    reqs = _read(head, *[b"1\r\nx\r\n"] * 600, header_bytes=500, body_bytes=1000)
    assert len(reqs) == 1 and isinstance(reqs[0], Request) and reqs[0].too_large


@pytest.mark.parametrize("raw", [
    b"GET /a HTTP/1.1\r\n\r\n",  # HTTP/1.1 without Host
    b"GET /\xc3\xa9 HTTP/1.1\r\nHost: h\r\n\r\n",  # a target that is not ASCII
    b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: -1\r\n\r\n",
    b"POST /a HTTP/1.1\r\nHost: h\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nx",
    b"GET /a HTTP/1.1\r\nHost: h\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"GET /a HTTP/1.1\r\nHost: h\r\n folded\r\n\r\n",
    b"GET /a HTTP/1.1\r\nHost: h\r\nX: a\x01b\r\n\r\n",
    b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03garbage\r\n\r\n",
])
def test_malformed_requests_are_refused_400_and_never_given(raw):
    out = _read(raw)
    assert len(out) == 1 and isinstance(out[0], HttpRefusal) and out[0].status == 400, out


def test_keep_alive_follows_the_version_and_connection_header():
    (one,) = _read(b"GET /a HTTP/1.0\r\n\r\n")
    (two,) = _read(b"GET /a HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
    (three,) = _read(b"GET /a HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")  # closed, as h11 did
    assert [r.keep_alive for r in (one, two, three)] == [False, False, False]  # type: ignore[union-attr]


def test_an_upgrade_keeps_the_bytes_after_its_head_and_ends_the_parse():
    reader = RequestReader(16384, 1000)
    reader.feed(b"GET /ws HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n\x81\x00")
    req = reader.next()
    assert req is not None and req.websocket and req.upgrade and req.trailing == b"\x81\x00" and reader.done
    reader.feed(b"GET / HTTP/1.1\r\nHost: h\r\n\r\n")  # no HTTP after a switch
    assert reader.next() is None


def test_the_answer_head_is_written_as_h11_wrote_it():
    assert response_head(200, [(b"x-request-id", b"r1")], 12, True, False) == (
        b"HTTP/1.1 200 \r\ncontent-type: application/json\r\ncontent-length: 12\r\nx-request-id: r1\r\n\r\n")
    assert response_head(413, [(b"content-type", b"text/plain")], 0, False, True) == (
        b"HTTP/1.1 413 \r\ncontent-length: 0\r\ncontent-type: text/plain\r\nconnection: close\r\n\r\n")
