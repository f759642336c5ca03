"""``orchestra agent ...``: the protocol for agents that are shell scripts.

One call, one request: the answer's JSON on stdout, an error object on stderr and an exit code
a script can test (``EXIT_CODES``, docs/agent-cli.md). The server and the token come from
``ORCHESTRA_URL`` and ``ORCHESTRA_TOKEN`` (what a spawned agent is given), or ``--url`` and
``--token``.

A script calls this many times, so it starts fast (bench/shell_client.py): a request loads
nothing beyond what the interpreter's start-up already loaded plus ``argparse`` and ``socket``
— not h11, orjson, dataclasses or typing, which together cost more than the whole request, nor
``shutil`` (argparse's help formatter asks it for the terminal's width) or ``json`` before a
command needs it; it speaks HTTP/1.1 over one blocking socket (transport/blocking_http.py) and
prints the server's bytes as they came. Only ``subscribe``, which is long-lived, imports trio,
trio-websocket and orjson. The console script reaches ``main`` through orchestra/console.py,
before transport/cli.py's imports.

Guarantees:
- A write (``result``, ``publish``, ``spawn``) carries an ``Idempotency-Key`` (``--key``, else a
  fresh random one), so its retries (``--retries``: after a lost connection or a 503 that asks
  for a short wait) are stored once.
- ``subscribe`` prints each event once, in cursor order, one JSON object per line; after a
  dropped connection it resubscribes with ``since`` = the last cursor it printed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

from . import blocking_http
from .blocking_http import Answer, query_string, quote

TYPE_CHECKING = False  # typing costs start-up time; only checkers read these imports
if TYPE_CHECKING:
    from collections.abc import Callable, Sequence
    from typing import Any

__all__ = ["EXIT_CODES", "CliFailure", "Endpoint", "main"]

EXIT_OK = 0
EXIT_USAGE = 2
EXIT_AUTH = 3
EXIT_FORBIDDEN = 4
EXIT_NOT_FOUND = 5
EXIT_RATE_LIMITED = 6
EXIT_UNAVAILABLE = 7
EXIT_TIMEOUT = 8
EXIT_SERVER_ERROR = 9
EXIT_REFUSED = 10

#: Every exit code and what it means (printed by ``--help``; docs/agent-cli.md).
EXIT_CODES: dict[int, str] = {
    EXIT_OK: "ok (the answer is on stdout)",
    EXIT_USAGE: "usage: bad arguments, bad JSON given, or no URL/token",
    EXIT_AUTH: "authentication: token missing, invalid or expired (401, close 4001)",
    EXIT_FORBIDDEN: "forbidden: a permission is missing or another project is named (403, close 4003)",
    EXIT_NOT_FOUND: "not found: no such id or route in this project (404)",
    EXIT_RATE_LIMITED: "rate limited (429): the error's retry_after_seconds says when to retry",
    EXIT_UNAVAILABLE: "unavailable: server unreachable, connection lost, or 503 (retry_after_seconds)",
    EXIT_TIMEOUT: "timeout: 'wait' ended with no event (its answer is on stdout), or no answer in time",
    EXIT_SERVER_ERROR: "server error: 500 or an answer this client does not understand",
    EXIT_REFUSED: "refused: the server found the request invalid or conflicting (400, 405, 409, 413)",
}

#: A 503 asking for a longer wait than this is not retried here: the script decides.
MAX_RETRY_WAIT = 5.0
_BACKOFF_BASE = 0.2
_CONNECT_TIMEOUT = 10.0
#: The first byte of a cursor-less resume: before every event of a project.
_ZERO_CURSOR = "0" * 20


class CliFailure(Exception):
    """The command failed: ``error`` is the error object for stderr, ``exit_code`` the status."""

    exit_code = EXIT_SERVER_ERROR

    def __init__(self, error: dict[str, Any], exit_code: int | None = None) -> None:
        super().__init__(error.get("message", ""))
        self.error = error
        if exit_code is not None:
            self.exit_code = exit_code


class UsageError(CliFailure):
    """Bad arguments or input: nothing was sent."""

    exit_code = EXIT_USAGE

    def __init__(self, message: str) -> None:
        super().__init__(_error("usage", "USAGE", f"{message} (see 'orchestra agent --help')"))


class Unreachable(CliFailure):
    """No answer: the server could not be reached, or the connection was lost."""

    exit_code = EXIT_UNAVAILABLE


class TimedOut(CliFailure):
    """No answer within the time allowed."""

    exit_code = EXIT_TIMEOUT


class ErrorAnswer(CliFailure):
    """The server answered with an error object."""

    def __init__(self, status: int, error: dict[str, Any]) -> None:
        super().__init__(error, exit_code_for(status))
        self.status = status


def exit_code_for(status: int) -> int:
    """The exit code of an HTTP error status (the one mapping; WebSocket closes map alike)."""
    code = {401: EXIT_AUTH, 403: EXIT_FORBIDDEN, 404: EXIT_NOT_FOUND, 429: EXIT_RATE_LIMITED,
            503: EXIT_UNAVAILABLE, 504: EXIT_TIMEOUT}.get(status)
    if code is not None:
        return code
    return EXIT_REFUSED if 400 <= status < 500 else EXIT_SERVER_ERROR


def _jitter() -> float:
    """A factor from 1 to 1.5 that spreads retries apart (``random`` costs start-up time)."""
    return 1.0 + os.urandom(1)[0] / 510


def _error(name: str, code: str, message: str, **details: Any) -> dict[str, Any]:
    """An error object of PROTOCOL.md's shape for a failure found by this client."""
    now = time.time()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(now)) + f".{int(now % 1 * 1e6):06d}Z"
    return {"error": name, "code": code, "message": message, "timestamp": stamp, "request_id": None, **details}


# -- the server and the token -------------------------------------------------------------------

class Endpoint:
    """Where to send requests: ``http://HOST[:PORT][/PREFIX]`` and the bearer token."""

    __slots__ = ("host", "port", "prefix", "token")

    def __init__(self, host: str, port: int, prefix: str, token: str) -> None:
        self.host, self.port, self.prefix, self.token = host, port, prefix, token

    @classmethod
    def parse(cls, url: str | None, token: str | None) -> Endpoint:
        if not url:
            raise UsageError("no server URL: set ORCHESTRA_URL or pass --url")
        if not token:
            raise UsageError("no token: set ORCHESTRA_TOKEN or pass --token")
        scheme, sep, rest = url.partition("://")
        if not sep or scheme.lower() != "http":
            raise UsageError(f"URL {url!r} is not http://HOST:PORT (the server speaks plain HTTP)")
        hostport, slash, path = rest.partition("/")
        if hostport.startswith("["):
            host, _, port_text = hostport[1:].partition("]")
            port_text = port_text.removeprefix(":")
        else:
            host, _, port_text = hostport.partition(":")
        try:
            port = int(port_text) if port_text else 80
        except ValueError:
            port = -1
        if not host or not 0 < port < 65536:
            raise UsageError(f"URL {url!r} is not http://HOST:PORT")
        return cls(host, port, ("/" + path).rstrip("/") if slash else "", token.strip())

    def claims(self) -> dict[str, Any]:
        """The token's claims, read without verifying it (the server does that): defaults only."""
        import binascii
        import json

        try:
            part = self.token.split(".")[1]
            claims = json.loads(binascii.a2b_base64(part.replace("-", "+").replace("_", "/") + "=="))
        except (IndexError, ValueError, binascii.Error):
            return {}
        return claims if isinstance(claims, dict) else {}


# -- HTTP -----------------------------------------------------------------------------------------

def http_request(endpoint: Endpoint, method: str, target: str, body: bytes | None,
                 headers: Sequence[tuple[str, str]], timeout: float) -> Answer:
    """One request on a new connection; the whole answer. Raises Unreachable, TimedOut, UsageError."""
    where = f"http://{endpoint.host}:{endpoint.port}"
    head = [("authorization", f"Bearer {endpoint.token}"), *headers]
    try:
        return blocking_http.request(endpoint.host, endpoint.port, method, endpoint.prefix + target, body,
                                     head, timeout=timeout, connect_timeout=_CONNECT_TIMEOUT)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    except blocking_http.ConnectFailed as exc:
        raise Unreachable(_error("unavailable", "CLI_UNREACHABLE",
                                 f"cannot connect to {where}: {exc}; is the server running?")) from None
    except blocking_http.NoAnswerInTime as exc:
        outcome = {"outcome": "unknown"} if exc.sent else {}
        raise TimedOut(_error("timeout", "CLI_TIMEOUT", f"no answer from {where} within {timeout:g}s"
                              if exc.sent else f"no connection to {where} within {timeout:g}s", **outcome)) from None
    except blocking_http.ConnectionLost as exc:
        # the request went out, so a write's outcome is unknown: a retry with its key is safe
        raise Unreachable(_error("unavailable", "CLI_CONNECTION_LOST", f"connection to {where} lost: {exc}",
                                 outcome="unknown")) from None


def _error_of(answer: Answer) -> ErrorAnswer:
    import json

    try:
        error = json.loads(answer.body)
    except ValueError:
        error = None
    if not isinstance(error, dict):
        error = _error("http_error", f"HTTP_{answer.status}",
                       f"HTTP {answer.status}: {answer.body[:200].decode('utf-8', 'replace')}")
    return ErrorAnswer(answer.status, error)


def call(endpoint: Endpoint, method: str, target: str, body: dict[str, Any] | None = None, *,
         key: str | None = None, retries: int = 2, timeout: float = 60.0) -> Answer:
    """A request, retried (with the same idempotency key) after a lost connection or a 503 that
    asks for at most ``MAX_RETRY_WAIT`` s; a 2xx answer, else raises a CliFailure."""
    data = _dumps(body) if body is not None else None
    headers = [("idempotency-key", key)] if key else []
    attempt = 0
    while True:
        try:
            answer = http_request(endpoint, method, target, data, headers, timeout)
            if 200 <= answer.status < 300:
                return answer
            failure: CliFailure = _error_of(answer)
            wait = failure.error.get("retry_after_seconds") if answer.status == 503 else None
            retryable = isinstance(wait, int | float) and 0 <= wait <= MAX_RETRY_WAIT
        except Unreachable as exc:
            failure, wait, retryable = exc, 0.0, True
        if not retryable or attempt >= retries:
            raise failure
        attempt += 1
        time.sleep(max(float(wait or 0), _BACKOFF_BASE * 2 ** (attempt - 1)) * _jitter())


# -- commands -------------------------------------------------------------------------------------

def _dumps(value: Any) -> bytes:
    import json  # here, not at the top: ``get`` and the other reads print the server's bytes

    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8", "surrogateescape")


def _json_arg(text: str, what: str) -> Any:
    import json

    raw = sys.stdin.buffer.read() if text == "-" else text.encode("utf-8", "surrogateescape")
    try:
        return json.loads(raw)
    except RecursionError:
        raise UsageError(f"{what}: nested too deeply") from None
    except ValueError as exc:
        source = "stdin" if text == "-" else "the argument"
        raise UsageError(f"{what}: {source} is not JSON ({exc})") from None


def _json_object(text: str, what: str) -> dict[str, Any]:
    value = _json_arg(text, what)
    if not isinstance(value, dict):
        raise UsageError(f"{what} must be a JSON object")
    return value


def _issue(args: argparse.Namespace) -> str:
    issue = args.issue or os.environ.get("ORCHESTRA_ISSUE_ID")
    if not issue:
        raise UsageError("no issue: pass --issue or set ORCHESTRA_ISSUE_ID")
    return issue


def _agent_type(args: argparse.Namespace, endpoint: Endpoint) -> str:
    agent_type = args.agent_type or endpoint.claims().get("agent_type")
    if not isinstance(agent_type, str) or not agent_type:
        raise UsageError("no agent type: pass --agent-type (the token names none)")
    return agent_type


def _key(args: argparse.Namespace) -> str:
    return args.key or "cli-" + os.urandom(16).hex()


class Request:
    """What a command sends; ``extra_time``: seconds the server may take beyond ``--http-timeout``."""

    __slots__ = ("method", "target", "body", "key", "extra_time")

    def __init__(self, method: str, target: str, body: dict[str, Any] | None = None,
                 key: str | None = None, extra_time: float = 0.0) -> None:
        self.method, self.target, self.body, self.key, self.extra_time = method, target, body, key, extra_time


def req_context(args: argparse.Namespace, ep: Endpoint) -> Request:
    issue = args.issue_id or _issue(args)
    task = args.task if args.task is not None else os.environ.get("ORCHESTRA_TASK")
    return Request("GET", f"/api/context/{quote(issue)}/{quote(_agent_type(args, ep))}"
                   + query_string({"task": task or None, "max_bytes": args.max_bytes}))


def req_result(args: argparse.Namespace, ep: Endpoint) -> Request:
    if args.result is None and args.status is None:
        raise UsageError("'result' takes the result JSON (an argument, or - for stdin) or --status")
    result = _json_object(args.result, "the result") if args.result is not None else {}
    if args.status is not None:
        result["status"] = args.status
    agent_id = args.agent_id or os.environ.get("ORCHESTRA_AGENT_ID") or ep.claims().get("sub")
    body: dict[str, Any] = {"agent_id": agent_id, "agent_type": _agent_type(args, ep),
                            "issue_id": _issue(args), "result": result}
    if args.project:
        body["project_id"] = args.project
    return Request("POST", "/api/results", body, _key(args))


def req_get(args: argparse.Namespace, ep: Endpoint) -> Request:
    return Request("GET", f"/api/results/{quote(args.result_id)}")


def req_query(args: argparse.Namespace, ep: Endpoint) -> Request:
    params = {"project_id": args.project, "issue_id": args.issue, "agent_type": args.agent_type,
              "agent_id": args.agent_id, "status": args.status, "since": args.since, "until": args.until,
              "q": args.text, "limit": args.limit, "cursor": args.cursor}
    return Request("GET", "/api/results" + query_string(params))


def req_publish(args: argparse.Namespace, ep: Endpoint) -> Request:
    body: dict[str, Any] = {}
    if args.data is not None:
        body["data"] = _json_arg(args.data, "--data")
    for name in ("topic", "correlation_id", "ttl_seconds", "round"):
        if getattr(args, name) is not None:
            body[name] = getattr(args, name)
    if args.ref:
        body["references"] = args.ref
    return Request("POST", f"/api/events/{quote(args.event_type)}", body, _key(args))


def req_wait(args: argparse.Namespace, ep: Endpoint) -> Request:
    params = {"timeout": round(args.timeout * 1000), "filter": args.filter, "since": args.since,
              "limit": args.limit}
    return Request("GET", f"/api/events/wait/{quote(args.event_type)}" + query_string(params),
                   extra_time=args.timeout)


def req_spawn(args: argparse.Namespace, ep: Endpoint) -> Request:
    body: dict[str, Any] = {"agent_type": args.spawn_type, "issue_id": _issue(args)}
    if args.task is not None:
        body["task"] = args.task
    if args.env:
        env = {}
        for item in args.env:
            name, sep, value = item.partition("=")
            if not sep or not name:
                raise UsageError(f"--env takes NAME=VALUE, got {item!r}")
            env[name] = value
        body["environment"] = env
    return Request("POST", "/api/agents/spawn", body, _key(args))


def req_status(args: argparse.Namespace, ep: Endpoint) -> Request:
    if args.agent_id is None:
        return Request("GET", "/api/agents")
    return Request("GET", f"/api/agents/{quote(args.agent_id)}/status")


def req_stop(args: argparse.Namespace, ep: Endpoint) -> Request:
    body = {"grace_seconds": args.grace} if args.grace is not None else {}
    return Request("POST", f"/api/agents/{quote(args.agent_id)}/stop", body, extra_time=args.grace or 0.0)


def req_logs(args: argparse.Namespace, ep: Endpoint) -> Request:
    return Request("GET", f"/api/agents/{quote(args.agent_id)}/logs" + query_string({"tail": args.tail}))


# -- subscribe (trio + trio-websocket, imported only here) ---------------------------------------

#: Close codes after which resubscribing cannot help: authentication, forbidden, frame too large.
_FINAL_CLOSES = {4001: EXIT_AUTH, 4003: EXIT_FORBIDDEN, 1009: EXIT_SERVER_ERROR}
#: Error codes of the subscribe answer that are worth another try.
_TRANSIENT_CODES = {"UNAVAILABLE", "RATE_001"}
_MAX_BACKOFF = 5.0


def subscribe(endpoint: Endpoint, args: argparse.Namespace, *, pretty: bool = False, timeout: float = 60.0) -> int:
    """Print events one per line until ``args.max`` were printed (0: forever).

    Every event is printed once, in cursor order: after a dropped connection (a close other
    than 4001/4003/1009, a lost or refused connection, a 503 or 429) it resubscribes with
    ``since`` = the last cursor printed, or the cursor of the first answer if none was. Gives up
    with EXIT_UNAVAILABLE after ``args.retry_for`` seconds without a working subscription.
    """
    import trio

    return trio.run(_subscribe, endpoint, args, pretty, timeout)


async def _subscribe(endpoint: Endpoint, args: argparse.Namespace, pretty: bool, timeout: float) -> int:
    import orjson
    import trio
    import trio_websocket

    since: str | None = args.since
    printed = 0
    attempt = 0
    failing_since: float | None = None
    request: dict[str, Any] = {"id": 1, "op": "event.subscribe"}
    if args.event_types:
        request["event_types"] = "*" if args.event_types == ["*"] else args.event_types
    if args.topic:
        request["topics"] = args.topic
    if args.filter:
        request["filter"] = args.filter
    option = orjson.OPT_INDENT_2 if pretty else 0
    where = f"http://{endpoint.host}:{endpoint.port}"
    while True:
        failure: CliFailure
        wait = 0.0
        try:
            async with trio_websocket.open_websocket(
                endpoint.host, endpoint.port, endpoint.prefix + "/ws", use_ssl=False,
                extra_headers=[(b"authorization", f"Bearer {endpoint.token}".encode())],
                connect_timeout=min(timeout, _CONNECT_TIMEOUT), disconnect_timeout=1,
            ) as ws:
                await ws.send_message(orjson.dumps({**request, "since": since}).decode())
                while not (args.max and printed >= args.max):
                    msg = orjson.loads(await ws.get_message())
                    if msg.get("op") == "event":
                        event = msg["event"]
                        _write_stdout(orjson.dumps(event, option=option) + b"\n")
                        since = event.get("cursor", since)
                        printed += 1
                    elif msg.get("id") == 1 and msg.get("ok"):
                        result = msg.get("result") or {}
                        attempt, failing_since = 0, None
                        if since is None:
                            since = result.get("cursor") or _ZERO_CURSOR
                        if result.get("recovered") is False:
                            _report(CliFailure(_error(
                                "gap", "CLI_GAP", f"some events after cursor {since} expired before this "
                                "subscription could replay them; continuing with the retained ones")))
                    elif msg.get("id") == 1:
                        error = msg.get("error") or {}
                        code = str(error.get("code"))
                        if code not in _TRANSIENT_CODES:
                            raise CliFailure(error, _EXIT_BY_CODE.get(code, EXIT_REFUSED))
                        wait = float(error.get("retry_after_seconds") or 0)
                        failure = CliFailure(error, _EXIT_BY_CODE[code])
                        break
                else:
                    return EXIT_OK
        except trio_websocket.ConnectionClosed as exc:
            close = exc.reason.code if exc.reason else None
            if close in _FINAL_CLOSES:
                why = exc.reason.reason if exc.reason and exc.reason.reason else ""
                raise CliFailure(_error("closed", f"CLOSE_{close}", f"the server closed the subscription: "
                                        f"{close} {why}".rstrip()), _FINAL_CLOSES[close]) from None
            failure = Unreachable(_error("unavailable", "CLI_CONNECTION_LOST",
                                         f"subscription to {where} closed ({close}); resuming after {since}"))
        except trio_websocket.ConnectionRejected as exc:
            answer = Answer(exc.status_code, {}, exc.body or b"")
            failure = _error_of(answer)
            if exc.status_code not in (429, 503):
                raise failure from None
        except (OSError, trio_websocket.HandshakeError) as exc:
            if args.max and printed >= args.max:
                return EXIT_OK  # done; only the closing handshake failed
            failure = Unreachable(_error("unavailable", "CLI_UNREACHABLE", f"cannot subscribe at {where}: {exc}"))
        now = time.monotonic()
        failing_since = failing_since if failing_since is not None else now
        if now - failing_since >= args.retry_for:
            raise failure
        attempt += 1
        backoff = min(_MAX_BACKOFF, _BACKOFF_BASE * 2 ** (attempt - 1)) * _jitter()
        await trio.sleep(max(wait, backoff))


#: Exit codes of error objects that arrive without an HTTP status (WebSocket answers).
_EXIT_BY_CODE = {"AUTH_001": EXIT_AUTH, "AUTH_002": EXIT_AUTH, "AUTH_003": EXIT_FORBIDDEN,
                 "NOT_FOUND": EXIT_NOT_FOUND, "RATE_001": EXIT_RATE_LIMITED, "UNAVAILABLE": EXIT_UNAVAILABLE,
                 "INTERNAL": EXIT_SERVER_ERROR}


# -- the command line ---------------------------------------------------------------------------

def _columns() -> int:
    """The terminal's width as ``shutil.get_terminal_size`` finds it (COLUMNS, else the
    terminal of stdout, else 80), without importing shutil and with it bz2, lzma and fnmatch:
    argparse builds a help formatter for every argument added, and each asks for the width."""
    try:
        columns = int(os.environ.get("COLUMNS", ""))
    except ValueError:
        columns = 0
    if columns <= 0:
        stdout = sys.__stdout__
        try:
            columns = os.get_terminal_size(stdout.fileno()).columns if stdout is not None else 0
        except (AttributeError, ValueError, OSError):
            columns = 0
    return columns if columns > 0 else 80


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """argparse's formatter (descriptions and epilogs kept as written) at the terminal's width."""

    def __init__(self, prog: str, indent_increment: int = 2, max_help_position: int = 24,
                 width: int | None = None) -> None:
        super().__init__(prog, indent_increment, max_help_position, _columns() - 2 if width is None else width)


class _Parser(argparse.ArgumentParser):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _Formatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(f"{self.prog}: {message}")


def _positive(kind: Callable[[str], float]) -> Callable[[str], Any]:
    def parse(text: str) -> Any:
        try:
            value = kind(text)
        except ValueError:
            value = -1
        if not 0 <= value < float("inf"):  # NaN fails both (math, a shared library, costs start-up time)
            raise argparse.ArgumentTypeError(f"{text!r} is not a finite number >= 0")
        return value
    parse.__name__ = kind.__name__
    return parse


_EPILOG = "exit codes:\n" + "\n".join(f"  {code:>2}  {text}" for code, text in EXIT_CODES.items()) + """

environment: ORCHESTRA_URL, ORCHESTRA_TOKEN (or --url, --token); ORCHESTRA_ISSUE_ID,
ORCHESTRA_AGENT_ID and ORCHESTRA_TASK give defaults. Answers are JSON on stdout, one line;
errors are the error object on stderr. See docs/agent-cli.md."""


#: The commands, in the order of ``--help``.
COMMANDS = ("context", "result", "get", "query", "publish", "wait", "subscribe", "spawn", "status", "stop", "logs")


class _Unused:
    """Stands for the parser of a command that is not being run: it is not built."""

    def add_argument(self, *args: Any, **kwargs: Any) -> None:
        pass


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The parser of ``orchestra agent``; with ``only``, the parser of that command alone (the
    others are left out, so the top level's ``--help`` would not list them): argparse is a
    visible part of the start-up, and a parser costs about as much as ten arguments."""
    # common options on the command and on each subcommand (SUPPRESS: a value given before the
    # subcommand is not reset by the subcommand's default)
    common = _Parser(add_help=False)
    common.add_argument("--url", default=argparse.SUPPRESS, help="server URL (env ORCHESTRA_URL)")
    common.add_argument("--token", default=argparse.SUPPRESS, help="JWT (env ORCHESTRA_TOKEN)")
    common.add_argument("--pretty", action="store_true", default=argparse.SUPPRESS, help="indent the JSON")
    common.add_argument("--retries", type=_positive(int), default=argparse.SUPPRESS,
                        help="retries after a lost connection or a short 503 (default 2)")
    common.add_argument("--http-timeout", type=_positive(float), default=argparse.SUPPRESS, metavar="SECONDS",
                        help="seconds to wait for an answer (default 60; 'wait' adds its own timeout)")
    parser = _Parser(prog="orchestra agent", parents=[common],
                     description="Talk to an Orchestra server from a script.", epilog=_EPILOG)
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser)

    def command(name: str, build: Callable[..., Request] | None, text: str) -> Any:
        if only is not None and name != only:
            return _Unused()
        p = sub.add_parser(name, parents=[common], help=text, description=text, epilog=_EPILOG)
        p.set_defaults(build=build)
        return p

    key_help = "idempotency key (default: a fresh random key, reused by this call's retries)"

    p = command("context", req_context, "print the context of an issue for an agent type")
    p.add_argument("issue_id", nargs="?", help="issue (default --issue or ORCHESTRA_ISSUE_ID)")
    p.add_argument("--issue", help=argparse.SUPPRESS)
    p.add_argument("--agent-type", help="default: the token's agent_type")
    p.add_argument("--task", help="default: ORCHESTRA_TASK")
    p.add_argument("--max-bytes", type=_positive(int))

    p = command("result", req_result, "store a result; prints the stored answer (id, next_agents, ...)")
    p.add_argument("result", nargs="?", help="the result object as JSON, or - to read it from stdin")
    p.add_argument("--status", help="sets result.status (alone: the result is {\"status\": STATUS})")
    p.add_argument("--issue", help="default: ORCHESTRA_ISSUE_ID")
    p.add_argument("--agent-id", help="default: ORCHESTRA_AGENT_ID, else the token's sub")
    p.add_argument("--agent-type", help="default: the token's agent_type")
    p.add_argument("--project", help="project_id of the body (default: the token's)")
    p.add_argument("--key", help=key_help)

    p = command("get", req_get, "print a stored result")
    p.add_argument("result_id")

    p = command("query", req_query, "query stored results, newest first")
    p.add_argument("--issue")
    p.add_argument("--agent-type")
    p.add_argument("--agent-id")
    p.add_argument("--status")
    p.add_argument("--since", help="ISO 8601 time")
    p.add_argument("--until", help="ISO 8601 time")
    p.add_argument("-q", "--text", help="case-insensitive substring of the record's JSON")
    p.add_argument("--limit", type=_positive(int))
    p.add_argument("--cursor", help="next_cursor of the previous page")
    p.add_argument("--project", help="project_id (an admin token's choice)")

    p = command("publish", req_publish, "publish an event; prints its event_id and cursor")
    p.add_argument("event_type")
    p.add_argument("--data", help="the event's data as JSON, or - for stdin")
    p.add_argument("--topic")
    p.add_argument("--correlation-id")
    p.add_argument("--ttl", dest="ttl_seconds", type=_positive(int), help="seconds the event is kept")
    p.add_argument("--round", type=_positive(int))
    p.add_argument("--ref", action="append", help="a reference (repeatable)")
    p.add_argument("--key", help=key_help)

    p = command("wait", req_wait, "wait for events of a type; prints the wait answer (exit 8 on timeout)")
    p.add_argument("event_type")
    p.add_argument("--timeout", type=_positive(float), default=30.0, help="seconds (default 30, at most 300)")
    p.add_argument("--filter", help="filter expression, e.g. 'status:success,issue_id:ISS-*'")
    p.add_argument("--since", help="cursor: the events after it (default: the server keeps this agent's place)")
    p.add_argument("--limit", type=_positive(int))

    p = command("subscribe", None, "print events as they come, one JSON object per line")
    p.add_argument("event_types", nargs="*", metavar="EVENT_TYPE", help="default: the profile's, else all")
    p.add_argument("--topic", action="append", help="only this topic (repeatable)")
    p.add_argument("--filter", help="filter expression")
    p.add_argument("--since", help="cursor: replay the retained events after it first")
    p.add_argument("--max", type=_positive(int), default=0, help="exit 0 after N events (default: never)")
    p.add_argument("--retry-for", type=_positive(float), default=60.0, metavar="SECONDS",
                   help="give up (exit 7) after failing to reconnect for this long (default 60)")

    p = command("spawn", req_spawn, "spawn an agent process of a type (permission spawn_agents)")
    p.add_argument("spawn_type", metavar="AGENT_TYPE")
    p.add_argument("--issue", help="default: ORCHESTRA_ISSUE_ID")
    p.add_argument("--task")
    p.add_argument("--env", action="append", metavar="NAME=VALUE", help="environment of the process (repeatable)")
    p.add_argument("--key", help=key_help)

    p = command("status", req_status, "print an agent's record; without AGENT_ID, every agent of the project")
    p.add_argument("agent_id", nargs="?")

    p = command("stop", req_stop, "stop an agent (SIGTERM, then SIGKILL after the grace); prints its record")
    p.add_argument("agent_id")
    p.add_argument("--grace", type=_positive(float), metavar="SECONDS")

    p = command("logs", req_logs, "print the last lines of an agent's log")
    p.add_argument("agent_id")
    p.add_argument("--tail", type=_positive(int))
    return parser


def _write_stdout(data: bytes) -> None:
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


def _emit(body: bytes, pretty: bool) -> None:
    if pretty:
        import json

        body = json.dumps(json.loads(body), indent=2, ensure_ascii=False).encode()
    _write_stdout(body.rstrip(b"\n") + b"\n")


def _report(failure: CliFailure) -> int:
    try:
        sys.stderr.buffer.write(_dumps(failure.error) + b"\n")
        sys.stderr.buffer.flush()
    except OSError:
        pass
    return failure.exit_code


def run(argv: Sequence[str]) -> int:
    """Run one ``orchestra agent`` command; its exit code."""
    only = next((arg for arg in argv if arg in COMMANDS), None)
    if any(arg == "-h" or (len(arg) > 2 and "--help".startswith(arg)) for arg in argv):
        only = None  # the top level's help lists every command (a command's own help is the same)
    try:
        args = build_parser(only).parse_args(argv)
    except UsageError:
        if only is None:
            raise
        args = build_parser().parse_args(argv)  # e.g. a command's name given as an option's value
    endpoint = Endpoint.parse(getattr(args, "url", None) or os.environ.get("ORCHESTRA_URL"),
                              getattr(args, "token", None) or os.environ.get("ORCHESTRA_TOKEN"))
    pretty = getattr(args, "pretty", False)
    retries = getattr(args, "retries", 2)
    timeout = getattr(args, "http_timeout", 60.0)
    if timeout <= 0:
        raise UsageError("--http-timeout must be above 0")
    if args.command == "subscribe":
        return subscribe(endpoint, args, pretty=pretty, timeout=timeout)
    request = args.build(args, endpoint)
    answer = call(endpoint, request.method, request.target, request.body, key=request.key,
                  retries=retries, timeout=timeout + request.extra_time)
    _emit(answer.body, pretty)
    if args.command == "wait":
        import json

        if json.loads(answer.body).get("timeout") is True:
            return EXIT_TIMEOUT
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """``orchestra agent ARGS``: the exit code (docs/agent-cli.md)."""
    try:
        return run(sys.argv[1:] if argv is None else argv)
    except CliFailure as failure:
        return _report(failure)
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        # the reader of stdout went away (``| head -1``): not an error of this command
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return EXIT_OK
