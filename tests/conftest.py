"""Shared fixtures: a real server on port 0 over loopback, with real JWTs and a real SQLite file."""

from __future__ import annotations

import threading
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import orjson
import pytest
import trio
import trio_websocket
from orchestra.actors.profiles import Profiles
from orchestra.actors.project import ProjectConfig
from orchestra.actors.session import SessionLimits
from orchestra.actors.system import ActorSystem, SystemConfig
from orchestra.transport import http_client
from orchestra.transport.api import Api, ApiConfig
from orchestra.transport.auth import Auth
from orchestra.transport.http_client import HttpResponse
from orchestra.transport.server import Server, ServerConfig

SECRET = b"test-secret-0123456789-0123456789"


def pytest_terminal_summary(terminalreporter: Any) -> None:
    from tests.postgres import summary_line

    line = summary_line()
    if line is not None:
        terminalreporter.write_line(line, yellow=True)


Response = HttpResponse


class Harness:
    def __init__(self, port: int, api: Api, system: ActorSystem, server: Server, data_dir: Path) -> None:
        self.port = port
        self.api = api
        self.system = system
        self.server = server
        self.data_dir = data_dir

    def token(self, project: str = "p1", agent_type: str = "python-specialist", sub: str = "agent-1", **kw: Any) -> str:
        return self.api.auth.mint(sub=sub, agent_type=agent_type, project_id=project, **kw)

    async def request(
        self, method: str, path: str, token: str | None = None, body: Any = None,
        raw: bytes | None = None, headers: list[tuple[str, str]] | None = None,
    ) -> Response:
        with trio.fail_after(30):
            return await self._request(method, path, token, body, raw, headers)

    async def _request(
        self, method: str, path: str, token: str | None, body: Any,
        raw: bytes | None, headers: list[tuple[str, str]] | None,
    ) -> Response:
        data = raw if raw is not None else (orjson.dumps(body) if body is not None else b"")
        return await http_client.request(
            "127.0.0.1", self.port, method, path, token=token, body=data, headers=headers
        )

    @asynccontextmanager
    async def ws(self, token: str | None = None):
        headers = [("authorization", f"Bearer {token}")] if token else []
        async with trio_websocket.open_websocket(
            "127.0.0.1", self.port, "/ws", use_ssl=False, extra_headers=headers
        ) as ws:
            yield WsClient(ws)


class WsClient:
    def __init__(self, ws: trio_websocket.WebSocketConnection) -> None:
        self.ws = ws
        self.next_id = 0
        self.pushed: list[dict[str, Any]] = []

    async def send(self, op: str, **args: Any) -> Any:
        self.next_id += 1
        await self.ws.send_message(orjson.dumps({"id": self.next_id, "op": op, **args}).decode())
        return self.next_id

    async def recv(self) -> dict[str, Any]:
        return orjson.loads(await self.ws.get_message())

    async def call(self, op: str, **args: Any) -> dict[str, Any]:
        rid = await self.send(op, **args)
        while True:
            msg = await self.recv()
            if msg.get("id") == rid and "ok" in msg:
                return msg
            self.pushed.append(msg)

    async def closed(self) -> trio_websocket.CloseReason:
        """Read (and drop) messages until the server closes the connection; its close reason."""
        try:
            while True:
                await self.ws.get_message()
        except trio_websocket.ConnectionClosed as exc:
            return exc.reason

    async def next_event(self) -> dict[str, Any]:
        if self.pushed:
            return self.pushed.pop(0)
        while True:
            msg = await self.recv()
            if msg.get("op") == "event":
                return msg


def small_code_base(path: Path) -> Path:
    """A code base of one file, for a server whose requests build contexts (spawns) that a
    test is not about: they must not depend on (nor wait for a scan of) this repository's
    working tree, a server's default root."""
    (path / "src").mkdir(parents=True, exist_ok=True)
    (path / "src" / "app.py").write_text("def main():\n    return 1\n")
    return path


async def start_server(
    nursery: trio.Nursery,
    data_dir: Path,
    *,
    rate_limits: bool = False,
    fault_injection: bool = True,
    max_body_bytes: int = 1024 * 1024,
    session: SessionLimits | None = None,
    profiles: Profiles | None = None,
    max_events: int = 10_000,
    max_waiters: int = 10_000,
    max_wait_positions: int = 100_000,
    context_sweep: float = 2.0,
    spawn_hooks: bool = True,
    root: Path | None = None,
) -> Harness:
    """``root``: every project's code base (default: the working directory, this repository,
    whose first context scan is slow on a loaded machine: give a small one where a test's
    requests build contexts, e.g. spawns, that are not what it is about)."""
    profiles = profiles or Profiles()
    system = ActorSystem(SystemConfig(data_dir=data_dir, profiles=profiles, context_sweep=context_sweep,
                                      **({"default_root": root} if root is not None else {}),
                                      project=ProjectConfig(max_events=max_events, max_waiters=max_waiters,
                                                            max_wait_positions=max_wait_positions)))
    api = Api(system, Auth(SECRET, profiles), ApiConfig(
        rate_limits=rate_limits, fault_injection=fault_injection, max_body_bytes=max_body_bytes))
    server = Server(api, ServerConfig(max_body_bytes=max_body_bytes, session=session or SessionLimits()))
    listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
    port = listeners[0].socket.getsockname()[1]
    if spawn_hooks:  # as `orchestra serve` does, once its port is known
        system.agents.hooks = api.spawn_hooks(lambda: f"http://127.0.0.1:{port}")
    await nursery.start(system.run)
    await nursery.start(server.serve, listeners)
    return Harness(port, api, system, server, data_dir)


async def start_context_server(nursery: trio.Nursery, tmp_path: Path) -> Harness:
    """A server whose project p1 reads the handmade repository of tests/actors/test_context.py."""
    from tests.actors.test_context import make_repo

    h = await start_server(nursery, tmp_path / "d")
    h.system.config.roots["p1"] = make_repo(tmp_path / "repo")
    return h


class HeldBuilds:
    """Context answers for ``task`` are built only once released (the build waits on the
    index's thread); ``tasks`` lists the task of every build started. Leaving a ``with``
    block releases them."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch, task: str) -> None:
        from orchestra.actors.context.engine import ContextEngine

        self.started, self._released = threading.Event(), threading.Event()
        self.tasks: list[str] = []
        original = ContextEngine.build

        def build(engine: ContextEngine, issue_id: str, agent_type: str, built: str, *args: Any, **kwargs: Any) -> Any:
            self.tasks.append(built)
            if built == task:
                self.started.set()
                self._released.wait(10)
            return original(engine, issue_id, agent_type, built, *args, **kwargs)

        monkeypatch.setattr(ContextEngine, "build", build)

    async def wait_started(self) -> bool:
        return await trio.to_thread.run_sync(self.started.wait, 5)

    def release(self) -> None:
        self._released.set()

    def __enter__(self) -> HeldBuilds:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


@pytest.fixture
async def server(nursery, tmp_path):
    return await start_server(nursery, tmp_path / "data")


def result_body(agent_id: str = "agent-1", issue: str = "iss-1", status: str = "success", **extra: Any) -> dict[str, Any]:
    return {"agent_id": agent_id, "agent_type": "python-specialist", "issue_id": issue,
            "result": {"status": status, **extra}}
