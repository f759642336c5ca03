"""Server instructions per HTTP request under callgrind: ``python -m bench.http_callgrind``.

Starts ``orchestra serve`` (and the bare h11 baseline) under ``valgrind --tool=callgrind``
with instrumentation off, warms it up, then counts the instructions of every thread of the
server over N requests sent one after another on one kept-alive connection
(``callgrind_control -i on`` / ``-d``). Instruction counts do not move with the machine's
load, unlike CPU time. ``--side NAME=PYTHONPATH`` adds an Orchestra whose package is found on
that path (older code to compare with); ``--rounds`` repeats every side in turn.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

from .procs import PY, SECRET, Pinning, Server, server, token

BODY = b'{"agent_id":"a","agent_type":"python-specialist","issue_id":"i","result":{"status":"success"}}'


def _exchange(sock: socket.socket, request: bytes, buf: bytearray) -> bytes:
    """Send ``request`` and read one whole answer (Content-Length framed) from ``sock``."""
    sock.sendall(request)
    while True:
        head_end = buf.find(b"\r\n\r\n")
        if head_end >= 0:
            head = bytes(buf[:head_end]).lower()
            length = int(head.split(b"content-length:", 1)[1].split(b"\r\n", 1)[0])
            end = head_end + 4 + length
            if len(buf) >= end:
                answer = bytes(buf[:end])
                del buf[:end]
                return answer
        data = sock.recv(65536)
        if not data:
            raise ConnectionError("the server closed the connection")
        buf += data


def _request(method: str, target: str, tok: str, body: bytes = b"") -> bytes:
    head = (f"{method} {target} HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {tok}\r\n"
            f"Content-Length: {len(body)}\r\n")
    if body:
        head += "Content-Type: application/json\r\n"
    return head.encode() + b"\r\n" + body


@contextlib.contextmanager
def _under_callgrind(args: list[str], out: Path, env: dict[str, str] | None) -> Iterator[Server]:
    valgrind = ["valgrind", "--tool=callgrind", "--instr-atstart=no", f"--callgrind-out-file={out}"]
    with server([*valgrind, *args], Pinning(frozenset(), frozenset()), env) as s:
        yield s


def _count(pid: int, out: Path, send: Callable[[], None], n: int) -> int:
    """Instructions of the process ``pid`` over ``n`` calls of ``send``."""
    subprocess.run(["callgrind_control", "-i", "on", str(pid)], check=True, capture_output=True)
    for _ in range(n):
        send()
    subprocess.run(["callgrind_control", "-d", str(pid)], check=True, capture_output=True)
    subprocess.run(["callgrind_control", "-i", "off", str(pid)], check=True, capture_output=True)
    for _ in range(100):
        dumps = sorted(out.parent.glob(out.name + ".*"), key=os.path.getmtime)
        if dumps:
            text = dumps[-1].read_text(errors="replace")
            for line in text.splitlines():
                if line.startswith(("summary:", "totals:")):
                    for dump in dumps:
                        dump.unlink()
                    return int(line.split()[1])
        time.sleep(0.2)
    raise RuntimeError("callgrind wrote no dump")


def measure(args: list[str], env: dict[str, str] | None, what: str, n: int, warm: int, orchestra: bool) -> float:
    """Instructions per request of ``what`` (get or post) for the server started by ``args``."""
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "cg.out"
        env = {**(env or {}), "ORCHESTRA_DATA_DIR": str(Path(tmp) / "data"), "ORCHESTRA_JWT_SECRET": SECRET}
        with _under_callgrind(args, out, env) as s:
            tok = token()
            sock = socket.create_connection(("127.0.0.1", s.port), timeout=120)
            buf = bytearray()
            target = "/api/results/x"
            if orchestra:
                answer = _exchange(sock, _request("POST", "/api/results", tok, BODY), buf)
                rid = answer.split(b'"id":"', 1)[1].split(b'"', 1)[0].decode()
                target = f"/api/results/{rid}"
            request = _request("GET", target, tok) if what == "get" else _request("POST", "/api/results", tok, BODY)

            def send() -> None:
                answer = _exchange(sock, request, buf)
                assert answer.startswith(b"HTTP/1.1 200"), answer[:200]

            for _ in range(warm):
                send()
            total = _count(s.pid, out, send, n)
            sock.close()
            return total / n


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.http_callgrind", description=__doc__)
    parser.add_argument("what", choices=["get", "post"])
    parser.add_argument("-n", type=int, default=500, help="requests counted")
    parser.add_argument("--warm", type=int, default=200, help="requests before counting")
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--side", action="append", default=[], metavar="NAME=PYTHONPATH",
                        help="another Orchestra, its package found on PYTHONPATH")
    parser.add_argument("--no-bare", action="store_true", help="skip the bare h11 baseline")
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed")
    serve = [PY, "-c", "import sys; from orchestra.transport.cli import main; sys.exit(main())",
             "serve", "--port", "0", "--no-rate-limits", "--log-level", "INFO"]
    sides: list[tuple[str, list[str], dict[str, str] | None, bool]] = [("this tree", serve, None, True)]
    for side in args.side:
        name, _, path = side.partition("=")
        # without the working directory on sys.path, whose orchestra/ would shadow the side's
        code = "import sys; sys.path.remove(''); from orchestra.transport.cli import main; sys.exit(main())"
        sides.append((name, [PY, "-c", code, *serve[3:]], {"PYTHONPATH": path}, True))
    if not args.no_bare:
        sides.append(("bare h11", [PY, "-m", "bench.baselines", "h11"], None, False))
    for r in range(args.rounds):
        for name, cmd, env, orchestra in sides:
            per = measure(cmd, env, args.what, args.n, args.warm, orchestra)
            print(f"round {r + 1}: {name}: {per / 1000:,.1f}k instructions per {args.what.upper()}", flush=True)


if __name__ == "__main__":
    main()
