"""A small keep-alive HTTP load client (used when wrk is not installed): prints requests/s."""

from __future__ import annotations

import sys
import time

import trio


async def main(port: int, path: str, tok: str, seconds: float, connections: int) -> None:
    req = f"GET {path} HTTP/1.1\r\nHost: x\r\n" + (f"Authorization: Bearer {tok}\r\n" if tok else "") + "\r\n"
    raw = req.encode()
    done = [0]
    deadline = time.perf_counter() + seconds

    async def conn() -> None:
        s = await trio.open_tcp_stream("127.0.0.1", port)
        buf = b""
        while time.perf_counter() < deadline:
            await s.send_all(raw)
            while True:
                head, sep, rest = buf.partition(b"\r\n\r\n")
                if sep:
                    length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                    if len(rest) >= length:
                        buf = rest[length:]
                        break
                buf += await s.receive_some(65536)
            done[0] += 1
        await s.aclose()

    t = time.perf_counter()
    async with trio.open_nursery() as n:
        for _ in range(connections):
            n.start_soon(conn)
    print(done[0] / (time.perf_counter() - t))


if __name__ == "__main__":
    trio.run(main, int(sys.argv[1]), sys.argv[2], sys.argv[3], float(sys.argv[4]), int(sys.argv[5]))
