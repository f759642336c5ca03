"""A/B of the HTTP rows: ``python -m bench.http_ab [--side NAME=PYTHONPATH] [--rounds N]``.

Starts the bare h11 baseline and Orchestra (this tree, and with ``--side`` another Orchestra
whose package is found on that ``PYTHONPATH``: older code to compare with), pinned as the bench
pins them, and loads each in turn with ``GET /api/results/{id}`` and ``POST /api/results`` at
64 connections (wrk, as ``python -m bench``), in alternating rounds so a busy moment of a
shared machine falls on every side. Prints requests/s and the server's CPU per request.
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from pathlib import Path

from . import httpload
from .procs import PY, SECRET, Pinning, Server, baseline, server, token

BODY = b'{"agent_id":"a","agent_type":"python-specialist","issue_id":"i","result":{"status":"success"}}'


def _orchestra(stack: contextlib.ExitStack, tmp: Path, name: str, pinning: Pinning, path: str | None) -> Server:
    env = {"ORCHESTRA_DATA_DIR": str(tmp / name), "ORCHESTRA_JWT_SECRET": SECRET}
    code = "import sys; from orchestra.transport.cli import main; sys.exit(main())"
    if path is not None:  # the side's package, not the working directory's orchestra/
        env["PYTHONPATH"] = path
        code = "import sys; sys.path.remove(''); from orchestra.transport.cli import main; sys.exit(main())"
    args = [PY, "-c", code, "serve", "--port", "0", "--no-rate-limits", "--log-level", "INFO"]
    return stack.enter_context(server(args, pinning, env))


def _result_id(port: int, tok: str) -> str:
    import socket

    with socket.create_connection(("127.0.0.1", port)) as sock:
        sock.sendall(b"POST /api/results HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer %s\r\n"
                     b"Content-Length: %d\r\nConnection: close\r\n\r\n%s" % (tok.encode(), len(BODY), BODY))
        answer = b""
        while data := sock.recv(65536):
            answer += data
    return answer.split(b'"id":"', 1)[1].split(b'"', 1)[0].decode()


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m bench.http_ab", description=__doc__)
    parser.add_argument("--side", action="append", default=[], metavar="NAME=PYTHONPATH")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=4.0)
    parser.add_argument("--connections", type=int, default=64)
    args = parser.parse_args()
    pinning = Pinning.plan()
    pinning.pin_self()
    tok = token()
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        sides: list[tuple[str, Server, str]] = [("bare h11", stack.enter_context(baseline("h11", pinning)),
                                                 "/api/results/x")]
        for name, path in [("this tree", None), *(s.partition("=")[::2] for s in args.side)]:
            s = _orchestra(stack, Path(tmp), name, pinning, path)
            sides.append((name, s, f"/api/results/{_result_id(s.port, tok)}"))
        for r in range(args.rounds):
            for method in ("GET", "POST"):
                for name, s, target in sides:
                    cpu, t = s.cpu_seconds(), time.perf_counter()
                    rps = httpload.requests_per_second(s.port, method, target if method == "GET" else "/api/results",
                                                       tok if name != "bare h11" else None, args.seconds, args.connections, pinning,
                                                       BODY if method == "POST" else b"")
                    per = (s.cpu_seconds() - cpu) / (rps * (time.perf_counter() - t))
                    print(f"round {r + 1} {method:4} {name:>10}: {rps:9,.0f}/s, server CPU {per * 1e6:6.1f} µs a request",
                          flush=True)


if __name__ == "__main__":
    main()
