"""The fault-injection harness: a real server to break, the faults, and seeded schedules.

Everything here speaks to the server through its public protocol (HTTP, WebSocket, the admin
fault route), except :class:`InProcessServer`, which builds the server in the test's own trio
run. The pytest plugin (``orchestra.testing``) wraps these in fixtures; docs/testing.md shows
them at work. Guarantees:

- A server is real: the listening socket on loopback port 0, a SQLite store in a data dir of
  its own, real JWTs signed with that server's key, fault injection on, rate limits off.
- :class:`FaultSchedule` is a pure function of its seed and arguments: the same seed gives the
  same steps, so a failing run is replayed by running it again with that seed.
- :class:`Faults` keeps every fault it injected (``injected``), in order, for the report of a
  failing test.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import random
import secrets
import signal
import subprocess
import sys
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import orjson
import trio

from ..actors.profiles import Profiles
from ..actors.system import ActorSystem, SystemConfig
from . import http_client
from .api import Api, ApiConfig
from .auth import Auth, load_secret
from .client import Client, ClientConfig, connect
from .http_client import HttpResponse
from .server import Server, ServerConfig

__all__ = [
    "FAULT_POINTS",
    "FaultRefused",
    "FaultSchedule",
    "FaultStep",
    "Faults",
    "InProcessServer",
    "ServerHandle",
    "ServerProcess",
]

#: the points a crash can be armed at, by target family ("now" is every target's)
FAULT_POINTS = {"store": ("next_write",), "project": ("next_write", "mid_fanout", "during_wait")}

#: bound of one request of the harness itself (a request not answered by then raises)
REQUEST_TIMEOUT = 30.0


class ServerHandle:
    """What a test holds of a running server: where it is, tokens for it, requests, faults."""

    host = "127.0.0.1"
    port: int
    data_dir: Path
    auth: Auth

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def token(
        self,
        project: str = "p1",
        agent_type: str = "python-specialist",
        sub: str | None = None,
        *,
        admin: bool = False,
        permissions: list[str] | None = None,
        ttl: float = 3600,
    ) -> str:
        """A JWT this server accepts, for any agent type (its profile's permissions unless
        ``permissions`` says otherwise). ``sub`` defaults to ``<agent_type>-1``."""
        return self.auth.mint(sub=sub or f"{agent_type}-1", agent_type=agent_type, project_id=project,
                              ttl=ttl, permissions=permissions, admin=admin)

    def admin_token(self) -> str:
        """An all-projects admin token (``project_id: "*"``), as the dashboard's."""
        return self.token("*", agent_type="harness", sub="harness-admin", admin=True)

    async def request(
        self, method: str, path: str, token: str | None = None, body: Any = None,
        *, timeout: float = REQUEST_TIMEOUT,
    ) -> HttpResponse:
        """One HTTP request on a new connection; raises ``trio.TooSlowError`` after ``timeout``."""
        data = orjson.dumps(body) if body is not None else b""
        with trio.fail_after(timeout):
            return await http_client.request(self.host, self.port, method, path, token=token, body=data)

    @asynccontextmanager
    async def client(
        self, project: str = "p1", agent_type: str = "python-specialist", sub: str | None = None,
        *, config: ClientConfig | None = None, **token_args: Any,
    ) -> AsyncIterator[Client]:
        """An SDK client (``orchestra.client``) with a token for ``agent_type`` in ``project``."""
        async with connect(self.url, self.token(project, agent_type, sub, **token_args), config=config) as c:
            yield c

    @property
    def faults(self) -> Faults:
        """The faults of this server (one :class:`Faults`, keeping what it injected)."""
        faults: Faults | None = getattr(self, "_faults", None)
        if faults is None:
            faults = self._faults = Faults(self)
        return faults


@dataclass(frozen=True)
class FaultStep:
    """One fault of a schedule: ``after`` seconds from the schedule's start."""

    after: float
    target: str
    kind: str = "crash"
    at: str = "now"
    ms: int = 0

    def body(self) -> dict[str, Any]:
        out: dict[str, Any] = {"target": self.target, "kind": self.kind}
        if self.at != "now":
            out["at"] = self.at
        if self.kind == "delay":
            out["ms"] = self.ms
        return out


@dataclass(frozen=True)
class FaultSchedule:
    """Faults at chosen times, drawn from a seed: the same seed, the same schedule."""

    seed: int
    steps: tuple[FaultStep, ...]

    @classmethod
    def generate(
        cls,
        seed: int,
        targets: Sequence[str],
        *,
        count: int = 5,
        within: float = 2.0,
        kinds: Sequence[str] = ("crash",),
        points: Sequence[str] = ("now",),
        max_delay_ms: int = 200,
    ) -> FaultSchedule:
        """``count`` faults spread over ``within`` seconds, each on a target drawn from
        ``targets``, of a kind drawn from ``kinds``; a crash is armed at a point drawn from
        ``points`` when its target has that point (else it is a crash now)."""
        if not targets:
            raise ValueError("a schedule needs at least one target")
        rng = random.Random(seed)
        times = sorted(round(rng.uniform(0, within), 3) for _ in range(count))
        steps = []
        for after in times:
            target = rng.choice(list(targets))
            kind = rng.choice(list(kinds))
            at = rng.choice(list(points))
            if kind != "crash" or at not in FAULT_POINTS.get(target.split(":", 1)[0], ()):
                at = "now"
            ms = rng.randint(10, max_delay_ms) if kind == "delay" else 0
            steps.append(FaultStep(after, target, kind, at, ms))
        return cls(seed, tuple(steps))

    def describe(self) -> str:
        """The schedule as one JSON line (for a failing test's report)."""
        return json.dumps({"seed": self.seed, "steps": [asdict(s) for s in self.steps]})


@dataclass
class Faults:
    """Faults injected into one server through ``POST /api/admin/faults`` (the server runs
    with fault injection on)."""

    server: ServerHandle
    #: every fault answered ``injected``, in order: (seconds since the first, body)
    injected: list[dict[str, Any]] = field(default_factory=list)

    async def inject(self, body: dict[str, Any]) -> dict[str, Any]:
        """Inject one fault (the route's body); raises :class:`FaultRefused` unless injected."""
        r = await self.server.request("POST", "/api/admin/faults", self.server.admin_token(), body)
        answer = r.json()
        if r.status != 200 or not isinstance(answer, dict) or answer.get("injected") is not True:
            raise FaultRefused(f"fault {body} refused: {r.status} {r.body[:300]!r}")
        self.injected.append(body)
        return answer

    async def crash(self, target: str, *, at: str = "now", settle: float | None = None) -> dict[str, Any]:
        """Crash ``target`` now (after the messages already in its mailbox), or arm the crash
        at a point of its code: ``next_write`` (store, project), ``mid_fanout`` or
        ``during_wait`` (project).

        A crash is a message: one injected while the actor is still restarting from the
        last lands in its mailbox, and one queued behind a crash is dropped with the rest of
        that mailbox. With ``settle`` (seconds), a crash now returns only once ``/status``
        counts it, so that crashes in a row each happen (raises ``trio.TooSlowError`` if not).
        """
        body: dict[str, Any] = {"target": target, "kind": "crash"}
        if at != "now":
            body["at"] = at
        before = await self.crashes() if settle is not None else 0
        answer = await self.inject(body)
        if settle is not None and at == "now":
            with trio.fail_after(settle):
                while True:  # polled: the count is the server's, seen through /status
                    if await self.crashes() > before:
                        break
                    await trio.sleep(0.01)
        return answer

    async def crashes(self) -> int:
        """The server's count of actor crashes (``/status``)."""
        status = (await self.server.request("GET", "/status")).json()
        assert isinstance(status, dict)
        return int(status["actors"]["crashes"])

    async def delay(self, target: str, ms: int) -> dict[str, Any]:
        """Stall ``target`` for ``ms`` milliseconds once the messages before it are served."""
        return await self.inject({"target": target, "kind": "delay", "ms": ms})

    async def disk(self, state: str) -> dict[str, Any]:
        """The store's disk: ``"full"``, ``"read_only"`` (every write answers 503, nothing is
        stored) or ``"ok"`` again."""
        kinds = {"full": "disk_full", "read_only": "disk_read_only", "ok": "disk_ok"}
        if state not in kinds:
            raise ValueError(f"disk state must be one of {sorted(kinds)}")
        return await self.inject({"target": "store", "kind": kinds[state]})

    async def run(self, schedule: FaultSchedule, *, strict: bool = False) -> list[FaultStep]:
        """Inject the schedule's steps at their times; returns the steps injected. A target
        not running at its time (a project not started yet) is skipped unless ``strict``."""
        done = []
        start = trio.current_time()
        for step in schedule.steps:
            await trio.sleep_until(start + step.after)
            try:
                await self.inject(step.body())
            except FaultRefused:
                if strict:
                    raise
                continue
            done.append(step)
        return done


class FaultRefused(Exception):
    """The server did not inject a fault (not running with fault injection, unknown target)."""


class InProcessServer(ServerHandle):
    """The whole server in the test's trio run, on loopback port 0, over ``data_dir``.

    ``start`` returns once it accepts connections; ``stop`` shuts it down as SIGTERM does
    (WebSockets closed with 1001, in-flight work given ``grace`` seconds, every spawned agent
    ended) and returns once every one of its tasks has ended.
    """

    def __init__(
        self,
        data_dir: Path,
        *,
        profiles: Profiles | None = None,
        root: Path | None = None,
        roots: dict[str, Path] | None = None,
        secret: bytes | None = None,
        rate_limits: bool = False,
        max_body_bytes: int = 1024 * 1024,
        max_restarts: int = 20,
        restart_period: float = 60.0,
        server_config: ServerConfig | None = None,
    ) -> None:
        self.data_dir = Path(data_dir)
        self.profiles = profiles or Profiles()
        self.data_dir.mkdir(parents=True, exist_ok=True)
        secret = secret or load_secret(self.data_dir, create=True)  # as `orchestra serve` makes it
        self.auth = Auth(secret, self.profiles)
        self.system = ActorSystem(SystemConfig(
            data_dir=self.data_dir, profiles=self.profiles, roots=dict(roots or {}),
            default_root=root or Path.cwd(), max_restarts=max_restarts, restart_period=restart_period,
        ))
        self.api = Api(self.system, self.auth, ApiConfig(
            rate_limits=rate_limits, fault_injection=True, max_body_bytes=max_body_bytes))
        # the HTTP/WebSocket edge's limits and timeouts (``server_config`` overrides all but the body bound)
        edge = dataclasses.replace(server_config or ServerConfig(), max_body_bytes=max_body_bytes)
        self.server = Server(self.api, edge)
        self.port = 0
        self._scope: trio.CancelScope | None = None
        self._done = trio.Event()

    async def start(self, nursery: trio.Nursery) -> InProcessServer:
        listeners = await trio.open_tcp_listeners(0, host=self.host)
        self.port = listeners[0].socket.getsockname()[1]
        self.system.agents.hooks = self.api.spawn_hooks(lambda: self.url)
        await nursery.start(self._run, listeners)
        return self

    async def _run(self, listeners: list[trio.SocketListener], *,
                   task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            with trio.CancelScope() as self._scope:
                async with trio.open_nursery() as nursery:
                    await nursery.start(self.system.run)
                    await nursery.start(self.server.serve, listeners)
                    task_status.started()
                    await trio.sleep_forever()
        finally:
            self._done.set()

    @property
    def running(self) -> bool:
        return self._scope is not None and not self._done.is_set()

    async def stop(self, grace: float = 3.0, timeout: float = 60.0) -> None:
        """Shut down in order and wait until every task of the server has ended; raises
        ``trio.TooSlowError`` if that takes more than ``timeout`` seconds (never hangs a test)."""
        if self._scope is None or self._done.is_set():
            return
        with trio.fail_after(timeout):
            self.api.shutting_down = True
            self.server.stop_accepting()
            await self.server.close_sessions()
            await self.server.drain(grace=grace)
            self._scope.cancel()
            await self._done.wait()


class ServerProcess(ServerHandle):
    """``orchestra serve`` as a child process on loopback port 0 over ``data_dir``, with fault
    injection on and rate limits off. ``kill`` is SIGKILL (nothing flushed, nothing said);
    ``start`` again on the same data dir is a restart after a crash."""

    def __init__(self, data_dir: Path, *args: str, env: dict[str, str] | None = None) -> None:
        self.data_dir = Path(data_dir)
        self.args = args
        # the key is the data dir's (never a secret from the environment): tokens minted
        # here and by the process agree, across restarts
        self.env = {**os.environ, **(env or {}), "ORCHESTRA_DATA_DIR": str(self.data_dir)}
        self.env.pop("ORCHESTRA_JWT_SECRET", None)
        self.auth = Auth(_data_dir_secret(self.data_dir), Profiles())
        self.port = 0
        self.proc: trio.Process | None = None
        self.log_path = self.data_dir / "harness-server.log"
        #: the pid of every start, in order
        self.pids: list[int] = []

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    async def start(self, timeout: float = 30.0) -> ServerProcess:
        """Start (again) and return once it prints its listening line."""
        if self.proc is not None and self.proc.returncode is None:
            raise RuntimeError("the server process is still running")
        with self.log_path.open("a") as log:
            self.proc = proc = await trio.lowlevel.open_process(
                [sys.executable, "-m", "orchestra", "serve", "--port", "0", "--fault-injection",
                 "--no-rate-limits", *self.args],
                stdout=subprocess.PIPE, stderr=log, env=self.env, start_new_session=True,
            )
        self.pids.append(proc.pid)
        assert proc.stdout is not None
        line = b""
        with trio.move_on_after(timeout):
            while not line.endswith(b"\n"):
                chunk = await proc.stdout.receive_some(1)
                if not chunk:
                    break
                line += chunk
        text = line.decode(errors="replace")
        if not text.startswith("listening on http://"):
            await self.kill()
            raise RuntimeError(f"the server did not start: {text!r}; see {self.log_path}")
        self.port = int(text.strip().rsplit(":", 1)[1])
        return self

    async def kill(self) -> int:
        """SIGKILL the server alone (its spawned agents are left to the next start, as after
        a real crash); returns once it is gone."""
        return await self._end(signal.SIGKILL)

    async def terminate(self, timeout: float = 30.0) -> int:
        """SIGTERM: the orderly stop; returns its exit code."""
        return await self._end(signal.SIGTERM, timeout)

    async def _end(self, signum: int, timeout: float = 30.0) -> int:
        proc = self.proc
        if proc is None:
            raise RuntimeError("the server process was never started")
        if proc.returncode is None:
            proc.send_signal(signum)
        with trio.fail_after(timeout):
            code = await proc.wait()
        if proc.stdout is not None:
            await proc.stdout.aclose()
        return code

    async def restart(self) -> ServerProcess:
        """SIGKILL, then start again on the same data dir."""
        await self.kill()
        return await self.start()

    async def aclose(self) -> None:
        """Kill the process if it still runs (teardown)."""
        if self.proc is not None:
            with trio.CancelScope(shield=True):
                await self.kill()


def _data_dir_secret(data_dir: Path) -> bytes:
    """``<data_dir>/jwt.secret``, made (0600) as the server makes it if it is not there yet."""
    path = data_dir / "jwt.secret"
    if not path.exists():
        data_dir.mkdir(parents=True, exist_ok=True)
        with contextlib.suppress(FileExistsError):
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(secrets.token_urlsafe(48).encode())
    return path.read_bytes().strip()
