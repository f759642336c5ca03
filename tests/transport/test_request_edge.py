"""The request edge's shape: handlers see an OpContext only, no import loops, actors never
import the transport, the session owns its state and speaks close reasons (the transport has
the codes and the frames), /status figures come from the actors, and context actors start
through the broker like projects."""

from __future__ import annotations

import ast
import inspect
import typing
from pathlib import Path

import orjson
import trio
from orchestra.actors.broker import BrokerStats
from orchestra.actors.principal import Principal
from orchestra.actors.project import StoreResult
from orchestra.actors.records import validate_result_body
from orchestra.actors.session import CloseReason, Session
from orchestra.transport.errors import ApiError
from orchestra.transport.frames import error_frame, event_frame, notice_frame, reply_frame
from orchestra.transport.ops import OPS
from orchestra.transport.routes import Route, find_route, route_args
from orchestra.transport.websocket import CLOSE_CODES

from tests.conftest import result_body, start_context_server

ROOT = Path(__file__).resolve().parents[2]
PACKAGES = {"actors": "orchestra.actors", "transport": "orchestra.transport"}


def _modules() -> dict[str, Path]:
    """Every module of the package, by its installed name."""
    out = {}
    for folder, name in PACKAGES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            out[".".join([name, *parts])] = path
    return out


def _imports(module: str, path: Path, known: set[str]) -> set[str]:
    """The package's modules ``module`` imports, TYPE_CHECKING imports included."""
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom):
            base = package
            for _ in range(node.level - 1):
                base = base.rsplit(".", 1)[0]
            target = f"{base}.{node.module}" if node.level and node.module else (node.module or base)
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                found.add(sub if sub in known else target)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
    return {m for m in found if m in known and m != module}


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {m: _imports(m, p, known) for m, p in modules.items()}


def test_no_module_of_the_edge_is_in_an_import_loop():
    graph = _graph()
    edge = {m for m in graph if m.startswith("orchestra.transport") or m in (
        "orchestra.actors.session", "orchestra.actors.broker", "orchestra.actors.system",
        "orchestra.actors.principal",
    )}

    def reaches(start: str, goal: str) -> bool:
        seen, todo = set(), [start]
        while todo:
            m = todo.pop()
            if m == goal:
                return True
            if m not in seen:
                seen.add(m)
                todo.extend(graph[m])
        return False

    loops = sorted(f"{a} <-> {b}" for a in edge for b in graph[a] if reaches(b, a))
    assert not loops


def test_actors_never_import_the_transport():
    graph = _graph()
    wrong = sorted(f"{m} -> {t}" for m, ts in graph.items() if m.startswith("orchestra.actors")
                   for t in ts if t.startswith("orchestra.transport"))
    assert not wrong


def test_handlers_take_an_op_context_and_their_arguments_only():
    for name, op in OPS.items():
        params = list(inspect.signature(op.handler).parameters.values())
        assert [p.annotation for p in params] == ["OpContext", "dict[str, Any]"], name


def test_the_transport_never_writes_a_sessions_state():
    """Only the session's own methods change it: no field set, no container changed from outside."""
    writes = []
    for path in sorted((ROOT / "transport").glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            targets: list[ast.expr] = []
            if isinstance(node, ast.Assign):
                targets = node.targets
            elif isinstance(node, ast.AugAssign | ast.AnnAssign):
                targets = [node.target]
            elif (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                  and node.func.attr in ("add", "discard", "pop", "update", "clear", "append", "remove")
                  and isinstance(node.func.value, ast.Attribute)):
                targets = [node.func.value]
            for t in targets:
                root = t
                while isinstance(root, ast.Attribute | ast.Subscript):
                    root = root.value
                if t is not root and isinstance(root, ast.Name) and root.id in ("s", "session"):
                    writes.append(f"{path.name}:{node.lineno}")
    assert not writes


def test_the_session_speaks_reasons_not_codes_and_builds_no_frames():
    tree = ast.parse((ROOT / "actors" / "session.py").read_text())
    constants = [n.value for n in ast.walk(tree) if isinstance(n, ast.Constant)]
    assert not [c for c in constants if isinstance(c, bytes)]
    assert not [c for c in constants if isinstance(c, int) and 4000 <= c < 5000]
    names = [n.id for n in ast.walk(tree) if isinstance(n, ast.Name)]
    assert not [n for n in names if n.startswith("CLOSE_")]
    assert set(CLOSE_CODES) == set(CloseReason)  # every reason has its code
    assert typing.get_type_hints(Session.__init__)["principal"] is Principal


def test_frames_and_routes_are_pure():
    assert reply_frame("a", b'{"x":1}') == b'{"id":"a","ok":true,"result":{"x":1}}'
    assert event_frame("p1/3", b'{"n":1}') == b'{"op":"event","subscription":"p1/3","event":{"n":1}}'
    assert orjson.loads(notice_frame("auth.expiring", {"expires_in_seconds": 3})) == {
        "op": "auth.expiring", "expires_in_seconds": 3}
    err = orjson.loads(error_frame(7, ApiError(404, "NOT_FOUND", "no"), "req-1"))
    assert err["id"] == 7 and err["ok"] is False and err["error"]["request_id"] == "req-1"
    assert sorted(find_route("PUT", "/api/results")) == ["GET", "POST"]
    assert find_route("GET", "/nowhere") == []
    route = find_route("GET", "/api/context/iss%2D1/coder")
    assert route == Route("context.get", (("issue_id", "iss%2D1"), ("agent_type", "coder")), 200)
    assert route_args(route, "GET", b"", "task=x&issue_id=other", 32) == {
        "task": "x", "issue_id": "iss-1", "agent_type": "coder"}


async def test_status_figures_come_from_the_project_actors(server):
    """A write that reached the project actor by any way counts: the actor keeps the figure."""
    ref = await server.system.project("p1")
    await ref.call(StoreResult(validate_result_body(result_body(), "p1"), None), timeout=10)
    status = (await server.request("GET", "/status")).json()
    assert status["storage"]["results_stored_since_start"] == 1
    assert status["events"]["total_published"] == 1


async def test_context_actors_start_through_the_broker_once(nursery, tmp_path):
    h = await start_context_server(nursery, tmp_path)
    tok = h.token()
    async with trio.open_nursery() as clients:  # concurrent first uses start it once
        for _ in range(4):
            clients.start_soon(h.request, "GET", "/api/context/ISSUE-1/python-specialist", tok)
    assert (await h.request("GET", "/api/context/ISSUE-1/python-specialist", tok)).status == 200
    stats = await h.system.broker.call(BrokerStats(), timeout=5)
    assert stats["contexts_started"] == 1
    assert h.system.contexts.child_ids() == ["context:p1"]


async def test_one_registry_of_live_sessions(server):
    async with server.ws(server.token()) as ws:
        assert (await ws.call("ping"))["ok"]
        [session] = server.system.live_sessions
        assert session.principal.sub == "agent-1"
        assert (await server.request("GET", "/status")).json()["agents"]["connected"] == 1
    with trio.fail_after(5):
        await session.finished.wait()  # it left the registry before finishing
    assert not len(server.system.live_sessions)
    assert (await server.request("GET", "/status")).json()["agents"]["connected"] == 0


async def test_status_figures_outlive_a_project_restart(server):
    tok = server.token()
    assert (await server.request("POST", "/api/results", tok, result_body())).status == 200
    down = server.system.actor_ref("project:p1").monitor()
    assert server.system.actor_ref("project:p1").inject_fault("crash")
    with trio.fail_after(5):
        await down.wait()
        # served by the restarted actor, so the restart is done
        assert (await server.request("POST", "/api/results", tok, result_body())).status == 200
    status = (await server.request("GET", "/status")).json()
    assert status["actors"]["restarts"] == 1
    assert status["storage"]["results_stored_since_start"] == 2
    assert status["events"]["total_published"] == 2
