"""Hostile input, in CI: no request can take the server down (issue 9).

Every HTTP route (from the server's ``_ROUTES``, plus /health, /status, /metrics and the routes
PROTOCOL.md names) and every WebSocket op (from ``OPS``, plus the auth frame and frames that are
not requests) is driven with hostile values: nesting depth, huge numbers, hostile strings,
wrong types, forged cursors, dates at the edges, ids, tokens, encodings. Each value is sent
``REPEATS`` times, past the supervisors' intensity of a server built with a low one, and each
example runs on a fresh in-process server (so a failure names the value that caused it).

Per answer: never a 5xx (503 only where PROTOCOL.md documents it for that op), every refusal is
the error object, a WebSocket error carries the request's id (or null), and a connection is
closed only with a documented code. After each example: ``/health`` healthy, no actor restart
(nor crash, where the tree counts them), and a bystander subscriber in the same project and one
in another project, subscribed before, are still open and receive a marker event.

Profiles: CI by default (a few examples per target, no shrinking; the known-bad values of the
issue always run first); ``HYPOTHESIS_PROFILE=long`` for many more examples, with shrinking.
``ORCHESTRA_HOSTILE_FINDINGS=FILE`` appends every finding to FILE, for a report of a whole run.
"""

from __future__ import annotations

import base64
import copy
import itertools
import os
import re
import struct
import subprocess
import tempfile
from collections.abc import Awaitable, Callable
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import quote

import h11
import orjson
import pytest
import trio
import trio_websocket
from hypothesis import HealthCheck, Phase, example, given, settings
from hypothesis import strategies as st
from orchestra.actors.profiles import BUILTIN, AgentProfile, Profiles
from orchestra.actors.project import ProjectConfig
from orchestra.actors.system import ActorSystem, SystemConfig
from orchestra.transport.api import Api, ApiConfig
from orchestra.transport.auth import Auth
from orchestra.transport.ops import OPS
from orchestra.transport.server import _ROUTES, Server, ServerConfig

from tests.conftest import SECRET, Harness, Response, WsClient, result_body
from tests.transport.hostile_values import (
    BAD_QUERIES,
    BAD_SEGMENTS,
    FIELD_CLASSES,
    Deep,
    depth_of,
    encoding_cases,
    to_json,
    token_cases,
)

# -- the server under test --

MAX_RESTARTS = 3  # the supervisors' intensity: 3 restarts in 60 s, then the supervisor gives up
REPEATS = MAX_RESTARTS + 2  # each hostile value is sent this often: past the intensity
MAX_SUBSCRIPTIONS = 32  # per project, low so that one client reaches it
MAX_BODY = 1024 * 1024
ANSWER_TIMEOUT = 10.0  # a request not answered by then is a finding ("no answer")

LONG = os.environ.get("HYPOTHESIS_PROFILE") == "long"
SETTINGS = settings(
    max_examples=40 if LONG else 2,  # CI: with the explicit example, 3 per target (~35 s in all)
    deadline=None,
    derandomize=not LONG,  # CI: the same examples every run
    database=None,
    phases=(Phase.explicit, Phase.reuse, Phase.generate, Phase.shrink) if LONG
    else (Phase.explicit, Phase.generate),
    suppress_health_check=list(HealthCheck),
)

P1, P2 = "p1", "p2"
SPAWNABLE = "hostile-spawnable"  # its command: `true`
AGENT_TYPE = "chief-architect"  # the profile with every permission but admin: input reaches the op
TOKENS = token_cases(SECRET, P1, AGENT_TYPE)
#: tokens signed with the server's key whose claims are odd but not forged
ODD_BUT_SIGNED = {"exp 10**400", "exp 1e300", "exp 2**63", "iat 10**400", "nbf 10**400", "sub NUL", "sub 10k",
                  "agent_type huge"}
ENCODINGS = encoding_cases()
_AUTH = Auth(SECRET, Profiles())


def mint(project: str = P1, sub: str = "hostile-1", admin: bool = False) -> str:
    """A valid token of the server under test (every one shares the test secret)."""
    if admin:
        return _AUTH.mint(sub="hostile-admin", agent_type="dashboard", project_id="*", admin=True)
    return _AUTH.mint(sub=sub, agent_type=AGENT_TYPE, project_id=project)


# -- what every op takes: valid arguments, and the fields hostile values replace --


@dataclass(frozen=True)
class Spec:
    base: dict[str, Any]
    fields: tuple[tuple[str | int, ...], ...]
    admin: bool = False
    #: 503 UNAVAILABLE is documented for this op (a per-project bound), so it is no finding
    may_be_unavailable: bool = False


def _f(*paths: str) -> tuple[tuple[str | int, ...], ...]:
    return tuple(tuple(int(p) if p.isdigit() else p for p in path.split(".")) for path in paths)


_RESULT = result_body(agent_id="hostile-1", issue="iss-1", files=["src/app.py"])
_RESULT["agent_type"] = AGENT_TYPE

SPECS: dict[str, Spec] = {
    "ping": Spec({}, _f("extra")),
    "status": Spec({}, _f("project_id")),
    "result.store": Spec(_RESULT, _f(
        "agent_id", "agent_type", "issue_id", "project_id", "result", "result.status", "result.files",
        "timestamp", "idempotency_key",
    )),
    "result.store_batch": Spec({"results": [_RESULT]}, _f(
        "results", "results.0", "results.0.result", "results.0.issue_id", "results.0.result.status",
        "results.0.result.files",
    )),
    "result.get": Spec({"result_id": "r-1"}, _f("result_id", "project_id")),
    "result.query": Spec({"issue_id": "iss-1"}, _f(
        "issue_id", "agent_type", "agent_id", "status", "since", "until", "q", "limit", "cursor", "project_id",
    )),
    "event.publish": Spec({"event_type": "hostile.test", "data": {"n": 1}}, _f(
        "event_type", "topic", "data", "data.n", "correlation_id", "ttl_seconds", "round", "references",
        "project_id",
    )),
    "event.wait": Spec({"event_type": "hostile.test", "timeout": 0}, _f(
        "event_type", "timeout", "filter", "since", "limit", "project_id",
    )),
    "event.subscribe": Spec({"event_types": ["hostile.test"]}, _f(
        "event_types", "event_types.0", "topics", "filter", "since", "project_id",
    ), may_be_unavailable=True),
    "event.unsubscribe": Spec({"subscription": "s-1"}, _f("subscription")),
    "context.get": Spec({"issue_id": "iss-1", "agent_type": AGENT_TYPE, "max_bytes": 4096}, _f(
        "issue_id", "agent_type", "task", "max_bytes", "project_id",
    )),
    "cache.clear": Spec({"issue_id": "iss-1"}, _f("issue_id", "project_id")),
    "agent.spawn": Spec({"agent_type": SPAWNABLE, "issue_id": "iss-1"}, _f(
        "agent_type", "issue_id", "task", "context_requirements", "environment", "project_id",
    )),
    "agent.status": Spec({"agent_id": "a-1"}, _f("agent_id", "project_id")),
    "agent.list": Spec({"state": "running"}, _f("state", "agent_type", "issue_id", "project_id")),
    "agent.logs": Spec({"agent_id": "a-1", "tail": 10}, _f("agent_id", "tail", "project_id")),
    "agent.stop": Spec({"agent_id": "a-1", "grace_seconds": 0}, _f("agent_id", "grace_seconds", "project_id")),
    "auth.refresh": Spec({}, _f("token")),
    "admin.faults": Spec({"target": "store", "kind": "delay", "ms": 1}, _f("target", "kind", "ms"), admin=True),
}


@dataclass(frozen=True)
class HttpTarget:
    method: str
    path: str  # with "([^/]+)" for each of ``names``
    names: tuple[str, ...]
    op: str | None  # None: a route outside the op table (its fields are query parameters)

    @property
    def label(self) -> str:
        path = self.path
        for name in self.names:
            path = path.replace("([^/]+)", "{" + name + "}", 1)
        return f"{self.method} {path}"

    def spec(self) -> Spec:
        if self.op is not None:
            return SPECS[self.op]
        return Spec({}, _f("x", "limit", "project_id"))


HTTP_TARGETS: list[HttpTarget] = [
    *(HttpTarget(m, p.pattern, names, op) for m, p, op, names, _ in _ROUTES),
    HttpTarget("GET", "/health", (), None),
    HttpTarget("GET", "/status", (), None),
    HttpTarget("GET", "/metrics", (), None),
    HttpTarget("GET", "/openapi.json", (), None),
    HttpTarget("GET", "/asyncapi.json", (), None),
]
WS_OPS = sorted(name for name, op in OPS.items() if op.ws)


# -- talking to the server --


def _as_text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return to_json(value).decode("utf-8", "surrogatepass")


def _quote(value: Any) -> str:
    return quote(_as_text(value).encode("utf-8", "surrogatepass"), safe="")


def _with(base: dict[str, Any], path: tuple[str | int, ...], value: Any) -> dict[str, Any]:
    out = copy.deepcopy(base)
    node: Any = out
    for step in path[:-1]:
        node = node[step]
    node[path[-1]] = value
    return out


def http_request(target: HttpTarget, args: dict[str, Any], *, segment: str | None = None,
                 query: str | None = None) -> tuple[str, str, bytes]:
    """Method, request target and body for ``args`` on ``target``: path parameters in the path,
    the rest in the JSON body (POST) or the query string."""
    args = dict(args)
    path = target.path
    for name in target.names:
        seg = segment if segment is not None else _quote(args.pop(name, "x"))
        path = path.replace("([^/]+)", seg, 1)
    if target.method == "POST":
        return target.method, path + (f"?{query}" if query else ""), to_json(args)
    pairs = [f"{quote(k)}={_quote(v)}" for k, v in args.items()]
    if query:
        pairs.append(query)
    return target.method, path + ("?" + "&".join(pairs) if pairs else ""), b""


async def raw_http(port: int, method: str, target: str, token: str | None, body: bytes,
                   headers: list[tuple[bytes, bytes]] = ()) -> Response:
    """One request written byte for byte (h11 would refuse to send some hostile ones)."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        head = [b"%s %s HTTP/1.1" % (method.encode(), target.encode("utf-8", "surrogatepass")),
                b"host: test", b"content-length: %d" % len(body)]
        if token is not None:
            head.append(b"authorization: Bearer " + token.encode("utf-8", "surrogatepass"))
        head.extend(n + b": " + v for n, v in headers)
        await stream.send_all(b"\r\n".join(head) + b"\r\n\r\n" + body)
        conn = h11.Connection(h11.CLIENT)  # only to read the answer: told of a stand-in request
        conn.send(h11.Request(method=method, target="/", headers=[("host", "t"), ("content-length", str(len(body)))]))
        conn.send(h11.Data(data=body))
        conn.send(h11.EndOfMessage())
        status, rh, out = 0, {}, bytearray()
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError:
                return Response(status, rh, bytes(out))
            if event is h11.NEED_DATA:
                try:
                    data = await stream.receive_some(65536)
                except (trio.BrokenResourceError, OSError):
                    data = b""
                conn.receive_data(data)
            elif isinstance(event, h11.Response):
                status = event.status_code
                rh = {k.decode(): v.decode("latin-1") for k, v in event.headers}
            elif isinstance(event, h11.Data):
                out += event.data
            elif isinstance(event, h11.EndOfMessage | h11.ConnectionClosed):
                return Response(status, rh, bytes(out))


async def raw_ws_frames(port: int, token: str | None, frames: list[tuple[Any, ...]],
                        settle: float = 5.0) -> tuple[int | None, list[bytes]]:
    """Send WebSocket frames written by hand (opcode, payload); the close code the server sent
    (1006: the connection ended without a close frame; None: still open after an answer, or
    after ``settle`` seconds) and the text frames it sent."""
    try:
        return await _raw_ws_frames(port, token, frames, settle)
    except (trio.BrokenResourceError, OSError):  # reset by the server: no close frame
        return 1006, []


async def _raw_ws_frames(port: int, token: str | None, frames: list[tuple[Any, ...]],
                         settle: float) -> tuple[int | None, list[bytes]]:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        key = base64.b64encode(os.urandom(16))
        head = (b"GET /ws HTTP/1.1\r\nhost: test\r\nupgrade: websocket\r\nconnection: Upgrade\r\n"
                b"sec-websocket-key: %s\r\nsec-websocket-version: 13\r\n" % key)
        if token is not None:
            head += b"authorization: Bearer %s\r\n" % token.encode()
        await stream.send_all(head + b"\r\n")
        buf = b""
        while b"\r\n\r\n" not in buf:
            chunk = await stream.receive_some(65536)
            if not chunk:
                return -1, []
            buf += chunk
        status_line, _, buf = buf.partition(b"\r\n\r\n")
        if b" 101 " not in status_line.split(b"\r\n", 1)[0] + b" ":
            return -int(status_line.split()[1]), []
        for frame in frames:  # (opcode, payload) or (opcode, payload, fin)
            opcode, payload = frame[0], frame[1]
            fin = 0x80 if len(frame) < 3 or frame[2] else 0
            mask = os.urandom(4)
            n = len(payload)
            length = bytes([0x80 | n]) if n < 126 else (
                b"\xfe" + struct.pack(">H", n) if n < 65536 else b"\xff" + struct.pack(">Q", n))
            masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
            await stream.send_all(bytes([fin | opcode]) + length + mask + masked)
        texts: list[bytes] = []
        with trio.move_on_after(settle):
            while True:
                while len(buf) >= 2:
                    n = buf[1] & 0x7F
                    at = 2
                    if n == 126:
                        n, at = struct.unpack(">H", buf[2:4])[0], 4
                    elif n == 127:
                        n, at = struct.unpack(">Q", buf[2:10])[0], 10
                    if len(buf) < at + n:
                        break
                    opcode, payload, buf = buf[0] & 0x0F, buf[at:at + n], buf[at + n:]
                    if opcode == 0x8:
                        return (struct.unpack(">H", payload[:2])[0] if len(payload) >= 2 else 1005), texts
                    if opcode == 0x1:
                        texts.append(payload)
                        if len(texts) == len(frames):  # answered: the connection stays open
                            return None, texts
                chunk = await stream.receive_some(65536)
                if not chunk:
                    return 1006, texts
                buf += chunk
        return None, texts


# -- one server, its bystanders, and what is found --

ERROR_KEYS = ("error", "code", "message", "timestamp", "request_id")


@dataclass
class Barrage:
    h: Harness
    died: list[BaseException]
    exits: AsyncExitStack
    problems: list[str] = field(default_factory=list)
    bystanders: dict[str, WsClient] = field(default_factory=dict)
    markers: itertools.count = field(default_factory=lambda: itertools.count(1))
    hostile_ws: WsClient | None = None
    #: the hostile connection was closed by the server with a code not documented for it
    closed_by_server: bool = False

    def token(self, project: str = P1, sub: str = "hostile-1", admin: bool = False) -> str:
        return mint(project, sub, admin)

    def find(self, where: str, what: str) -> None:
        self.problems.append(f"{where}: {what}")

    # -- checks of one answer --

    def check_error_object(self, where: str, body: Any) -> None:
        if not isinstance(body, dict) or not all(isinstance(body.get(k), str) for k in ERROR_KEYS):
            self.find(where, f"not the error object: {str(body)[:160]!r}")

    def check_http(self, where: str, r: Response, spec: Spec | None = None) -> None:
        if r.status == 0:
            self.find(where, "no HTTP answer (connection closed)")
            return
        try:
            body = orjson.loads(r.body) if r.status >= 400 else None
        except orjson.JSONDecodeError:
            self.find(where, f"{r.status} with a body that is not JSON: {r.body[:120]!r}")
            return
        if r.status >= 500:
            code = body.get("code") if isinstance(body, dict) else None
            if not (r.status == 503 and code == "UNAVAILABLE" and spec is not None and spec.may_be_unavailable):
                msg = body.get("message", "") if isinstance(body, dict) else ""
                self.find(where, f"{r.status} {code}: {msg[:140]}")
        if r.status >= 400:
            self.check_error_object(where, body)

    def check_ws_reply(self, where: str, msg: Any, sent_id: Any, spec: Spec | None) -> None:
        if not isinstance(msg, dict) or "ok" not in msg:
            self.find(where, f"not a reply: {str(msg)[:160]!r}")
            return
        rid = msg.get("id")
        if rid is not None:
            if isinstance(sent_id, Deep):
                same = isinstance(rid, dict | list) and depth_of(rid) == sent_id.levels + 1
            else:
                same = rid == sent_id or (
                    isinstance(rid, int | float) and isinstance(sent_id, int | float)
                    and not isinstance(sent_id, bool) and float(rid) == float(sent_id))
            if not same:
                self.find(where, f"reply id {str(rid)[:60]!r} is neither the request's nor null")
        if msg["ok"] is False:
            error = msg.get("error")
            self.check_error_object(where, error)
            code = error.get("code") if isinstance(error, dict) else None
            if code == "INTERNAL" or (code == "UNAVAILABLE" and not (spec and spec.may_be_unavailable)):
                self.find(where, f"WS error {code}: {str(error.get('message'))[:140]}")

    # -- sending --

    async def http(self, where: str, method: str, target: str, body: bytes, *, token: str | None,
                   spec: Spec | None = None, headers: list[tuple[bytes, bytes]] = ()) -> None:
        if self.died:
            return  # the server is gone: the finding is already made
        before = self.h.system.root.total_restarts()
        try:
            await self._http(where, method, target, body, token, spec, headers)
        finally:
            self.note_restarts(where, before)

    async def _http(self, where: str, method: str, target: str, body: bytes, token: str | None,
                    spec: Spec | None, headers: list[tuple[bytes, bytes]]) -> None:
        for _ in range(REPEATS):
            with trio.move_on_after(ANSWER_TIMEOUT) as scope:
                r = await raw_http(self.h.port, method, target, token, body, headers)
            if scope.cancelled_caught:
                self.find(where, f"no answer within {ANSWER_TIMEOUT:g} s")
                return
            self.check_http(where, r, spec)
            if self.died:
                return

    async def ws(self, where: str, op: Any, args: dict[str, Any], spec: Spec | None, *,
                 rid: Any = 1, allowed_close: frozenset[int] = frozenset(), raw: bytes | None = None,
                 times: int = REPEATS, own_connection: bool = False) -> None:
        """Send one request ``times`` over the hostile connection (reopened after a close), or
        over a connection of its own (so that what it holds, say subscriptions, ends with it)."""
        if self.died:
            return
        before = self.h.system.root.total_restarts()
        try:
            if own_connection:
                async with _ws_client(self.h.port, self.token()) as self.hostile_ws:
                    await self._ws(where, op, args, spec, rid, allowed_close, raw, times)
                self.hostile_ws = None
            else:
                await self._ws(where, op, args, spec, rid, allowed_close, raw, times)
        finally:
            self.note_restarts(where, before)

    def note_restarts(self, where: str, before: int) -> None:
        """Blame the restarts that happened while ``where`` was sent on it."""
        after = self.h.system.root.total_restarts()
        if after > before:
            self.find(where, f"{after - before} actor restart(s): {'; '.join(_crash_lines(self.h.system.root.tree()))}")
        if self.died:
            self.find(where, f"the actor system stopped: {_leaf(self.died[0])!r}")

    async def _ws(self, where: str, op: Any, args: dict[str, Any], spec: Spec | None, rid: Any,
                  allowed_close: frozenset[int], raw: bytes | None, times: int) -> None:
        frame = raw if raw is not None else to_json({"id": rid, "op": op, **args})
        for _ in range(times):
            if self.hostile_ws is None:
                self.hostile_ws = await self.exits.enter_async_context(_ws_client(self.h.port, self.token()))
            client = self.hostile_ws
            try:
                with trio.fail_after(ANSWER_TIMEOUT):
                    await client.ws.send_message(frame.decode("utf-8", "surrogatepass"))
                    while True:
                        text = await client.ws.get_message()
                        try:
                            msg = orjson.loads(text)
                        except orjson.JSONDecodeError:
                            self.find(where, f"a frame that is not JSON: {text[:120]!r}")
                            return
                        if isinstance(msg, dict) and "ok" in msg:
                            break
                self.check_ws_reply(where, msg, rid if raw is None else None, spec)
            except trio_websocket.ConnectionClosed as exc:
                self.hostile_ws = None
                if exc.reason.code not in allowed_close:
                    self.closed_by_server = True
                    self.find(where, f"the connection was closed {exc.reason.code} {exc.reason.reason!r}")
                    return
            except trio.TooSlowError:
                self.hostile_ws = None
                self.find(where, f"no answer within {ANSWER_TIMEOUT:g} s")
                return
            if self.died:
                return

    # -- after the barrage --

    async def check_unharmed(self) -> None:
        system = self.h.system
        if self.died:
            self.find("server", f"the actor system stopped: {_leaf(self.died[0])!r}")
        r = await raw_http(self.h.port, "GET", "/health", None, b"")
        health = orjson.loads(r.body) if r.status == 200 else None
        if r.status != 200 or not isinstance(health, dict) or health.get("status") != "healthy":
            self.find("GET /health", f"{r.status} {r.body[:200]!r}")
        restarts = system.root.total_restarts()
        crashes = _crashes(system)
        r = await raw_http(self.h.port, "GET", "/status", None, b"")
        actors = orjson.loads(r.body).get("actors", {}) if r.status == 200 else {}
        if r.status != 200 or actors.get("restarts") or actors.get("crashes"):
            self.find("GET /status", f"{r.status} actors={str(actors)[:200]}")
        if restarts or crashes:
            self.find("actors", f"{restarts} restarts, {crashes} crashes: {'; '.join(_crash_lines(system.root.tree()))}")
        marker = next(self.markers)
        for project, client in self.bystanders.items():
            r = await raw_http(self.h.port, "POST", "/api/events/hostile.marker", self.token(project, sub="marker"),
                               to_json({"data": {"marker": marker}}))
            if r.status != 200:
                self.find(f"marker in {project}", f"publish answered {r.status} {r.body[:200]!r}")
                continue
            try:
                with trio.fail_after(5):
                    while True:
                        pushed = await client.next_event()
                        if pushed["event"]["data"].get("marker") == marker:
                            break
            except trio_websocket.ConnectionClosed as exc:
                self.find(f"bystander in {project}", f"closed {exc.reason.code} {exc.reason.reason!r}")
                self.bystanders[project] = None  # type: ignore[assignment]
            except trio.TooSlowError:
                self.find(f"bystander in {project}", "never received the marker event")
        self.bystanders = {k: v for k, v in self.bystanders.items() if v is not None}

def verdict(problems: list[str]) -> None:
    """Fail with every finding, each once with its count; also append them to the file named by
    ``ORCHESTRA_HOSTILE_FINDINGS`` (for a report across a whole run)."""
    counts: dict[str, int] = {}
    for problem in problems:
        key = re.sub(r"req-[0-9a-f]+-[0-9]+", "req-*", problem)
        counts[key] = counts.get(key, 0) + 1
    lines = [f"{p} (x{n})" if n > 1 else p for p, n in counts.items()]
    if lines and os.environ.get("ORCHESTRA_HOSTILE_FINDINGS"):
        with open(os.environ["ORCHESTRA_HOSTILE_FINDINGS"], "a") as out:
            out.writelines(line + "\n" for line in lines)
    assert not lines, f"{len(lines)} findings:\n" + "\n".join(lines)


def _leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return exc


def _crash_lines(tree: dict[str, Any], prefix: str = "") -> list[str]:
    lines = []
    for child in tree["children"]:
        name = f"{prefix}{child['id']}"
        if child.get("restarts") or child.get("crashes"):
            lines.append(f"{name} x{child.get('restarts')} ({str(child.get('last_crash'))[:160]})")
        if "supervisor" in child:
            lines.extend(_crash_lines(child["supervisor"], name + "/"))
    return lines


def _crashes(system: ActorSystem) -> int | None:
    """Crashes the tree counts (also of actors not restarted), where it counts them."""
    root = system.root
    for name in ("total_crashes", "crashes"):
        counter = getattr(root, name, None)
        if callable(counter):
            return int(counter())

    def walk(tree: dict[str, Any]) -> int | None:
        found = None
        for child in tree["children"]:
            if "crashes" in child:
                found = (found or 0) + int(child["crashes"])
            if "supervisor" in child:
                sub = walk(child["supervisor"])
                if sub is not None:
                    found = (found or 0) + sub
        return found

    return walk(root.tree())


async def _run_system(system: ActorSystem, died: list[BaseException], *,
                      task_status: trio.TaskStatus[Any] = trio.TASK_STATUS_IGNORED) -> None:
    try:
        await system.run(task_status=task_status)
    except BaseException as exc:  # the root gave up (or failed to stop): a finding, not a test crash
        cancelled, rest = exc.split(trio.Cancelled) if isinstance(exc, BaseExceptionGroup) else (
            (exc, None) if isinstance(exc, trio.Cancelled) else (None, exc))
        if rest is not None:
            died.append(rest)
        if cancelled is not None:
            raise cancelled from None


@asynccontextmanager
async def _ws_client(port: int, token: str):
    """A WebSocket client whose closing handshake is bounded (a broken server cannot hold it)."""
    async with trio_websocket.open_websocket(
        "127.0.0.1", port, "/ws", use_ssl=False, extra_headers=[("authorization", f"Bearer {token}")],
        connect_timeout=5, disconnect_timeout=2,
    ) as ws:
        yield WsClient(ws)


@asynccontextmanager
async def hostile_server(code_base: Path):
    """A fresh server with a low restart intensity, fault injection and rate limits off, and two
    bystander subscribers (one in the project under attack, one in another)."""
    with tempfile.TemporaryDirectory() as tmp:
        async with trio.open_nursery() as nursery, AsyncExitStack() as exits:
            # a spawnable type, so that hostile spawns reach the agents' registry and the OS
            profiles = Profiles(by_type={**BUILTIN, SPAWNABLE: AgentProfile(SPAWNABLE, command=("true",))})
            system = ActorSystem(SystemConfig(
                data_dir=Path(tmp), profiles=profiles, default_root=code_base,
                max_restarts=MAX_RESTARTS, restart_period=60.0,
                project=ProjectConfig(max_subscriptions=MAX_SUBSCRIPTIONS),
            ))
            # waits short and bounded: a hostile value that happens to be a valid timeout costs < 1 s
            api = Api(system, Auth(SECRET, profiles), ApiConfig(
                rate_limits=False, fault_injection=False, max_body_bytes=MAX_BODY, call_timeout=5.0,
                wait_max_ms=1000, wait_default_ms=100))
            server = Server(api, ServerConfig(max_body_bytes=MAX_BODY))
            died: list[BaseException] = []
            listeners = await trio.open_tcp_listeners(0, host="127.0.0.1")
            port = listeners[0].socket.getsockname()[1]
            system.agents.hooks = api.spawn_hooks(lambda: f"http://127.0.0.1:{port}")
            await nursery.start(_run_system, system, died)
            await nursery.start(server.serve, listeners)
            h = Harness(listeners[0].socket.getsockname()[1], api, system, server, Path(tmp))
            b = Barrage(h, died, exits)
            for project in (P1, P2):
                ws = await exits.enter_async_context(_ws_client(h.port, b.token(project, sub=f"bystander-{project}")))
                reply = await ws.call("event.subscribe", event_types=["hostile.marker"])
                assert reply["ok"], reply
                b.bystanders[project] = ws
            try:
                yield b
            finally:
                stopped_before = len(died)
                await exits.aclose()  # connections first, as a server's shutdown does
                nursery.cancel_scope.cancel()
    if not b.problems:  # after damage, a failed stop is a consequence; on a sound server, a finding
        for exc in died[stopped_before:]:
            b.find("teardown", f"the actor system failed while stopping: {_leaf(exc)!r}")


@pytest.fixture(scope="module")
def code_base(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small git repository, so that context requests reach git."""
    root = tmp_path_factory.mktemp("hostile-repo")
    (root / "src" / "pkg").mkdir(parents=True)
    (root / "src" / "pkg" / "app.py").write_text("def main():\n    return 1\n")
    (root / "README.md").write_text("# hostile\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run([*git, "init", "-q"], cwd=root, check=True)
    subprocess.run([*git, "add", "."], cwd=root, check=True)
    subprocess.run([*git, "commit", "-q", "-m", "iss-1: start"], cwd=root, check=True)
    return root


# -- the value draws of one example --

FIRST = {name: s for name, s in [  # the issue's known-bad values: always tried first
    ("depth", Deep(300)), ("int", 2**63), ("float", 1e308), ("string", "a\x00b"), ("type", []),
    ("cursor", base64.urlsafe_b64encode(f"r1:{2**63}".encode()).decode().rstrip("=")),
    ("date", "9999-12-31T23:59:59-23:59"), ("id", "iss\x00-1"),
]}
VALUES = st.fixed_dictionaries(FIELD_CLASSES)
TOKEN_NAMES = st.sampled_from(sorted(TOKENS))
ENCODING_NAMES = st.sampled_from(sorted(ENCODINGS))


# -- the tests --


def test_every_route_and_op_is_driven() -> None:
    """A route or op added later without a hostile spec fails here, not silently uncovered."""
    assert set(SPECS) >= set(OPS), f"ops without a hostile spec: {sorted(set(OPS) - set(SPECS))}"
    served = {(m, p.pattern) for m, p, *_ in _ROUTES}
    driven = {(t.method, t.path) for t in HTTP_TARGETS}
    assert served <= driven, f"routes not driven: {sorted(served - driven)}"
    for target in HTTP_TARGETS:
        if target.op is not None:
            assert target.op in SPECS, target.label
    assert FIELD_CLASSES.keys() == FIRST.keys()


Step = Callable[["Barrage"], Awaitable[None]]


async def run_steps(code_base: Path, steps: list[Step]) -> None:
    """Run the steps on one server; after a step that damaged it (an actor restarted, the tree
    stopped), check and report the damage, then go on with the next step on a fresh server, so
    that one finding does not hide the others."""
    problems: list[str] = []
    todo = list(steps)
    while todo:
        async with hostile_server(code_base) as b:
            while todo:
                await todo.pop(0)(b)
                if b.died or b.h.system.root.total_restarts() or b.closed_by_server:
                    break
            await b.check_unharmed()
        problems.extend(b.problems)
    verdict(problems)


def _http_step(where: str, request: tuple[str, str, bytes], token: str | None, spec: Spec | None) -> Step:
    method, url, body = request
    return lambda b: b.http(where, method, url, body, token=token, spec=spec)


def _ws_step(where: str, op: Any, args: dict[str, Any], spec: Spec | None, **kw: Any) -> Step:
    return lambda b: b.ws(where, op, args, spec, **kw)


@pytest.mark.parametrize("target", HTTP_TARGETS, ids=lambda t: t.label)
@SETTINGS
@example(values=FIRST, token="exp 10**400", encoding="invalid utf-8", query=0, segment=0)
@given(values=VALUES, token=TOKEN_NAMES, encoding=ENCODING_NAMES,
       query=st.integers(0, len(BAD_QUERIES) - 1), segment=st.integers(0, len(BAD_SEGMENTS) - 1))
async def test_hostile_http(code_base, target: HttpTarget, values, token, encoding, query, segment) -> None:
    spec = target.spec()
    good = mint(admin=spec.admin)
    steps = [
        _http_step(f"{target.label} {'.'.join(map(str, path))}={cls}:{_show(value)}",
                   http_request(target, _with(spec.base, path, value)), good, spec)
        for path in spec.fields for cls, value in values.items()
    ]
    method, url, _ = http_request(target, spec.base)
    steps.append(_http_step(f"{target.label} token={token!r}", http_request(target, spec.base), TOKENS[token], spec))
    if method == "POST":
        steps.append(_http_step(f"{target.label} body={encoding!r}", (method, url, ENCODINGS[encoding]), good, spec))
    steps.append(_http_step(f"{target.label} query={BAD_QUERIES[query][:40]!r}",
                            http_request(target, spec.base, query=BAD_QUERIES[query]), good, spec))
    if target.names:
        steps.append(_http_step(f"{target.label} segment={BAD_SEGMENTS[segment]!r}",
                                http_request(target, spec.base, segment=BAD_SEGMENTS[segment]), good, spec))
    await run_steps(code_base, steps)


@pytest.mark.parametrize("op", WS_OPS)
@SETTINGS
@example(values=FIRST, token="exp 10**400")
@given(values=VALUES, token=TOKEN_NAMES)
async def test_hostile_ws_op(code_base, op: str, values, token) -> None:
    spec = SPECS[op]
    auth_close = frozenset({4001, 4003}) if op == "auth.refresh" else frozenset()
    # subscriptions a step makes end with its connection: one step cannot fill the project for the next
    own = op == "event.subscribe"
    steps = [
        _ws_step(f"ws {op} {'.'.join(map(str, path))}={cls}:{_show(value)}", op, _with(spec.base, path, value), spec,
                 allowed_close=auth_close, own_connection=own)
        for path in spec.fields for cls, value in values.items()
    ]
    steps += [_ws_step(f"ws {op} id={cls}:{_show(value)}", op, spec.base, spec, rid=value, own_connection=own)
              for cls, value in values.items()]
    if op == "auth.refresh":
        steps.append(_ws_step(f"ws {op} token={token!r}", op, {"token": TOKENS[token]}, spec, allowed_close=auth_close))
    if op == "event.subscribe":  # valid subscriptions on one connection, past the project's bound
        steps.append(_ws_step(f"ws {op} past max_subscriptions={MAX_SUBSCRIPTIONS}", op, spec.base, spec,
                              times=MAX_SUBSCRIPTIONS + REPEATS, own_connection=True))
    await run_steps(code_base, steps)


def _raw_ws_step(name: str, frames: list[tuple[int, bytes]], allowed: set[int | None]) -> Step:
    async def step(b: Barrage) -> None:
        for _ in range(REPEATS):
            code, _texts = await raw_ws_frames(b.h.port, mint(), frames)
            if code not in allowed:
                b.find(f"ws raw {name}", f"closed {code} (expected one of {sorted(allowed, key=str)})")
    return step


@SETTINGS
@example(values=FIRST, encoding="invalid utf-8")
@given(values=VALUES, encoding=ENCODING_NAMES)
async def test_hostile_ws_frames(code_base, values, encoding) -> None:
    """Frames that are not requests: a hostile ``op``, non-objects, binary, invalid UTF-8."""
    steps = [_ws_step(f"ws op={cls}:{_show(value)}", value, {}, None) for cls, value in values.items()]
    text = ENCODINGS[encoding]
    try:
        text.decode("utf-8")
        steps.append(_ws_step(f"ws frame={encoding!r}", "x", {}, None, raw=text))
    except UnicodeDecodeError:
        pass
    steps += [
        _raw_ws_step(f"text frame {encoding!r}", [(0x1, text)], {1007, 1006, None}),
        _raw_ws_step("binary frame", [(0x2, b'{"id":1,"op":"ping"}')], {1003, None}),
        # trio-websocket aborts the connection (1006) on invalid UTF-8 rather than closing 1007:
        # either way it ends alone, which is what is asserted here
        _raw_ws_step("invalid utf-8 text", [(0x1, b'{"id":1,"op":"ping","x":"\xff"}')], {1007, 1006, None}),
    ]
    await run_steps(code_base, steps)


def _auth_step(name: str, value: Any) -> Step:
    # validly signed, odd claims: refusing (4001) or accepting them are both answers
    allowed = {4001, None} if name in ODD_BUT_SIGNED else {4001}

    async def step(b: Barrage) -> None:
        for _ in range(REPEATS):
            if isinstance(value, str) and value.isascii() and value.isprintable():
                code, _ = await raw_ws_frames(b.h.port, value, [(0x1, b'{"id":1,"op":"ping"}')])
                if code not in allowed:
                    b.find(f"ws upgrade token={name}", f"closed {code}, not 4001")
            frame = to_json({"id": 1, "op": "auth", "token": value})
            code, texts = await raw_ws_frames(b.h.port, None, [(0x1, frame)])
            if code not in allowed:
                b.find(f"ws auth frame token={name}", f"closed {code}, not 4001 ({texts[:1]!r})")
    return step


@SETTINGS
@example(values=FIRST)
@given(values=VALUES)
async def test_hostile_ws_authentication(code_base, values) -> None:
    """The upgrade's token and the first-frame ``auth``: every hostile token closes 4001 alone."""
    steps = [_auth_step(name, t) for name, t in TOKENS.items()]
    steps += [_auth_step(f"{cls}:{_show(v)}", v) for cls, v in values.items()]
    await run_steps(code_base, steps)


async def test_every_hostile_token_fails_alone(code_base) -> None:
    """Each hostile token, past the intensity, on /status (which reads a token when given one)
    and on a route of every op family."""
    await run_steps(code_base, [
        _http_step(f"{method} {url.split('?')[0]} token={name!r}", (method, url, body), token, None)
        for name, token in TOKENS.items()
        for method, url, body in [
            ("GET", "/status", b""),
            ("GET", "/api/results?cursor=x", b""),
            ("POST", "/api/events/hostile.test", b"{}"),
            ("GET", "/api/context/iss-1/chief-architect?max_bytes=4096", b""),
        ]
    ])


def _show(value: Any) -> str:
    if isinstance(value, Deep):
        return f"Deep({value.levels},{value.kind})"
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:30]}...({len(text)} chars)"
