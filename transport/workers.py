"""``orchestra serve --workers N``: N server processes on one port of one host.

The parent reserves the port (a socket bound with ``SO_REUSEPORT``, never listening: it takes no
connection, it only keeps the port this deployment's while the workers come and go), starts N
``orchestra serve`` processes with the same arguments, each listening on that port with
``SO_REUSEPORT`` (the kernel spreads new connections over them), prints the listening line once
every worker printed its own, and keeps them running: a worker that exits is started again after
a pause. SIGINT or SIGTERM is passed to every worker, which stop as a single server does; one
still running after ``stop_timeout`` seconds is killed.

Each worker is a whole server with its own actor tree; they share the PostgreSQL store (the
caller refuses more than one worker without it) and the data dir (its signing key: a token is
good on every worker).
"""

from __future__ import annotations

import logging
import signal
import socket
import subprocess
import sys

import trio

__all__ = ["reuse_port_listener", "serve_workers"]

log = logging.getLogger("orchestra")

#: pause before a worker that exited is started again
RESTART_PAUSE = 1.0
#: longest wait for a worker's listening line
START_TIMEOUT = 60.0


def _reuse_port_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind((host, port))
    except BaseException:
        sock.close()
        raise
    return sock


async def reuse_port_listener(host: str, port: int) -> trio.SocketListener:
    """A listener on ``host:port`` that other processes of the same user may share."""
    sock = _reuse_port_socket(host, port)
    sock.listen(socket.SOMAXCONN)
    return trio.SocketListener(trio.socket.from_stdlib_socket(sock))


async def serve_workers(n: int, host: str, port: int, stop_timeout: float) -> int:
    """Run ``n`` workers on ``host:port`` until SIGINT or SIGTERM; 1 if they could not start."""
    try:
        reserved = _reuse_port_socket(host, port)
    except OSError as exc:
        print(f"orchestra serve: cannot listen on {host}:{port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    with reserved:
        port = reserved.getsockname()[1]
        command = [sys.executable, "-m", "orchestra", *sys.argv[1:],
                   "--workers", "1", "--port", str(port), "--reuse-port"]
        workers = _Workers(n, command)
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as nursery:
                for i in range(n):
                    nursery.start_soon(workers.keep, i)
                with trio.move_on_after(START_TIMEOUT):
                    await workers.all_ready.wait()
                if not workers.all_ready.is_set() or workers.failed:
                    log.error("workers: not every worker started; stopping")
                    workers.stop(signal.SIGTERM)
                    await workers.wait_stopped(stop_timeout)
                    nursery.cancel_scope.cancel()
                    return 1
                shown = f"[{host}]" if ":" in host else host
                print(f"listening on http://{shown}:{port}", flush=True)
                async for signum in signals:
                    log.info("signal %s: stopping %d workers", signal.Signals(signum).name, n)
                    workers.stop(signum)
                    break
                await workers.wait_stopped(stop_timeout)
                nursery.cancel_scope.cancel()
    return 0


class _Workers:
    """The worker processes: each started, read until listening, waited for, started again."""

    def __init__(self, n: int, command: list[str]) -> None:
        self.command = command
        self.procs: list[trio.Process | None] = [None] * n
        self.ready = [False] * n
        self.all_ready = trio.Event()
        self.stopping = False
        self.failed = False
        self.stopped = trio.Event()
        self.running = 0

    async def keep(self, i: int) -> None:
        while not self.stopping:
            proc = await trio.lowlevel.open_process(self.command, stdout=subprocess.PIPE)
            self.procs[i] = proc
            self.running += 1
            try:
                line = await _first_line(proc)
                if line.startswith("listening on "):
                    if not self.ready[i]:
                        self.ready[i] = True
                        if all(self.ready):
                            self.all_ready.set()
                elif not self.ready[i]:  # its first start failed (its stderr says why)
                    self.failed = True
                    self.all_ready.set()
                await _discard(proc)  # until it ends: a full pipe must never block it
                code = await proc.wait()
            finally:
                self.running -= 1
                if self.stopping and self.running == 0:
                    self.stopped.set()
            if self.stopping or self.failed:
                return
            log.warning("workers: worker %d (pid %d) exited with %s; starting it again", i, proc.pid, code)
            await trio.sleep(RESTART_PAUSE)

    def stop(self, signum: int) -> None:
        self.stopping = True
        if self.running == 0:
            self.stopped.set()
        for proc in self.procs:
            if proc is not None and proc.returncode is None:
                proc.send_signal(signum)

    async def wait_stopped(self, timeout: float) -> None:
        with trio.move_on_after(timeout):
            await self.stopped.wait()
        for proc in self.procs:
            if proc is not None and proc.returncode is None:
                proc.kill()


async def _discard(proc: trio.Process) -> None:
    assert proc.stdout is not None
    while await proc.stdout.receive_some(65536):
        pass


async def _first_line(proc: trio.Process) -> str:
    """The worker's first line on stdout ('' if it ended first); the rest is discarded."""
    assert proc.stdout is not None
    data = b""
    while b"\n" not in data:
        chunk = await proc.stdout.receive_some(4096)
        if not chunk:
            break
        data += chunk
    return data.split(b"\n", 1)[0].decode(errors="replace")
