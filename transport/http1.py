"""HTTP/1.1 requests from bytes, sans-IO: llhttp (through ``httptools``) parses, this module
bounds and collects.

:class:`RequestReader` is fed the bytes of one connection and hands out its requests in
order, each once its head is complete (its body may still be arriving: :attr:`Request.complete`
says). What it refuses it raises as :class:`HttpRefusal` (the status and why), in order too:
requests parsed before the refused bytes come out first. It bounds what it holds: a head over
``max_header_bytes`` is refused 431 (counted as it arrives, not only once complete), a body
over ``max_body_bytes`` (announced or counted) stops the parse and marks its request
:attr:`Request.too_large` (so does a request whose bytes pass twice the body bound and the
head's: a body in tiny chunks, or trailers without end; trailer lines count to the head's
bound). It never reads ahead more than one feed: the caller feeds it only
when it has no request to give, so what it holds is bounded by one read.

Requests are held to h11's rules where llhttp is more lenient (the parser the server used
before): an HTTP/1.1 request needs a ``Host`` header, its target is printable ASCII, and an
HTTP/1.0 connection is closed after its answer.
"""

from __future__ import annotations

from collections import deque

import httptools

__all__ = ["HttpRefusal", "Request", "RequestReader", "response_head"]


class HttpRefusal(Exception):
    """A request the server refuses at the HTTP layer: ``status`` (400, 413, 431) and why."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


class _Stop(Exception):
    """Raised in a callback to stop the parse (a body over the bound): its request says why."""


class Request:
    """One request: its head as parsed; its body as it arrives (:meth:`body` once complete)."""

    __slots__ = ("method", "target", "headers", "fields", "size", "keep_alive", "websocket",
                 "upgrade", "trailing", "complete", "too_large", "content_length", "_parts", "_received")

    def __init__(self) -> None:
        self.method = b""
        self.target = b""
        #: the header lines, names lower-cased, in order (for the WebSocket hand-off)
        self.headers: list[tuple[bytes, bytes]] = []
        #: the headers by lower-cased name; a repeated name: the last one counts
        self.fields: dict[bytes, bytes] = {}
        #: bytes of the head as counted for its bound: the target, and name + value + 4 a line
        self.size = 0
        #: False: the connection ends after this request's answer
        self.keep_alive = False
        #: an ``Upgrade: websocket`` header: the connection is handed to the WebSocket bridge
        self.websocket = False
        #: the parser switched protocols after this request (a valid Upgrade, or CONNECT): no
        #: HTTP request follows it on the connection; ``trailing`` holds the bytes after its head
        self.upgrade = False
        self.trailing = b""
        self.complete = False
        #: the body is over ``max_body_bytes`` (announced, or counted as it came): not kept
        self.too_large = False
        #: the announced ``Content-Length`` when it is a number, else None
        self.content_length: int | None = None
        self._parts: list[bytes] = []
        self._received = 0

    def body(self) -> bytes:
        parts = self._parts
        return parts[0] if len(parts) == 1 else b"".join(parts)


class RequestReader:
    """The requests of one connection, parsed from the bytes it is :meth:`feed`."""

    def __init__(self, max_header_bytes: int, max_body_bytes: int) -> None:
        self.max_header_bytes = max_header_bytes
        self.max_body_bytes = max_body_bytes
        self._parser = httptools.HttpRequestParser(self)
        self._ready: deque[Request] = deque()
        self._current: Request | None = None
        self._parsed: Request | None = None  # a head llhttp may still refuse (its framing)
        self._error: HttpRefusal | None = None
        #: between a request's first byte and its last
        self.in_message = False
        self._in_head = False
        self._raw = 0  # bytes of the current request, counted by whole feeds
        self._completed = False  # a request ended during this feed
        #: no more HTTP on this connection: the parser switched protocols or was refused
        self.done = False

    @property
    def refusal(self) -> HttpRefusal | None:
        """Why the bytes after the last request parsed were refused, if they were."""
        return self._error

    def next(self) -> Request | None:
        """The next request whose head is complete, None when more bytes are needed; raises
        :class:`HttpRefusal` when the bytes after the last request given were refused."""
        if self._ready:
            return self._ready.popleft()
        if self._error is not None:
            raise self._error
        return None

    def feed(self, data: bytes) -> None:
        """Parse ``data``, the next bytes of the connection (ignored once :attr:`done`)."""
        if self.done:
            return
        self._completed = False
        try:
            self._parser.feed_data(data)
        except httptools.HttpParserUpgrade as switched:
            self.done = True
            if self._current is not None:
                self._current.upgrade = True
                self._current.trailing = data[switched.args[0]:]
            self._release()
            return
        except httptools.HttpParserCallbackError as exc:
            self.done = True
            cause = exc.__context__
            if isinstance(cause, _Stop):
                return
            if isinstance(cause, HttpRefusal):
                self._error = cause
                return
            if cause is None:
                raise
            raise cause from None  # a defect of a callback, not a bad request
        except httptools.HttpParserError as exc:
            self.done = True
            self._error = _refusal(exc)
            return
        self._release()
        current = self._current
        if not self.in_message or current is None:
            return
        # The request goes on past this feed: bound what it has taken so far. A feed in which no
        # request ended is the current request's alone (else the lines and the body counted as
        # they came bound it, to within one feed).
        if not self._completed:
            self._raw += len(data)
        if self._in_head:
            if max(self._raw, current.size) > self.max_header_bytes:
                self.done = True
                self._error = HttpRefusal(431, "request headers too large")
        elif self._raw > 2 * self.max_body_bytes + self.max_header_bytes:
            # a body in tiny chunks, or endless trailers: more bytes than the bound's body may take
            self.done = True
            current.too_large = True

    # -- httptools' callbacks --

    def on_message_begin(self) -> None:
        self._current = Request()
        self.in_message = self._in_head = True
        self._raw = 0

    def on_url(self, url: bytes) -> None:
        req = self._current
        assert req is not None
        req.target += url
        req.size += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        req = self._current
        assert req is not None
        name = name.lower()
        value = value.rstrip(b" \t")  # llhttp leaves the whitespace after a value; h11 did not
        req.headers.append((name, value))
        req.fields[name] = value
        req.size += len(name) + len(value) + 4
        if req.size > self.max_header_bytes:  # (trailers after a chunked body count too)
            raise HttpRefusal(431, "request headers too large")
        if name == b"upgrade" and value.lower() == b"websocket":
            req.websocket = True

    def on_headers_complete(self) -> None:
        req = self._current
        assert req is not None
        self._in_head = False
        parser = self._parser
        if req.size > self.max_header_bytes:
            raise HttpRefusal(431, "request headers too large")
        if not req.target.isascii():  # llhttp takes bytes over 0x7f; h11 (and RFC 9112) do not
            raise HttpRefusal(400, "illegal request line")
        version = parser.get_http_version()
        if version == "1.1":
            if b"host" not in req.fields:
                raise HttpRefusal(400, "Missing mandatory Host: header")
            req.keep_alive = parser.should_keep_alive()
        req.method = parser.get_method()
        length = req.fields.get(b"content-length")
        if length is not None:  # llhttp refused it unless it is a number
            req.content_length = int(length)
            if req.content_length > self.max_body_bytes:  # refused before the body is read
                req.too_large = True
                self._ready.append(req)
                raise _Stop
        # given out once llhttp has taken its framing (Content-Length with Transfer-Encoding,
        # say, it refuses after this callback): at its first body bytes, its end or the feed's
        self._parsed = req

    def _release(self) -> None:
        if self._parsed is not None:
            self._ready.append(self._parsed)
            self._parsed = None

    def on_body(self, data: bytes) -> None:
        self._release()
        req = self._current
        assert req is not None
        req._received += len(data)
        if req._received > self.max_body_bytes:
            req.too_large = True
            raise _Stop
        req._parts.append(data)

    def on_message_complete(self) -> None:
        self._release()
        assert self._current is not None
        self._current.complete = True
        self.in_message = False
        self._completed = True


def _refusal(exc: httptools.HttpParserError) -> HttpRefusal:
    """What llhttp's refusal ``exc`` is answered with."""
    why = str(exc)
    if "overflow" in why.lower() and "content-length" in why.lower():
        return HttpRefusal(413, why)  # a length too large to count is over the body bound
    return HttpRefusal(400, why)


def response_head(status: int, headers: list[tuple[bytes, bytes]], length: int, json: bool, close: bool) -> bytes:
    """The head of an answer with ``length`` bytes of body, as h11 wrote it: the status line
    (no reason phrase), ``content-type: application/json`` first when ``json``, then
    ``content-length``, ``headers`` in their order and ``connection: close`` last when ``close``."""
    lines = [b"HTTP/1.1 %d \r\ncontent-type: application/json\r\ncontent-length: %d\r\n" % (status, length)
             if json else b"HTTP/1.1 %d \r\ncontent-length: %d\r\n" % (status, length)]
    lines += [b"%s: %s\r\n" % header for header in headers]
    if close:
        lines.append(b"connection: close\r\n")
    lines.append(b"\r\n")
    return b"".join(lines)
