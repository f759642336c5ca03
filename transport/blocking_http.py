"""One HTTP/1.1 request over a blocking socket, for short-lived command-line clients.

``orchestra agent`` runs once per call of a script, so this module imports only ``_socket``
and ``time``: h11 would cost more start-up time than the whole request, and so does ``socket``
itself, which builds its enums of every constant at import (4 ms of CPU on the bench machine,
more than half of what curl spends on the whole request; bench/shell_client.py); its C core
``_socket`` is the same socket without that layer. ``ResponseReader`` is the sans-IO part (bytes
in, an answer out); ``request`` is the I/O loop around it.
"""

from __future__ import annotations

import _socket
import time

TYPE_CHECKING = False
if TYPE_CHECKING:
    from collections.abc import Sequence
    from typing import Any

__all__ = ["Answer", "BadResponse", "ConnectFailed", "ConnectionLost", "NoAnswerInTime", "ResponseReader", "connect",
           "query_string", "quote", "request"]


class ConnectFailed(OSError):
    """No connection could be made: nothing was sent."""


class ConnectionLost(OSError):
    """The connection failed once made (while sending or reading), or the answer was not HTTP:
    the request may have been received."""


class NoAnswerInTime(TimeoutError):
    """No connection, or no whole answer, within the time allowed; ``sent``: the request went out."""

    def __init__(self, sent: bool) -> None:
        super().__init__("no answer in time" if sent else "no connection in time")
        self.sent = sent


_SAFE = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")


def quote(text: str) -> str:
    """Percent-encode ``text`` for a path segment or a query value (UTF-8)."""
    return "".join(chr(b) if b in _SAFE else f"%{b:02X}" for b in text.encode("utf-8", "surrogateescape"))


def query_string(params: dict[str, Any]) -> str:
    pairs = [f"{quote(k)}={quote(str(v))}" for k, v in params.items() if v is not None]
    return "?" + "&".join(pairs) if pairs else ""


class Answer:
    """An HTTP answer: status, headers (names lower-case, the last of repeated ones), body."""

    __slots__ = ("status", "headers", "body")

    def __init__(self, status: int, headers: dict[str, str], body: bytes) -> None:
        self.status, self.headers, self.body = status, headers, body


class BadResponse(ValueError):
    """Bytes that are not an HTTP/1.1 answer."""


#: Bounds of an answer's head, so that a wrong peer cannot make this client buffer forever.
MAX_HEAD_BYTES = 64 * 1024


class ResponseReader:
    """Sans-IO reader of one HTTP/1.1 answer: ``feed`` it bytes (``b""`` at end of stream) until
    it returns the Answer. Bodies framed by Content-Length, chunked, or the end of the stream."""

    def __init__(self, method: str = "GET") -> None:
        self._buf = bytearray()
        self._head: tuple[int, dict[str, str]] | None = None
        self._bodyless = method == "HEAD"

    def feed(self, data: bytes) -> Answer | None:
        eof = not data
        self._buf += data
        if self._head is None:
            end = self._buf.find(b"\r\n\r\n")
            if end < 0:
                if eof or len(self._buf) > MAX_HEAD_BYTES:
                    raise BadResponse("incomplete or oversized response head")
                return None
            self._head = self._parse_head(bytes(self._buf[:end]))
            del self._buf[:end + 4]
        status, headers = self._head
        if self._bodyless or status in (204, 304) or 100 <= status < 200:
            return Answer(status, headers, b"")
        if "chunked" in headers.get("transfer-encoding", "").lower():
            body = self._dechunk(eof)
        elif "content-length" in headers:
            try:
                length = int(headers["content-length"])
            except ValueError:
                raise BadResponse("bad content-length") from None
            if len(self._buf) < length:
                if eof:
                    raise BadResponse("the connection closed inside the body")
                return None
            body = bytes(self._buf[:length])
        else:
            body = bytes(self._buf) if eof else None
        return None if body is None else Answer(status, headers, body)

    @staticmethod
    def _parse_head(head: bytes) -> tuple[int, dict[str, str]]:
        lines = head.decode("latin-1").split("\r\n")
        version, _, rest = lines[0].partition(" ")
        if not version.startswith("HTTP/1.") or not rest[:3].isdigit():
            raise BadResponse(f"not an HTTP/1.1 status line: {lines[0][:80]!r}")
        headers = {}
        for line in lines[1:]:
            name, sep, value = line.partition(":")
            if not sep:
                raise BadResponse(f"bad header line: {line[:80]!r}")
            headers[name.strip().lower()] = value.strip()
        return int(rest[:3]), headers

    def _dechunk(self, eof: bool) -> bytes | None:
        body, pos = bytearray(), 0
        while True:
            end = self._buf.find(b"\r\n", pos)
            if end < 0:
                break
            try:
                size = int(bytes(self._buf[pos:end]).split(b";")[0], 16)
            except ValueError:
                raise BadResponse("bad chunk size") from None
            if size == 0:  # the last chunk; complete once the trailers (unused) have ended
                rest = self._buf[end + 2:]
                if rest.startswith(b"\r\n") or b"\r\n\r\n" in rest:
                    return bytes(body)
                break
            if len(self._buf) < end + 2 + size + 2:
                break
            body += self._buf[end + 2:end + 2 + size]
            pos = end + 2 + size + 2
        if eof:
            raise BadResponse("the connection closed inside a chunked body")
        return None


def connect(host: str | bytes, port: int, timeout: float) -> _socket.socket:
    """A TCP connection to the first address of ``host`` that accepts one, as
    ``socket.create_connection`` makes it; else the last address's error (OSError; a
    TimeoutError when that one timed out)."""
    error: OSError | None = None
    for family, kind, proto, _, address in _socket.getaddrinfo(host, port, 0, _socket.SOCK_STREAM):
        sock = None
        try:
            sock = _socket.socket(family, kind, proto)
            sock.settimeout(timeout)
            sock.connect(address)
            return sock
        except OSError as exc:
            if sock is not None:
                sock.close()
            error = exc
    raise error if error is not None else OSError(f"no address for {host!r}")


def request(host: str, port: int, method: str, target: str, body: bytes | None,
            headers: Sequence[tuple[str, str]], *, timeout: float, connect_timeout: float = 10.0) -> Answer:
    """Send one request on a new connection (``connection: close``) and read the whole answer
    within ``timeout`` seconds. Raises ValueError (a line break in a header or the target,
    before connecting), ConnectFailed, NoAnswerInTime, ConnectionLost."""
    if "\r" in target or "\n" in target or any(c in "\r\n" for k, v in headers for c in k + v):
        raise ValueError("a header or the request target holds a line break")
    deadline = time.monotonic() + timeout
    try:
        # an ASCII host as bytes: a str would load the IDNA codec first (start-up time)
        address = host.encode("ascii") if host.isascii() else host
        sock = connect(address, port, min(timeout, connect_timeout))
    except TimeoutError:
        raise NoAnswerInTime(sent=False) from None
    except OSError as exc:
        raise ConnectFailed(exc.strerror or str(exc)) from None
    try:
        try:
            sock.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_NODELAY, 1)
            body = body or b""
            head = [f"{method} {target} HTTP/1.1", f"host: {host}:{port}", f"content-length: {len(body)}",
                    "connection: close", *(f"{k}: {v}" for k, v in headers)]
            if body:
                head.append("content-type: application/json")
            sock.sendall(("\r\n".join(head) + "\r\n\r\n").encode("utf-8", "surrogateescape") + body)
            reader = ResponseReader(method)
            while True:
                sock.settimeout(max(deadline - time.monotonic(), 0.001))
                answer = reader.feed(sock.recv(65536))
                if answer is not None:
                    return answer
        except TimeoutError:
            raise NoAnswerInTime(sent=True) from None
        except (OSError, BadResponse) as exc:
            raise ConnectionLost(str(exc)) from None
    finally:
        sock.close()
