"""`orchestra agent ...` run as a real process against a real server: answers, exit codes, retries."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import h11
import orjson
import pytest
import trio
from orchestra.actors.profiles import BUILTIN, AgentProfile, Profiles
from orchestra.transport import agent_cli, blocking_http

from tests.conftest import Harness, start_server

_SCRIPT = Path(sys.executable).parent / "orchestra"
#: the installed console script when there is one (what a user runs), else the same entry point
ORCHESTRA = [str(_SCRIPT)] if _SCRIPT.exists() else [
    sys.executable, "-c", "import sys; from orchestra.console import main; sys.exit(main())"]
ZERO = "0" * 20


@dataclass
class Run:
    code: int
    out: str
    err: str

    def json(self) -> Any:
        return orjson.loads(self.out)

    def lines(self) -> list[dict[str, Any]]:
        return [orjson.loads(line) for line in self.out.splitlines()]

    def error(self) -> dict[str, Any]:
        error = orjson.loads(self.err)
        assert {"error", "code", "message", "timestamp", "request_id"} <= error.keys(), error
        return error


def agent_env(url: str | None, token: str | None, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ORCHESTRA_")}
    if url is not None:
        env["ORCHESTRA_URL"] = url
    if token is not None:
        env["ORCHESTRA_TOKEN"] = token
    return {**env, **extra}


async def run_agent(port: int | None, token: str | None, *args: str, stdin: bytes | None = None,
                    **env: str) -> Run:
    url = f"http://127.0.0.1:{port}" if port is not None else None
    done = await trio.to_thread.run_sync(partial(
        subprocess.run, [*ORCHESTRA, "agent", *args], input=stdin, capture_output=True,
        env=agent_env(url, token, **env), timeout=60,
    ))
    return Run(done.returncode, done.stdout.decode(), done.stderr.decode())


class Agent:
    """``orchestra agent`` as agent ``sub`` of project p1 on issue iss-1 (ORCHESTRA_* set)."""

    def __init__(self, h: Harness, sub: str = "py-1", agent_type: str = "python-specialist", **kw: Any) -> None:
        self.h = h
        self.token = h.token(sub=sub, agent_type=agent_type, **kw)

    async def __call__(self, *args: str, stdin: bytes | None = None, **env: str) -> Run:
        return await run_agent(self.h.port, self.token, *args, stdin=stdin,
                               **{"ORCHESTRA_ISSUE_ID": "iss-1", **env})


# -- answers on stdout --------------------------------------------------------------------------

async def test_result_with_status_sugar_then_get_and_query(server):
    agent = Agent(server)
    stored = await agent("result", "--status", "success")
    assert stored.code == 0, stored.err
    answer = stored.json()
    assert answer["stored"] is True and answer["next_agents"] == ["test-engineer", "code-reviewer"]
    assert stored.out.count("\n") == 1  # one line of JSON

    got = await agent("get", answer["id"])
    assert got.code == 0, got.err
    record = got.json()
    # the defaults come from the token (sub, agent_type) and ORCHESTRA_ISSUE_ID
    assert (record["agent_id"], record["agent_type"], record["issue_id"]) == ("py-1", "python-specialist", "iss-1")
    assert record["result"] == {"status": "success"}

    queried = await agent("query", "--issue", "iss-1", "--status", "success", "--limit", "5")
    assert queried.code == 0, queried.err
    assert [r["id"] for r in queried.json()["results"]] == [answer["id"]]


async def test_result_from_stdin_and_from_an_argument(server):
    agent = Agent(server)
    piped = await agent("result", "-", "--issue", "iss-9", stdin=b'{"status": "failed", "files": ["a.py"]}')
    assert piped.code == 0, piped.err
    argued = await agent("result", '{"status": "pending", "n": 1}', "--status", "success",
                         ORCHESTRA_AGENT_ID="py-7")
    assert argued.code == 0, argued.err
    first = (await agent("get", piped.json()["id"])).json()
    second = (await agent("get", argued.json()["id"])).json()
    assert first["issue_id"] == "iss-9" and first["result"] == {"status": "failed", "files": ["a.py"]}
    assert second["agent_id"] == "py-7" and second["result"] == {"status": "success", "n": 1}


async def test_a_repeated_key_stores_once(server):
    agent = Agent(server)
    first = await agent("result", "--status", "success", "--key", "k-1")
    again = await agent("result", "--status", "success", "--key", "k-1")
    assert first.code == again.code == 0
    assert first.json()["id"] == again.json()["id"]
    other = await agent("result", "--status", "success")  # a fresh key of its own
    assert other.json()["id"] != first.json()["id"]
    assert len((await agent("query", "--issue", "iss-1")).json()["results"]) == 2


async def test_publish_then_wait_with_since_then_wait_times_out(server):
    agent = Agent(server)
    published = await agent("publish", "build.done", "--data", '{"ok": true}', "--topic", "ci",
                            "--correlation-id", "iss-1", "--ref", "r-1", "--round", "2")
    assert published.code == 0, published.err
    cursor = published.json()["cursor"]

    waited = await agent("wait", "build.done", "--since", ZERO, "--filter", "ok:true", "--timeout", "5")
    assert waited.code == 0, waited.err
    [event] = waited.json()["events"]
    assert (event["cursor"], event["data"], event["topic"], event["publisher"]) == (cursor, {"ok": True}, "ci", "py-1")
    assert (event["correlation_id"], event["references"], event["round"]) == ("iss-1", ["r-1"], 2)

    timed_out = await agent("wait", "build.done", "--since", cursor, "--timeout", "0.2")
    assert timed_out.code == agent_cli.EXIT_TIMEOUT == 8
    assert timed_out.json() == {"events": [], "more_available": False, "next_cursor": cursor, "timeout": True}


async def test_wait_without_since_continues_where_this_agent_left_off(server):
    agent = Agent(server)
    for n in range(2):
        assert (await agent("publish", "tick", "--data", f'{{"n": {n}}}')).code == 0
    first = await agent("wait", "tick", "--timeout", "5")
    assert [e["data"]["n"] for e in first.json()["events"]] == [0, 1]
    assert (await agent("wait", "tick", "--timeout", "0.1")).code == 8


async def test_context_uses_the_issue_and_type_of_the_environment(server):
    agent = Agent(server)
    got = await agent("context", "--max-bytes", "65536", ORCHESTRA_TASK="fix the parser")
    assert got.code == 0, got.err
    answer = got.json()
    assert (answer["issue_id"], answer["agent_type"]) == ("iss-1", "python-specialist")
    assert len(got.out.encode()) <= 65536 + 1
    pretty = await agent("context", "iss-2", "--agent-type", "code-reviewer", "--pretty", "--max-bytes", "65536")
    assert pretty.code == 0 and pretty.out.startswith("{\n")
    assert (pretty.json()["issue_id"], pretty.json()["agent_type"]) == ("iss-2", "code-reviewer")


async def test_help_lists_every_exit_code():
    done = await run_agent(None, None, "--help")
    assert done.code == 0
    for code, meaning in agent_cli.EXIT_CODES.items():
        assert f"{code:>2}  {meaning}" in done.out


@pytest.mark.parametrize("value", ["nan", "inf", "-inf", "-1", "1e999", "x", ""])
def test_a_number_option_refuses_what_is_not_finite_and_at_least_0(value):
    with pytest.raises(agent_cli.UsageError, match="finite number >= 0"):
        agent_cli.build_parser("wait").parse_args(["wait", "e", f"--timeout={value}"])
    with pytest.raises(agent_cli.UsageError, match="finite number >= 0"):
        agent_cli.build_parser("get").parse_args([f"--retries={value}", "get", "r-1"])


def test_a_number_option_takes_0_and_finite_values():
    args = agent_cli.build_parser("wait").parse_args(["--http-timeout", "1e300", "wait", "e", "--timeout", "0"])
    assert (args.http_timeout, args.timeout) == (1e300, 0.0)


@pytest.mark.parametrize("argv", [["--help"], ["--help", "get", "x"], ["--hel", "result"], ["-h", "subscribe"]])
def test_the_top_level_help_lists_every_command_whatever_follows(argv, capsys):
    """A command's name in the arguments makes ``run`` build that command's parser alone, but
    not when the top level's help is asked for."""
    with pytest.raises(SystemExit) as exit_:
        agent_cli.main(argv)
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: orchestra agent")
    for name in agent_cli.COMMANDS:
        assert f"\n    {name} " in out, name


# -- subscribe ------------------------------------------------------------------------------------

class Subscriber:
    """A running ``orchestra agent subscribe`` whose stdout lines are read one at a time."""

    def __init__(self, port: int, token: str, *args: str) -> None:
        self.p = subprocess.Popen([*ORCHESTRA, "agent", "subscribe", *args], stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, env=agent_env(f"http://127.0.0.1:{port}", token))

    async def line(self) -> dict[str, Any]:
        with trio.fail_after(20):  # the reading thread is abandoned; kill() ends it
            line = await trio.to_thread.run_sync(self.p.stdout.readline, abandon_on_cancel=True)
        assert line, self.p.stderr.read().decode() if self.p.poll() is not None else "no line"
        return orjson.loads(line)

    async def exit_code(self) -> int:
        return await trio.to_thread.run_sync(partial(self.p.wait, 20))

    def kill(self) -> None:
        if self.p.poll() is None:
            self.p.kill()
            self.p.wait()


async def test_subscribe_prints_one_event_per_line_and_ends_after_max(server):
    agent = Agent(server)
    await agent("publish", "e", "--data", '{"n": 0}')
    await agent("publish", "other", "--data", '{"n": -1}')
    sub = Subscriber(server.port, agent.token, "e", "--since", ZERO, "--max", "3")
    try:
        for n in (1, 2):
            assert (await agent("publish", "e", "--data", f'{{"n": {n}}}')).code == 0
        events = [await sub.line() for _ in range(3)]
        assert await sub.exit_code() == 0
        assert [e["data"]["n"] for e in events] == [0, 1, 2]
        assert [e["cursor"] for e in events] == sorted(e["cursor"] for e in events)
        assert sub.p.stdout.read() == b""  # nothing after the third
    finally:
        sub.kill()


@pytest.mark.parametrize("target", ["session:watcher", "project:p1"])
async def test_subscribe_resumes_after_a_dropped_connection_without_loss_or_repeat(server, target):
    """A session crash closes its connection (1011), a project crash its subscribers (1012):
    the client resubscribes from the last cursor it printed."""
    writer = Agent(server)
    admin = server.token("*", agent_type="ops", admin=True, sub="ops")
    sub = Subscriber(server.port, server.token(sub="watcher"), "e", "--since", ZERO, "--max", "6")
    try:
        for n in range(3):
            await writer("publish", "e", "--data", f'{{"n": {n}}}')
        seen = [(await sub.line())["data"]["n"] for _ in range(3)]
        crashes = (await server.request("GET", "/status")).json()["actors"]["crashes"]
        r = await server.request("POST", "/api/admin/faults", admin, {"target": target, "kind": "crash"})
        assert r.status == 200
        for n in range(3, 6):  # while the client reconnects
            assert (await writer("publish", "e", "--data", f'{{"n": {n}}}')).code == 0
        seen += [(await sub.line())["data"]["n"] for _ in range(3)]
        assert await sub.exit_code() == 0
        assert seen == [0, 1, 2, 3, 4, 5]
        assert (await server.request("GET", "/status")).json()["actors"]["crashes"] > crashes
    finally:
        sub.kill()


class ServeProcess:
    """``orchestra serve`` on a fixed port and data dir, so that it can be killed and started again."""

    def __init__(self, data_dir: Path, port: int) -> None:
        self.env = {**agent_env(None, None), "ORCHESTRA_DATA_DIR": str(data_dir),
                    "ORCHESTRA_JWT_SECRET": "agent-cli-secret-0123456789-0123456789"}
        self.port = port
        self.p: subprocess.Popen[str] | None = None

    def _spawn(self) -> None:
        self.p = subprocess.Popen([*ORCHESTRA, "serve", "--port", str(self.port), "--no-rate-limits"],
                                  stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=self.env)

    async def start(self) -> None:
        self._spawn()
        with trio.fail_after(20):
            line = await trio.to_thread.run_sync(self.p.stdout.readline, abandon_on_cancel=True)
        assert line.startswith("listening on"), line

    def token(self) -> str:
        out = subprocess.run([*ORCHESTRA, "token", "--project", "p1", "--agent-type", "python-specialist",
                              "--sub", "watcher"], env=self.env, capture_output=True, text=True, check=True)
        return out.stdout.strip()

    def kill(self) -> None:
        if self.p is not None and self.p.poll() is None:
            self.p.kill()
            self.p.wait()


async def test_subscribe_resumes_across_a_server_sigkill_and_restart(tmp_path):
    serve = ServeProcess(tmp_path / "data", _closed_port())
    sub = None
    try:
        await serve.start()
        tok = serve.token()
        sub = Subscriber(serve.port, tok, "e", "--since", ZERO, "--max", "6", "--retry-for", "30")
        for n in range(3):
            assert (await run_agent(serve.port, tok, "publish", "e", "--data", f'{{"n": {n}}}')).code == 0
        seen = [(await sub.line())["data"]["n"] for _ in range(3)]
        serve.kill()
        await serve.start()  # same port, same data dir: the events and cursors are durable
        for n in range(3, 6):
            assert (await run_agent(serve.port, tok, "publish", "e", "--data", f'{{"n": {n}}}')).code == 0
        seen += [(await sub.line())["data"]["n"] for _ in range(3)]
        assert await sub.exit_code() == 0
        assert seen == [0, 1, 2, 3, 4, 5]
    finally:
        if sub is not None:
            sub.kill()
        serve.kill()


async def test_subscribe_with_a_bad_token_exits_with_the_auth_code(server):
    sub = Subscriber(server.port, "not-a-token", "e", "--max", "1")
    try:
        assert await sub.exit_code() == agent_cli.EXIT_AUTH
        assert orjson.loads(sub.p.stderr.read())["code"] == "CLOSE_4001"
    finally:
        sub.kill()


async def test_subscribe_gives_up_on_an_unreachable_server(tmp_path):
    port = _closed_port()
    sub = Subscriber(port, "t.t.t", "--retry-for", "0.5")
    try:
        assert await sub.exit_code() == agent_cli.EXIT_UNAVAILABLE
        assert orjson.loads(sub.p.stderr.read())["code"] == "CLI_UNREACHABLE"
    finally:
        sub.kill()


# -- exit codes --------------------------------------------------------------------------------------

def _closed_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


async def test_usage_errors_exit_2_and_send_nothing(server):
    agent = Agent(server)
    for args, env in [
        (("bogus",), {}),
        (("result",), {}),  # neither a result nor --status
        (("result", "{not json"), {}),
        (("result", "[1]"), {}),
        (("get",), {}),
        (("wait", "e", "--timeout", "-1"), {}),
        (("get", "x", "--http-timeout", "0"), {}),
        (("get", "x", "--url", "https://127.0.0.1:1"), {}),
        (("--url", "http://127.0.0.1:notaport", "get", "x"), {}),
        (("result", "--status", "ok"), {"ORCHESTRA_ISSUE_ID": ""}),  # no issue anywhere
    ]:
        done = await agent(*args, **env)
        assert done.code == agent_cli.EXIT_USAGE == 2, (args, done)
        assert done.error()["code"] == "USAGE" and done.out == ""
    deep = await agent("result", "-", stdin=b"[" * 200_000)
    assert deep.code == 2 and "nested too deeply" in deep.error()["message"]
    no_url = await run_agent(None, agent.token, "get", "x")
    assert no_url.code == 2 and "ORCHESTRA_URL" in no_url.error()["message"]
    no_token = await run_agent(server.port, None, "get", "x")
    assert no_token.code == 2 and "ORCHESTRA_TOKEN" in no_token.error()["message"]
    assert (await agent("query")).json()["results"] == []  # nothing was stored


async def test_bad_or_expired_token_exits_3(server):
    bad = await run_agent(server.port, "garbage", "get", "x")
    assert bad.code == agent_cli.EXIT_AUTH == 3 and bad.error()["code"] == "AUTH_001"
    expired = server.api.auth.mint(sub="a", agent_type="t", project_id="p1", ttl=-60)
    late = await run_agent(server.port, expired, "get", "x")
    assert late.code == 3 and late.error()["code"] == "AUTH_002"


async def test_another_project_or_a_missing_permission_exits_4(server):
    agent = Agent(server)
    other = await agent("query", "--project", "p2")
    assert other.code == agent_cli.EXIT_FORBIDDEN == 4 and other.error()["code"] == "AUTH_003"
    body = await agent("result", "--status", "ok", "--project", "p2")
    assert body.code == 4
    reader = Agent(server, sub="reader", permissions=["read_context"])
    assert (await reader("publish", "e")).code == 4


async def test_missing_id_exits_5(server):
    done = await Agent(server)("get", "no-such-result")
    assert done.code == agent_cli.EXIT_NOT_FOUND == 5 and done.error()["code"] == "NOT_FOUND"
    assert done.out == ""


async def test_rate_limited_exits_6_and_says_when_to_retry(nursery, tmp_path):
    profiles = Profiles(by_type={**BUILTIN, "slow": AgentProfile("slow", rate_per_second=0.01, burst=1)})
    h = await start_server(nursery, tmp_path / "d", rate_limits=True, profiles=profiles)
    agent = Agent(h, sub="slow-1", agent_type="slow")
    assert (await agent("query")).code == 0  # the one request of the burst
    limited = await agent("query")
    assert limited.code == agent_cli.EXIT_RATE_LIMITED == 6
    error = limited.error()
    assert error["code"] == "RATE_001" and error["retry_after_seconds"] > 0
    assert "retry after" in error["message"]


async def test_server_down_exits_7(tmp_path):
    port = _closed_port()
    for retries in ("0", "2"):
        done = await run_agent(port, "t.t.t", "get", "x", "--retries", retries)
        assert done.code == agent_cli.EXIT_UNAVAILABLE == 7
        assert done.error()["code"] == "CLI_UNREACHABLE" and f"127.0.0.1:{port}" in done.error()["message"]


async def test_invalid_request_exits_10(server):
    done = await Agent(server)("publish", "e", "--data", "[1, 2]")  # data must be an object
    assert done.code == agent_cli.EXIT_REFUSED == 10 and done.error()["code"] == "EVT_002"


# -- agent operations -----------------------------------------------------------------------------

async def test_agent_operations_spawn_and_answer_with_their_exit_codes(nursery, tmp_path):
    """spawn, status, logs and stop against the real agent API; refusals map to their codes."""
    profiles = Profiles(by_type={**BUILTIN, "scripted": AgentProfile("scripted", command=("true",))})
    h = await start_server(nursery, tmp_path / "d", profiles=profiles)
    architect = Agent(h, sub="arch", agent_type="chief-architect")
    no_command = await architect("spawn", "python-specialist")
    assert no_command.code == 10 and no_command.error()["code"] == "AGENT_001"
    spawned = await architect("spawn", "scripted")
    assert spawned.code == 0, spawned.err
    agent_id = spawned.json()["agent_id"]
    for args in (("status", agent_id), ("logs", agent_id, "--tail", "5"), ("stop", agent_id)):
        done = await architect(*args)
        assert done.code == 0, (args, done.err)
    assert (await architect("status", agent_id)).json()["state"] in ("exited", "stopped")
    for args in (("status", "a-1"), ("stop", "a-1"), ("logs", "a-1", "--tail", "5")):
        done = await architect(*args)
        assert done.code == 5 and done.error()["code"] == "NOT_FOUND", args


@dataclass
class FakeServer:
    """An HTTP server that answers from a script and records each request, to pin what the client
    sends for routes today's server does not serve yet (and the retries of a write)."""

    answer: Callable[[FakeServer, str, str, dict[str, str], bytes], tuple[int, Any] | str | None]
    requests: list[tuple[str, str, dict[str, str], Any]] = field(default_factory=list)
    port: int = 0

    async def start(self, nursery: trio.Nursery) -> None:
        listeners = await nursery.start(trio.serve_tcp, self.handle, 0)
        self.port = listeners[0].socket.getsockname()[1]

    async def handle(self, stream: trio.SocketStream) -> None:
        conn = h11.Connection(h11.SERVER)
        method = target = ""
        headers: dict[str, str] = {}
        body = b""
        async with stream:
            while True:
                event = conn.next_event()
                if event is h11.NEED_DATA:
                    conn.receive_data(await stream.receive_some(65536))
                elif isinstance(event, h11.Request):
                    method, target = event.method.decode(), event.target.decode()
                    headers = {k.decode(): v.decode() for k, v in event.headers}
                elif isinstance(event, h11.Data):
                    body += event.data
                elif isinstance(event, h11.EndOfMessage):
                    break
            self.requests.append((method, target, headers, orjson.loads(body) if body else None))
            reply = self.answer(self, method, target, headers, body)
            if reply is None:
                return  # drop the connection without an answer
            if reply == "hang":
                await trio.sleep_forever()
            status, payload = reply
            data = orjson.dumps(payload)
            out = conn.send(h11.Response(status_code=status, headers=[
                ("content-type", "application/json"), ("content-length", str(len(data)))]))
            await stream.send_all(out + conn.send(h11.Data(data=data)) + conn.send(h11.EndOfMessage()))


def _record(agent_id: str, state: str) -> dict[str, Any]:
    return {"agent_id": agent_id, "agent_type": "scripted", "issue_id": "iss-1", "state": state, "pid": 42,
            "exit_code": None, "restarts": 0, "started_at": "t", "ended_at": None, "last_activity": "t",
            "log_path": "/x.log"}


async def test_agent_operations_call_the_protocol_routes_and_print_the_answers(nursery):
    answers: dict[tuple[str, str], tuple[int, Any]] = {
        ("POST", "/api/agents/spawn"): (201, {"agent_id": "a-1", "spawned": True, "process_id": 42,
                                              "context_injected": True, "jwt_token": "j", "webhook_url": None}),
        ("GET", "/api/agents/a-1/status"): (200, _record("a-1", "running")),
        ("GET", "/api/agents"): (200, {"agents": [_record("a-1", "running")]}),
        ("POST", "/api/agents/a-1/stop"): (200, _record("a-1", "stopped")),
        ("GET", "/api/agents/a-1/logs?tail=2"): (200, {"agent_id": "a-1", "lines": ["x", "y"], "log_path": "/x.log"}),
    }
    fake = FakeServer(lambda _s, method, target, _h, _b: answers[method, target])
    await fake.start(nursery)

    async def agent(*args: str) -> Run:
        return await run_agent(fake.port, "t.t.t", *args, ORCHESTRA_ISSUE_ID="iss-1")

    spawned = await agent("spawn", "scripted", "--task", "lint", "--env", "A=1", "--env", "B=x=y", "--key", "s-1")
    assert spawned.code == 0 and spawned.json()["agent_id"] == "a-1"
    method, target, headers, body = fake.requests[-1]
    assert body == {"agent_type": "scripted", "issue_id": "iss-1", "task": "lint",
                    "environment": {"A": "1", "B": "x=y"}}
    assert headers["idempotency-key"] == "s-1" and headers["authorization"] == "Bearer t.t.t"
    assert (await agent("status", "a-1")).json()["state"] == "running"
    assert (await agent("status")).json()["agents"][0]["agent_id"] == "a-1"
    stopped = await agent("stop", "a-1", "--grace", "1.5")
    assert stopped.code == 0 and stopped.json()["state"] == "stopped"
    assert fake.requests[-1][3] == {"grace_seconds": 1.5}
    assert (await agent("logs", "a-1", "--tail", "2")).json()["lines"] == ["x", "y"]


@pytest.mark.parametrize("first", ["drop", "503"])
async def test_a_write_is_retried_with_the_same_key(nursery, first):
    """A lost connection (outcome unknown) or a short 503: the retry carries the same key, so the
    server can answer the original answer instead of storing twice."""
    def answer(fake: FakeServer, method: str, target: str, headers: dict[str, str], body: bytes):
        if len(fake.requests) == 1:
            if first == "drop":
                return None
            return 503, {"error": "unavailable", "code": "UNAVAILABLE", "message": "m", "timestamp": "t",
                         "request_id": "r", "retry_after_seconds": 0.05}
        return 200, {"id": "r-1", "stored": True}

    fake = FakeServer(answer)
    await fake.start(nursery)
    done = await run_agent(fake.port, "t.t.t", "result", "--status", "ok", "--agent-type", "x",
                           ORCHESTRA_ISSUE_ID="iss-1")
    assert done.code == 0 and done.json() == {"id": "r-1", "stored": True}
    keys = [headers["idempotency-key"] for _m, _t, headers, _b in fake.requests]
    assert len(keys) == 2 and keys[0] == keys[1] and keys[0].startswith("cli-")


async def test_a_long_503_is_not_retried_and_retries_run_out(nursery):
    fake = FakeServer(lambda *_: (503, {"error": "unavailable", "code": "UNAVAILABLE", "message": "later",
                                        "timestamp": "t", "request_id": "r", "retry_after_seconds": 3600}))
    await fake.start(nursery)
    done = await run_agent(fake.port, "t.t.t", "get", "x")
    assert done.code == 7 and done.error()["retry_after_seconds"] == 3600
    assert len(fake.requests) == 1
    fake.answer = lambda *_: None  # every connection dropped
    done = await run_agent(fake.port, "t.t.t", "get", "x", "--retries", "1")
    assert done.code == 7 and done.error()["code"] == "CLI_CONNECTION_LOST"
    assert len(fake.requests) == 3


# -- start-up cost ------------------------------------------------------------------------------

async def test_a_request_imports_neither_trio_nor_the_server(tmp_path):
    """What makes it start fast, pinned without timing anything: ``orchestra agent get`` loads
    h11 and orjson, not trio, jwt or the server's modules."""
    code = ("import sys; from orchestra.transport.cli import main; rc = main(['agent', 'get', 'x', '--retries', '0']);"
            "print(sorted(m for m in sys.modules if m.split('.')[0] in ('trio', 'jwt', 'platformdirs')"
            " or m.startswith('orchestra.actors') or m in ('orchestra.transport.server', 'orchestra.transport.api')))")
    done = await trio.to_thread.run_sync(partial(
        subprocess.run, [sys.executable, "-c", code], capture_output=True, text=True, timeout=30,
        env=agent_env(f"http://127.0.0.1:{_closed_port()}", "t.t.t")))
    assert done.stdout.strip() == "[]", (done.stdout, done.stderr)
    assert orjson.loads(done.stderr)["code"] == "CLI_UNREACHABLE"


#: What the console script's ``orchestra agent get`` must not import (each costs start-up time
#: that curl does not pay; bench/shell_client.py): the other commands' parser and what it loads,
#: shutil (argparse's formatter would ask it for the terminal's width) and json (the answer's
#: bytes are printed as they came).
_NOT_FOR_A_REQUEST = ("orchestra.transport.cli", "orchestra.transport.argtypes", "typing", "pathlib", "signal",
                      "shutil", "json")


def test_the_console_script_and_python_m_orchestra_enter_through_orchestra_console():
    import tomllib

    pyproject = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    assert pyproject["project"]["scripts"]["orchestra"] == "orchestra.console:main"
    done = subprocess.run([sys.executable, "-m", "orchestra", "agent", "--help"], capture_output=True, text=True,
                          timeout=60)
    assert done.returncode == 0 and done.stdout.startswith("usage: orchestra agent"), done.stderr


async def test_the_console_script_goes_to_the_agent_client_before_the_other_commands(nursery):
    """The modules ``orchestra agent get`` imports through the console script's entry point
    (orchestra/console.py), beyond those the interpreter had already loaded."""
    fake = FakeServer(lambda *_: (200, {"id": "r-1"}))
    await fake.start(nursery)
    code = ("import sys; before = set(sys.modules); from orchestra.console import main;"
            " rc = main(['agent', 'get', 'r-1']);"
            " print(rc, ' '.join(sorted(set(sys.modules) - before)), file=sys.stderr)")
    done = await trio.to_thread.run_sync(partial(
        subprocess.run, [sys.executable, "-c", code], capture_output=True, text=True, timeout=30,
        env=agent_env(f"http://127.0.0.1:{fake.port}", "t.t.t")))
    assert orjson.loads(done.stdout) == {"id": "r-1"}, (done.stdout, done.stderr)
    rc, *loaded = done.stderr.split()
    assert rc == "0" and "orchestra.transport.agent_cli" in loaded, done.stderr
    assert not set(loaded) & set(_NOT_FOR_A_REQUEST), sorted(set(loaded) & set(_NOT_FOR_A_REQUEST))


# -- the response reader (pure) ---------------------------------------------------------------

def _feed_bytewise(reader: blocking_http.ResponseReader, data: bytes, eof: bool = False) -> blocking_http.Answer | None:
    answer = None
    for i in range(len(data)):
        assert answer is None, "answered before the end"
        answer = reader.feed(data[i:i + 1])
    return reader.feed(b"") if eof and answer is None else answer


def test_response_reader_frames_bodies_however_the_bytes_arrive():
    fixed = b"HTTP/1.1 404 Not Found\r\nContent-Length: 5\r\nX-A: 1\r\nx-a: 2\r\n\r\nhello"
    answer = _feed_bytewise(blocking_http.ResponseReader(), fixed)
    assert (answer.status, answer.body, answer.headers["x-a"]) == (404, b"hello", "2")
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3;x=y\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"
    assert _feed_bytewise(blocking_http.ResponseReader(), chunked).body == b"abcde"
    until_close = b"HTTP/1.0 200 OK\r\n\r\n{}"
    assert _feed_bytewise(blocking_http.ResponseReader(), until_close, eof=True).body == b"{}"
    assert blocking_http.ResponseReader("HEAD").feed(b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\n").body == b""


@pytest.mark.parametrize("data", [
    b"SSH-2.0-OpenSSH\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n",
    b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\nshort",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n",
    b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nab",
    b"HTTP/1.1 200 OK\r\nContent-Length: 1\r\n",
])
def test_response_reader_refuses_what_is_not_a_complete_answer(data):
    reader = blocking_http.ResponseReader()
    with pytest.raises(blocking_http.BadResponse):
        reader.feed(data)
        reader.feed(b"")


def test_response_reader_bounds_the_head():
    with pytest.raises(blocking_http.BadResponse):
        blocking_http.ResponseReader().feed(b"HTTP/1.1 200 OK\r\n" + b"x: y\r\n" * 20_000)


def test_connect_takes_the_first_address_that_accepts_else_raises_the_last_error(monkeypatch):
    """blocking_http.connect walks getaddrinfo's answers as socket.create_connection does (it
    uses the C socket module: socket's enums cost start-up time)."""
    import _socket
    import socket

    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        open_port, closed_port = listener.getsockname()[1], _closed_port()
        ports: list[int] = []

        def getaddrinfo(host: Any, port: int, family: int, kind: int) -> list[Any]:
            assert (host, port, kind) == (b"somewhere", 1, socket.SOCK_STREAM)
            return [(socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", p)) for p in ports]

        monkeypatch.setattr(_socket, "getaddrinfo", getaddrinfo)
        ports[:] = [closed_port, open_port]
        sock = blocking_http.connect(b"somewhere", 1, 5.0)
        try:
            assert sock.getpeername() == ("127.0.0.1", open_port) and sock.gettimeout() == 5.0
        finally:
            sock.close()
        ports[:] = [closed_port]
        with pytest.raises(ConnectionRefusedError):
            blocking_http.connect(b"somewhere", 1, 5.0)
        ports[:] = []
        with pytest.raises(OSError, match="no address"):
            blocking_http.connect(b"somewhere", 1, 5.0)


async def test_no_answer_in_time_exits_8(nursery):
    fake = FakeServer(lambda *_: "hang")
    await fake.start(nursery)
    done = await run_agent(fake.port, "t.t.t", "publish", "e", "--http-timeout", "0.3")
    assert done.code == agent_cli.EXIT_TIMEOUT == 8
    assert done.error()["code"] == "CLI_TIMEOUT" and done.error()["outcome"] == "unknown"
    assert len(fake.requests) == 1  # a timeout is not retried: the script decides


@pytest.mark.parametrize("argv", [
    ["get", "r-1", "--pretty"],
    ["--url", "http://h:1", "result", "-", "--status", "ok", "--key", "k"],
    ["wait", "e", "--timeout", "2", "--since", ZERO, "--filter", "a:b"],
    ["subscribe", "a", "b", "--topic", "t", "--max", "3"],
    ["status"],
    ["--token", "result", "get", "r-1"],  # a command's name as an option's value
])
def test_the_parser_of_one_command_reads_what_the_whole_parser_reads(argv):
    only = next(arg for arg in argv if arg in agent_cli.COMMANDS)
    whole = agent_cli.build_parser().parse_args(argv)
    if argv[0] == "--token":  # the name is an option's value: run() falls back to the whole parser
        with pytest.raises(agent_cli.UsageError):
            agent_cli.build_parser(only).parse_args(argv)
        return
    assert vars(agent_cli.build_parser(only).parse_args(argv)) == vars(whole)
