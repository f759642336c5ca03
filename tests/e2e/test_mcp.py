"""`orchestra mcp` end to end: the `mcp` SDK's own client runs `python -m orchestra mcp` over
stdio against a real server on port 0 (real JWTs, real SQLite, real spawned processes)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
import tomllib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import orjson
import pytest
import trio
from mcp import Client, StdioServerParameters
from mcp_types import CallToolResult, ResourceUpdatedNotification
from orchestra.actors.agents import MCP_CONFIG_FILE, write_mcp_config
from orchestra.actors.agents._workspace import WorkspaceError
from orchestra.actors.profiles import BUILTIN, AgentProfile, Profiles
from orchestra.actors.project import ProjectStats
from orchestra.transport import cli

from tests.conftest import Harness, start_server
from tests.waiting import until, until_waiters

PY = sys.executable
SLEEPER = "import time; print('ready', flush=True); time.sleep(1000)"
TOOLS = {
    "get_context", "store_result", "get_result", "query_results", "publish_event",
    "wait_for_events", "spawn_agent", "list_agents", "agent_status", "agent_logs", "stop_agent",
}
#: Each test's bound: a few MCP processes (about a second each to start under load) and calls.
BOUND = 60


def _profiles(tmp_path: Path) -> Profiles:
    extra = [
        AgentProfile(agent_type="sleeper", command=(PY, "-c", SLEEPER)),
        # a coding agent connected through its .mcp.json: its command is a stand-in that
        # records its environment (what the MCP client would expand ${VAR} from) and stays
        # alive, as an agent does while it works (an ended agent's token is refused)
        AgentProfile(agent_type="coder", mcp=True, command=(
            PY, "-c", "import json, os, sys, time; p = sys.argv[1]; json.dump({k: v for k, v in "
                      "os.environ.items() if k.startswith('ORCHESTRA_')}, open(p + '.tmp', 'w')); "
                      "os.replace(p + '.tmp', p); time.sleep(120)",
            str(tmp_path / "coder-env.json"))),
        AgentProfile(agent_type="coder-wt", mcp=True, workspace="worktree", keep_worktree=True,
                     command=(PY, "-c", "print(open('.mcp.json').read())")),
        AgentProfile(agent_type="slow", rate_per_second=0.01, burst=3),
    ]
    return Profiles(by_type={**BUILTIN, **{p.agent_type: p for p in extra}})


@pytest.fixture
async def h(nursery: trio.Nursery, tmp_path: Path) -> Harness:
    harness = await start_server(nursery, tmp_path / "data", rate_limits=True, profiles=_profiles(tmp_path))
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "auth.py").write_text("def login(user, password):\n    return check(user, password)\n")
    (repo / "pyproject.toml").write_text('[project]\nname = "shop"\ndependencies = ["trio"]\n')
    harness.system.config.roots["p1"] = repo
    return harness


def _url(h: Harness) -> str:
    return f"http://127.0.0.1:{h.port}"


@asynccontextmanager
async def mcp(h: Harness, token: str, *args: str, mode: str = "legacy", **env: str) -> AsyncIterator[Client]:
    """An MCP client session with a new `python -m orchestra mcp` process."""
    params = StdioServerParameters(
        command=PY, args=["-m", "orchestra", "mcp", *args],
        env={"ORCHESTRA_URL": _url(h), "ORCHESTRA_TOKEN": token, **env})
    async with Client(params, mode=mode, read_timeout_seconds=BOUND) as client:  # type: ignore[arg-type]
        yield client


async def call(client: Client, tool: str, **args: Any) -> dict[str, Any]:
    """A tool call that must succeed: its structured content (also its text, as JSON)."""
    result = await client.call_tool(tool, args)
    assert isinstance(result, CallToolResult)
    assert not result.is_error, result.content
    assert result.structured_content is not None
    assert orjson.loads(result.content[0].text) == result.structured_content  # type: ignore[union-attr]
    return result.structured_content


async def fails(client: Client, tool: str, **args: Any) -> dict[str, Any]:
    """A tool call that must be a tool error carrying the error object: that object."""
    result = await client.call_tool(tool, args)
    assert isinstance(result, CallToolResult)
    assert result.is_error, result.content
    assert result.structured_content is not None
    error: dict[str, Any] = result.structured_content["error"]
    text = result.content[0].text  # type: ignore[union-attr]
    assert text.startswith(f"{error['code']}: {error['message']}"), text
    return error


# -- tools -------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["legacy", "auto"])  # the initialize handshake; 2026-07-28
async def test_tools_are_listed_with_schemas_and_descriptions(h: Harness, mode: str) -> None:
    with trio.fail_after(BOUND):
        async with mcp(h, h.token(), mode=mode) as client:
            tools = {t.name: t for t in (await client.list_tools()).tools}
            assert set(tools) == TOOLS
            for tool in tools.values():
                assert tool.description and len(tool.description) > 40, tool.name
                schema = tool.input_schema
                assert schema["type"] == "object" and schema["properties"], tool.name
                for name, prop in schema["properties"].items():
                    assert prop.get("description"), (tool.name, name)
            assert tools["get_result"].input_schema["required"] == ["result_id"]
            assert tools["store_result"].input_schema["required"] == ["result"]
            assert tools["wait_for_events"].input_schema["properties"]["timeout_seconds"]["maximum"] == 300
            assert tools["get_context"].annotations.read_only_hint is True  # type: ignore[union-attr]
            assert client.server_info is None or client.server_info.name == "orchestra"


async def test_context_results_and_events_tools(h: Harness) -> None:
    with trio.fail_after(BOUND):
        async with mcp(h, h.token(sub="py-1")) as client:
            context = await call(client, "get_context", issue_id="iss-1", task="fix the login", max_bytes=4096)
            assert context["issue_id"] == "iss-1" and context["agent_type"] == "python-specialist"
            files = context["context"]["relevant_files"]
            assert files[0]["path"] == "auth.py" and "def login" in files[0]["content"]
            assert context["total_size_bytes"] <= 4096

            stored = await call(client, "store_result", issue_id="iss-1",
                                result={"status": "success", "summary": "login fixed"}, idempotency_key="k-1")
            assert stored["stored"] is True
            again = await call(client, "store_result", issue_id="iss-1",
                               result={"status": "success", "summary": "login fixed"}, idempotency_key="k-1")
            assert again["id"] == stored["id"]  # a retry with the same key is stored once
            record = await call(client, "get_result", result_id=stored["id"])
            assert record["agent_id"] == "py-1" and record["result"]["summary"] == "login fixed"
            page = await call(client, "query_results", issue_id="iss-1", status="success", q="LOGIN")
            assert [r["id"] for r in page["results"]] == [stored["id"]] and page["next_cursor"] is None
            assert (await call(client, "query_results", q="nothing like it"))["results"] == []
            # an earlier agent's result is in the next context of the issue; 64 KiB by default
            big = "x" * 60_000
            await call(client, "store_result", issue_id="iss-1", result={"status": "partial", "log": big})
            await call(client, "store_result", issue_id="iss-1", result={"status": "partial", "log": big})
            context = await call(client, "get_context", issue_id="iss-1")
            assert context["truncated"] is True and context["total_size_bytes"] <= 65536
            context = await call(client, "get_context", issue_id="iss-1", max_bytes=1_000_000)
            assert context["truncated"] is False
            assert stored["id"] in [o["id"] for o in context["context"]["previous_agent_outputs"]]

            published = await call(client, "publish_event", event_type="review_ready",
                                   data={"issue_id": "iss-1"}, topic="coordination", correlation_id="iss-1")
            assert published["published"] is True
            got = await call(client, "wait_for_events", event_type="review_ready", filter="issue_id:iss-1",
                             timeout_seconds=5)
            assert [e["event_id"] for e in got["events"]] == [published["event_id"]]
            assert got["events"][0]["publisher"] == "py-1" and got["next_cursor"] == published["cursor"]
            done = await call(client, "wait_for_events", event_type="agent_completed", since="0" * 20,
                              timeout_seconds=5)
            assert done["events"][0]["data"]["result_id"] == stored["id"]


async def test_issue_defaults_to_the_agents_own(h: Harness) -> None:
    with trio.fail_after(BOUND):
        async with mcp(h, h.token(), ORCHESTRA_ISSUE_ID="iss-9") as client:
            assert (await call(client, "get_context"))["issue_id"] == "iss-9"
            stored = await call(client, "store_result", result={"status": "success"})
            assert (await call(client, "get_result", result_id=stored["id"]))["issue_id"] == "iss-9"
        # ${ORCHESTRA_ISSUE_ID} a client left unexpanded is no issue at all
        async with mcp(h, h.token(), ORCHESTRA_ISSUE_ID="${ORCHESTRA_ISSUE_ID}") as client:
            error = await fails(client, "get_context")
            assert error["code"] == "REQ_001" and error["field"] == "issue_id"


async def test_agent_tools_spawn_follow_and_stop(h: Harness) -> None:
    with trio.fail_after(BOUND):
        async with mcp(h, h.token(sub="chief-1", agent_type="chief-architect")) as client:
            spawned = await call(client, "spawn_agent", agent_type="sleeper", issue_id="iss-2",
                                 task="sleep", environment={"EXTRA": "1"})
            agent_id = spawned["agent_id"]
            assert spawned["spawned"] is True and spawned["process_id"] > 0
            async def ready() -> bool:
                return (await call(client, "agent_logs", agent_id=agent_id, tail=5))["lines"] == ["ready"]

            await until(ready, "the agent wrote 'ready'", timeout=20, interval=0.05)
            status = await call(client, "agent_status", agent_id=agent_id)
            assert status["state"] == "running" and status["issue_id"] == "iss-2"
            listed = await call(client, "list_agents", issue_id="iss-2", state="running")
            assert [a["agent_id"] for a in listed["agents"]] == [agent_id]
            stopped = await call(client, "stop_agent", agent_id=agent_id, grace_seconds=1)
            assert stopped["state"] == "stopped"
            exited = await call(client, "wait_for_events", event_type="agent_exited",
                                filter=f"agent_id:{agent_id}", since="0" * 20, timeout_seconds=10)
            assert exited["events"][0]["data"]["state"] == "stopped"


# -- waiting -----------------------------------------------------------------------------------

async def test_wait_times_out_with_its_cursor_and_resumes_after_a_reconnect_without_a_gap(h: Harness) -> None:
    token = h.token(sub="waiter")
    with trio.fail_after(BOUND):
        async with h.ws(h.token(sub="publisher")) as publisher:
            first = await publisher.call("event.publish", event_type="build", data={"n": 0})
            async with mcp(h, token) as client:
                got = await call(client, "wait_for_events", event_type="build", since="0" * 20, timeout_seconds=5)
                assert [e["data"]["n"] for e in got["events"]] == [0]
                cursor = got["next_cursor"]
                assert cursor == first["result"]["cursor"]
                # nothing new: the wait returns at its timeout, with the cursor to continue from
                idle = await call(client, "wait_for_events", event_type="build", since=cursor, timeout_seconds=0.3)
                assert idle["events"] == [] and idle["timeout"] is True and idle["next_cursor"] == cursor
            # the MCP process is gone (a client restarted it, the connection dropped ...):
            # what is published meanwhile is there for the next wait from the same cursor
            for n in range(1, 6):
                await publisher.call("event.publish", event_type="build", data={"n": n})
            async with mcp(h, token) as client:
                seen: list[int] = []
                while len(seen) < 5:
                    got = await call(client, "wait_for_events", event_type="build", since=cursor,
                                     limit=2, timeout_seconds=5)
                    seen += [e["data"]["n"] for e in got["events"]]
                    cursor = got["next_cursor"]
                assert seen == [1, 2, 3, 4, 5]
                idle = await call(client, "wait_for_events", event_type="build", since=cursor, timeout_seconds=0)
                assert idle["events"] == [] and idle["next_cursor"] == cursor


async def test_a_wait_wakes_when_the_event_is_published(h: Harness) -> None:
    with trio.fail_after(BOUND):
        async with mcp(h, h.token(sub="waiter")) as client, h.ws(h.token(sub="pub")) as publisher:
            result: dict[str, Any] = {}

            async def waiting() -> None:
                result.update(await call(client, "wait_for_events", event_type="go", timeout_seconds=60))

            async with trio.open_nursery() as nursery:
                nursery.start_soon(waiting)
                await until_waiters(h, 1)
                await publisher.call("event.publish", event_type="go", data={"x": 1})
            assert [e["data"] for e in result["events"]] == [{"x": 1}] and "timeout" not in result


# -- errors ------------------------------------------------------------------------------------

async def test_errors_are_tool_errors_with_the_error_object(h: Harness) -> None:
    with trio.fail_after(BOUND):
        async with mcp(h, h.token(sub="py-2")) as client:
            missing = await fails(client, "get_result", result_id="no-such-result")
            assert missing["code"] == "NOT_FOUND" and missing["request_id"]
            # a python-specialist may not spawn: 403, and the session goes on
            forbidden = await fails(client, "spawn_agent", agent_type="sleeper", issue_id="iss-1")
            assert forbidden["code"] == "AUTH_003"
            bad_filter = await fails(client, "wait_for_events", event_type="x", filter="???", timeout_seconds=0)
            assert bad_filter["code"] == "EVT_003"
            not_a_result = await fails(client, "store_result", issue_id="iss-1", result={"no": "status"})
            assert not_a_result["code"] == "REQ_001"
            unknown_agent = await fails(client, "agent_status", agent_id="nobody")
            assert unknown_agent["code"] == "NOT_FOUND"
            # arguments outside their schema: an error of the tool, before the server is asked
            out_of_range = await client.call_tool("wait_for_events", {"event_type": "x", "timeout_seconds": 301})
            assert out_of_range.is_error  # type: ignore[union-attr]
            assert (await call(client, "get_context", issue_id="iss-1"))["issue_id"] == "iss-1"


async def test_a_refused_token_is_a_tool_error_not_a_dead_server(h: Harness) -> None:
    expired = h.api.auth.mint(sub="old", agent_type="python-specialist", project_id="p1", ttl=-60)
    with trio.fail_after(BOUND):
        # the WebSocket refuses an expired token with close 4001, which the SDK reports as
        # AUTH_001; its message says why
        for token, words in (("not-a-jwt", "token"), (expired, "expired")):
            async with mcp(h, token) as client:
                assert {t.name for t in (await client.list_tools()).tools} == TOOLS
                for _ in range(2):  # each call tries again, and fails alone
                    error = await fails(client, "get_result", result_id="x")
                    assert error["code"] in ("AUTH_001", "AUTH_002") and words in error["message"]


async def test_a_token_that_expires_before_the_first_call_was_renewed_meanwhile(h: Harness) -> None:
    """A spawned agent's model may make its first call after its token's lifetime: the MCP
    server connected at start, and the SDK renewed the token while connected."""
    token = h.token(sub="late", ttl=6)
    exp = orjson.loads(base64.urlsafe_b64decode(token.split(".")[1] + "=="))["exp"]

    def renewed() -> bool:
        return any(s.principal.sub == "late" and s.principal.exp > exp for s in h.system.live_sessions)

    with trio.fail_after(BOUND):
        async with mcp(h, token) as client:
            if time.time() > exp - 1:
                pytest.skip("the MCP process took about its token's lifetime to start (a machine this slow)")
            await until(renewed, "the token renewed while connected", timeout=exp + 3 - time.time())
            await trio.sleep(max(0.0, exp + 2 - time.time()))  # the first token has expired by now
            assert (await call(client, "get_context", issue_id="iss-1"))["issue_id"] == "iss-1"


async def test_a_server_that_cannot_be_reached_is_a_tool_error_until_it_can(h: Harness) -> None:
    with trio.fail_after(BOUND):
        # a port nothing listens on: closed again right after it was picked
        with trio.socket.socket() as sock:
            await sock.bind(("127.0.0.1", 0))
            closed_port = sock.getsockname()[1]
        async with mcp(h, h.token(), "--connect-timeout", "0.5",
                       ORCHESTRA_URL=f"http://127.0.0.1:{closed_port}") as client:
            for _ in range(2):
                error = await fails(client, "get_result", result_id="x")
                assert error["code"] == "CONNECTION_FAILED"
        # the same process connects once the server is there (--url overrides the variable)
        async with mcp(h, h.token(), "--url", _url(h), ORCHESTRA_URL="http://127.0.0.1:1") as client:
            assert (await fails(client, "get_result", result_id="x"))["code"] == "NOT_FOUND"


async def test_a_rate_limit_says_when_to_retry(h: Harness) -> None:
    with trio.fail_after(BOUND):
        async with mcp(h, h.token(sub="slow-1", agent_type="slow")) as client:
            for _ in range(10):  # burst 3: the connection's first ping and a call or two pass
                result = await client.call_tool("get_context", {"issue_id": "iss-1", "max_bytes": 4096})
                if result.is_error:  # type: ignore[union-attr]
                    break
            else:
                pytest.fail("no rate limit within 10 calls of a burst of 3")
            error = result.structured_content["error"]  # type: ignore[union-attr,index]
            assert error["code"] == "RATE_001" and error["limit"] == 3
            assert error["retry_after_seconds"] > 0
            assert f"(retry after {error['retry_after_seconds']:g} s)" in result.content[0].text  # type: ignore[union-attr]


# -- resources ---------------------------------------------------------------------------------

async def test_resources_a_result_and_the_context_of_an_issue(h: Harness) -> None:
    with trio.fail_after(BOUND):
        async with mcp(h, h.token()) as client:
            templates = {t.uri_template for t in (await client.list_resource_templates()).resource_templates}
            assert templates == {"orchestra://results/{result_id}", "orchestra://context/{issue_id}",
                                 "orchestra://events/{event_type}"}
            stored = await call(client, "store_result", issue_id="iss-3", result={"status": "success"})
            read = await client.read_resource(f"orchestra://results/{stored['id']}")
            body = orjson.loads(read.contents[0].text)  # type: ignore[union-attr]
            assert body["id"] == stored["id"] and read.contents[0].mime_type == "application/json"
            read = await client.read_resource("orchestra://context/iss-3")
            context = orjson.loads(read.contents[0].text)  # type: ignore[union-attr]
            assert context["issue_id"] == "iss-3" and "auth.py" in context["context"]["project_structure"]["files"]
            with pytest.raises(Exception, match="NOT_FOUND"):
                await client.read_resource("orchestra://results/nope")


async def test_a_listened_event_type_is_notified_and_its_resource_holds_the_events(h: Harness) -> None:
    uri = "orchestra://events/build"
    with trio.fail_after(BOUND):
        async with mcp(h, h.token(sub="watcher"), mode="auto") as client, h.ws(h.token(sub="pub")) as publisher:
            assert client.protocol_version == "2026-07-28"
            assert client.server_capabilities.resources.subscribe  # type: ignore[union-attr]
            async with client.listen(resource_subscriptions=[uri, "orchestra://other"]) as stream:
                assert stream.honored.resource_subscriptions == [uri, "orchestra://other"]

                project = await h.system.project("p1")

                async def subscribed() -> bool:
                    return bool((await project.call(ProjectStats(), timeout=5))["subscriptions"] == 1)

                await until(subscribed, "the watch subscribed", timeout=20, interval=0.05)
                await publisher.call("event.publish", event_type="other", data={"n": 0})
                await publisher.call("event.publish", event_type="build", data={"n": 1})
                async for event in stream:
                    assert event.uri == uri  # type: ignore[union-attr]
                    break

            async def unsubscribed() -> bool:  # the watch ends with its stream
                return bool((await project.call(ProjectStats(), timeout=5))["subscriptions"] == 0)

            await until(unsubscribed, "the watch ended", timeout=20, interval=0.05)
            read = await client.read_resource(uri)
            events = orjson.loads(read.contents[0].text)["events"]  # type: ignore[union-attr]
            assert [e["data"] for e in events] == [{"n": 1}]
            again = orjson.loads((await client.read_resource(uri)).contents[0].text)  # type: ignore[union-attr]
            assert again["events"] == []  # a read returns the events not yet read


@pytest.mark.filterwarnings("ignore::mcp.MCPDeprecationWarning")  # that era on purpose
async def test_a_subscribed_event_type_is_notified_on_the_handshake_era_too(h: Harness) -> None:
    uri = "orchestra://events/deploy"
    notified: list[str] = []
    arrived = trio.Event()

    async def on_message(message: Any) -> None:
        message = getattr(message, "root", message)
        if isinstance(message, ResourceUpdatedNotification):
            notified.append(str(message.params.uri))
            arrived.set()

    params = StdioServerParameters(command=PY, args=["-m", "orchestra", "mcp"],
                                   env={"ORCHESTRA_URL": _url(h), "ORCHESTRA_TOKEN": h.token(sub="old-client")})
    project = await h.system.project("p1")

    async def subscriptions(count: int) -> None:
        async def check() -> bool:
            return bool((await project.call(ProjectStats(), timeout=5))["subscriptions"] == count)

        await until(check, f"{count} subscriptions", timeout=20, interval=0.05)

    with trio.fail_after(BOUND):
        async with Client(params, mode="legacy", read_timeout_seconds=BOUND, message_handler=on_message) as client, \
                h.ws(h.token(sub="pub")) as publisher:
            assert client.server_capabilities.resources.subscribe is True  # type: ignore[union-attr]
            await client.session.subscribe_resource(uri)
            await client.session.subscribe_resource(uri)  # once is enough: still one watch
            await client.session.subscribe_resource("orchestra://results/r-1")  # accepted, never changes
            await subscriptions(1)
            await publisher.call("event.publish", event_type="other", data={"n": 0})
            await publisher.call("event.publish", event_type="deploy", data={"n": 1})
            await arrived.wait()
            assert notified == [uri]
            events = orjson.loads((await client.read_resource(uri)).contents[0].text)["events"]  # type: ignore[union-attr]
            assert [e["data"] for e in events] == [{"n": 1}]
            await client.session.unsubscribe_resource(uri)
            await subscriptions(0)


async def test_watches_by_resources_subscribe_are_bounded() -> None:
    from mcp.server.subscriptions import InMemorySubscriptionBus
    from mcp.shared.exceptions import MCPError
    from orchestra.transport.mcp._server import MAX_WATCHED_TYPES, EventWatch

    class Unreachable:  # the watches never get a connection: only their count matters
        async def client(self) -> None:
            await trio.sleep_forever()

    async def call_next(ctx: Any) -> None:
        raise AssertionError("answered by the middleware")

    def subscribe(uri: str) -> Any:
        return SimpleNamespace(method="resources/subscribe", params={"uri": uri},
                               protocol_version="2025-11-25", session=None)

    async with trio.open_nursery() as nursery:
        watch = EventWatch(Unreachable(), InMemorySubscriptionBus(), nursery)  # type: ignore[arg-type]
        for n in range(MAX_WATCHED_TYPES):
            assert await watch(subscribe(f"orchestra://events/t{n}"), call_next) == {}
        assert await watch(subscribe("orchestra://events/t0"), call_next) == {}  # a repeat: no new watch
        assert await watch(subscribe("orchestra://results/r"), call_next) == {}  # never watched
        with pytest.raises(MCPError, match=f"at most {MAX_WATCHED_TYPES} event types"):
            await watch(subscribe("orchestra://events/one-more"), call_next)
        unsubscribe = SimpleNamespace(method="resources/unsubscribe", params={"uri": "orchestra://events/t0"},
                                      protocol_version="2025-11-25", session=None)
        assert await watch(unsubscribe, call_next) == {}
        assert await watch(subscribe("orchestra://events/one-more"), call_next) == {}  # room again
        nursery.cancel_scope.cancel()


# -- the process -------------------------------------------------------------------------------

def _rpc(id_: int | None, method: str, params: dict[str, Any] | None = None) -> bytes:
    message: dict[str, Any] = {"jsonrpc": "2.0", "method": method}
    if id_ is not None:
        message["id"] = id_
    if params is not None:
        message["params"] = params
    return orjson.dumps(message) + b"\n"


async def test_the_process_exits_cleanly_when_stdin_closes(h: Harness) -> None:
    env = {**os.environ, "ORCHESTRA_URL": _url(h), "ORCHESTRA_TOKEN": h.token()}
    with trio.fail_after(BOUND):
        proc = await trio.lowlevel.open_process(
            [PY, "-m", "orchestra", "mcp"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, env=env)
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        try:
            await proc.stdin.send_all(_rpc(1, "initialize", {
                "protocolVersion": "2025-06-18", "capabilities": {},
                "clientInfo": {"name": "test", "version": "1"}}))
            await proc.stdin.send_all(_rpc(None, "notifications/initialized"))
            # a call that connects to the server: the close must end that connection too
            await proc.stdin.send_all(_rpc(2, "tools/call", {"name": "get_context", "arguments": {"issue_id": "i"}}))
            # and a watch of events: the close must end it too
            await proc.stdin.send_all(_rpc(3, "resources/subscribe", {"uri": "orchestra://events/x"}))
            replies: list[dict[str, Any]] = []
            buffer = b""
            while len(replies) < 3:
                chunk = await proc.stdout.receive_some()
                assert chunk, "stdout closed early"
                buffer += chunk
                *lines, buffer = buffer.split(b"\n")
                replies += [orjson.loads(line) for line in lines if line.strip()]
            replies.sort(key=lambda reply: reply["id"])  # answers may come in any order
            assert replies[0]["result"]["serverInfo"]["name"] == "orchestra"
            assert replies[1]["result"]["isError"] is False
            assert replies[2] == {"jsonrpc": "2.0", "id": 3, "result": {}}
            await proc.stdin.aclose()
            assert await proc.wait() == 0
            assert await proc.stdout.receive_some() == b""  # nothing but JSON-RPC on stdout
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        errors = b""
        while chunk := await proc.stderr.receive_some():
            errors += chunk
        assert b"Traceback" not in errors, errors.decode()


@dataclass
class Ran:
    returncode: int
    stdout: str
    stderr: str


def _orchestra(capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, *args: str) -> Ran:
    """The ``orchestra`` command in this process, as its console script calls it."""
    for name in list(os.environ):
        if name.startswith("ORCHESTRA_"):
            monkeypatch.delenv(name)
    try:
        code = cli.main(list(args))
    except SystemExit as exit_:  # argparse's refusals
        code = int(exit_.code or 0)
    out, err = capsys.readouterr()
    return Ran(code, out, err)


def test_without_url_or_token_it_says_what_is_missing(capsys, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    run = partial(_orchestra, capsys, monkeypatch)
    done = run("mcp")
    assert done.returncode == 2 and done.stdout == ""
    assert "--url (or ORCHESTRA_URL) and --token (or ORCHESTRA_TOKEN)" in done.stderr
    done = run("mcp", "--url", "ftp://x", "--token", "t")
    assert done.returncode == 2 and "not a server URL" in done.stderr
    done = run("mcp", "--connect-timeout", "0", "--token", "t")
    assert done.returncode == 2 and "--connect-timeout" in done.stderr


def test_the_server_and_the_other_commands_do_not_import_mcp() -> None:
    code = ("import sys; import orchestra.transport.cli, orchestra.transport.server, orchestra.transport.api, "
            "orchestra.client, orchestra.transport.mcp; sys.exit(1 if 'mcp' in sys.modules else 0)")
    assert subprocess.run([PY, "-c", code], timeout=BOUND).returncode == 0


# -- configuration -----------------------------------------------------------------------------

def test_print_config_for_each_client(capsys, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    run = partial(_orchestra, capsys, monkeypatch)
    claude = run("mcp", "--print-config")
    assert claude.returncode == 0
    entry = json.loads(claude.stdout)["mcpServers"]["orchestra"]
    assert entry["type"] == "stdio" and [entry["command"], *entry["args"]] == [PY, "-m", "orchestra", "mcp"]
    assert entry["env"] == {"ORCHESTRA_URL": "${ORCHESTRA_URL}", "ORCHESTRA_TOKEN": "${ORCHESTRA_TOKEN}",
                            "ORCHESTRA_ISSUE_ID": "${ORCHESTRA_ISSUE_ID}"}

    codex = run("mcp", "--print-config", "--client", "codex", "--url", "http://127.0.0.1:3001")
    table = tomllib.loads(codex.stdout)["mcp_servers"]["orchestra"]
    assert [table["command"], *table["args"]] == [PY, "-m", "orchestra", "mcp"]
    assert table["env"] == {"ORCHESTRA_URL": "http://127.0.0.1:3001"}
    assert table["env_vars"] == ["ORCHESTRA_TOKEN", "ORCHESTRA_ISSUE_ID"]

    generic = run("mcp", "--print-config", "--client", "generic", "--url", "http://h:1", "--token", "T")
    entry = json.loads(generic.stdout)["mcpServers"]["orchestra"]
    assert "type" not in entry and entry["env"]["ORCHESTRA_URL"] == "http://h:1"
    assert entry["env"]["ORCHESTRA_TOKEN"] == "T" and generic.stderr == ""
    assert "does not expand" in run("mcp", "--print-config", "--client", "generic").stderr

    unknown = run("mcp", "--print-config", "--client", "vim")
    assert unknown.returncode == 2 and "invalid choice" in unknown.stderr


async def test_an_agent_whose_profile_says_mcp_gets_a_mcp_json_that_connects_it(h: Harness, tmp_path: Path) -> None:
    repo = h.system.config.roots["p1"]
    (repo / MCP_CONFIG_FILE).write_text(json.dumps({"mcpServers": {"other": {"command": "other-server"}}}))
    with trio.fail_after(BOUND):
        async with h.ws(h.token(sub="chief-1", agent_type="chief-architect")) as ws:
            spawned = await ws.call("agent.spawn", agent_type="coder", issue_id="iss-5", task="fix the login")
            assert spawned["ok"], spawned
        env_file = tmp_path / "coder-env.json"
        await until(lambda: env_file.exists() and bool(env_file.read_text()), "the agent ran",
                    timeout=20, interval=0.05)
        agent_env = json.loads(env_file.read_text())

        config = json.loads((repo / MCP_CONFIG_FILE).read_text())
        assert config["mcpServers"]["other"] == {"command": "other-server"}  # kept
        entry = config["mcpServers"]["orchestra"]
        assert "eyJ" not in json.dumps(entry)  # no token on disk: ${VAR} references only
        # what a client does with the entry: expand ${VAR} from the agent's environment, run it
        expanded = {k: agent_env[v[2:-1]] for k, v in entry["env"].items()}
        params = StdioServerParameters(command=entry["command"], args=entry["args"], env=expanded)
        async with Client(params, mode="legacy", read_timeout_seconds=BOUND) as client:
            context = await call(client, "get_context")  # its issue, from its first step
            assert context["issue_id"] == "iss-5" and context["agent_type"] == "coder"
            stored = await call(client, "store_result", result={"status": "success"})
            record = await call(client, "get_result", result_id=stored["id"])
            assert record["agent_id"] == spawned["result"]["agent_id"]


async def test_an_agent_in_its_own_worktree_finds_the_mcp_json_there(h: Harness, tmp_path: Path) -> None:
    from tests.actors.test_context import make_repo

    repo = h.system.config.roots["p1"] = make_repo(tmp_path / "git-repo")
    with trio.fail_after(BOUND):
        async with h.ws(h.token(sub="chief-1", agent_type="chief-architect")) as ws:
            spawned = await ws.call("agent.spawn", agent_type="coder-wt", issue_id="iss-6")
            agent_id = spawned["result"]["agent_id"]

            async def ended() -> bool:
                return (await ws.call("agent.status", agent_id=agent_id))["result"]["state"] == "exited"

            await until(ended, "the agent exited", timeout=20, interval=0.05)
            record = (await ws.call("agent.status", agent_id=agent_id))["result"]
            logs = (await ws.call("agent.logs", agent_id=agent_id))["result"]["lines"]
    assert record["exit_code"] == 0 and record["workspace"] != str(repo)
    assert json.loads("\n".join(logs))["mcpServers"]["orchestra"]["args"] == ["-m", "orchestra", "mcp"]
    assert (Path(record["workspace"]) / MCP_CONFIG_FILE).is_file()
    assert not (repo / MCP_CONFIG_FILE).exists()  # the project root is left alone


def test_the_profile_key_mcp_is_true_or_false(tmp_path: Path) -> None:
    from orchestra.actors.profiles import ProfileError

    path = tmp_path / "profiles.toml"
    path.write_text('[profiles.coder]\ncommand = "coder"\nmcp = true\n')
    assert Profiles.load(path).get("coder").mcp is True
    assert Profiles.load(None).get("coder").mcp is False  # off unless a profile says so
    path.write_text('[profiles.coder]\nmcp = "yes"\n')
    with pytest.raises(ProfileError, match="mcp: must be true or false"):
        Profiles.load(path)


def test_an_existing_mcp_json_that_cannot_be_merged_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / MCP_CONFIG_FILE
    for text in ("not json", "[1, 2]", '{"mcpServers": []}'):
        path.write_text(text)
        with pytest.raises(WorkspaceError, match="cannot be merged"):
            write_mcp_config(tmp_path)
        assert path.read_text() == text
    path.unlink()
    written = write_mcp_config(tmp_path)
    assert set(json.loads(written.read_text())["mcpServers"]) == {"orchestra"}
    assert [p.name for p in tmp_path.iterdir()] == [MCP_CONFIG_FILE]  # no temporary file left
