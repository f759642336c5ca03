"""HTTP load: wrk at N keep-alive connections, or (wrk missing) a small Python client process.

``python -m bench.httpload PORT METHOD PATH TOKEN SECONDS CONNECTIONS [BODY]`` is the fallback
client: it prints requests/s. It is much slower than wrk, so its figures say less; the table
names the tool that made each figure.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import trio

from .procs import PY, Pinning

#: wrk's script for a POST: the body as a Lua long string
WRK_POST = 'wrk.method = "POST"\nwrk.body = [[{body}]]\nwrk.headers["Content-Type"] = "application/json"\n'


def tool() -> str:
    return "wrk" if shutil.which("wrk") else "python client"


def requests_per_second(port: int, method: str, path: str, tok: str | None, seconds: float, connections: int,
                        pinning: Pinning, body: bytes = b"") -> float:
    """Requests/s of ``method path`` at ``connections`` keep-alive connections for ``seconds``;
    the load tool runs on the load generator's cores. Every answer must be a 200."""
    with tempfile.TemporaryDirectory() as tmp:
        if shutil.which("wrk"):
            args = ["wrk", "-t1", f"-c{connections}", f"-d{max(1, round(seconds))}s", "--latency", f"http://127.0.0.1:{port}{path}"]
            if tok:
                args += ["-H", f"Authorization: Bearer {tok}"]
            if method == "POST":
                script = Path(tmp) / "post.lua"
                script.write_text(WRK_POST.format(body=body.decode()))
                args += ["-s", str(script)]
            out = subprocess.run(args, capture_output=True, text=True, check=True, preexec_fn=pinning.load_preexec())
            if "Non-2xx or 3xx responses" in out.stdout:
                raise RuntimeError(f"wrk saw errors:\n{out.stdout}")
            for line in out.stdout.splitlines():
                if line.startswith("Requests/sec:"):
                    return float(line.split()[1])
            raise RuntimeError(out.stdout)
        out = subprocess.run([PY, "-m", "bench.httpload", str(port), method, path, tok or "", str(seconds),
                              str(connections), body.decode()], capture_output=True, text=True, check=True,
                             preexec_fn=pinning.load_preexec())
        return float(out.stdout.strip())


async def main(port: int, method: str, path: str, tok: str, seconds: float, connections: int, body: str) -> None:
    payload = body.encode()
    head = f"{method} {path} HTTP/1.1\r\nHost: x\r\n" + (f"Authorization: Bearer {tok}\r\n" if tok else "")
    if method == "POST":
        head += f"Content-Type: application/json\r\nContent-Length: {len(payload)}\r\n"
    raw = head.encode() + b"\r\n" + payload
    done = [0]
    deadline = time.perf_counter() + seconds

    async def conn() -> None:
        s = await trio.open_tcp_stream("127.0.0.1", port)
        buf = b""
        while time.perf_counter() < deadline:
            await s.send_all(raw)
            while True:
                head_bytes, sep, rest = buf.partition(b"\r\n\r\n")
                if sep:
                    if not head_bytes.startswith(b"HTTP/1.1 200"):
                        raise RuntimeError(head_bytes.decode(errors="replace"))
                    length = int(head_bytes.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
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
    trio.run(main, int(sys.argv[1]), sys.argv[2], sys.argv[3], sys.argv[4], float(sys.argv[5]), int(sys.argv[6]),
             sys.argv[7] if len(sys.argv) > 7 else "")
