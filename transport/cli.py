"""The ``orchestra`` command: serve, token, agent.

The server's modules are imported by the commands that use them, not at import time: ``orchestra
agent`` (transport/agent_cli.py) is called by scripts many times and must start fast."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Callable
from pathlib import Path
from typing import NoReturn

from .argtypes import number_in

TYPE_CHECKING = False  # not typing's: importing typing slows `orchestra agent` down
if TYPE_CHECKING:
    from ..actors.system import ActorSystem
    from .api import Api
    from .server import Server

__all__ = ["main"]


def default_data_dir() -> Path:
    import platformdirs

    env = os.environ.get("ORCHESTRA_DATA_DIR")
    if env:
        return Path(env)
    return Path(platformdirs.user_data_dir("orchestra", appauthor=False))


#: Bounds of command-line values (docs/protocol.md, "Running and tokens").
MAX_TOKEN_TTL = 10 * 366 * 86_400  # ten years
MAX_JSON_DEPTH_FLAG = 200  # leaves room under orjson's 254 levels for what wraps a body


class _Parser(argparse.ArgumentParser):
    """Refuses a bad value with one line on stderr and exit status 2 (no usage dump)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


def _int_in(lo: int, hi: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not an integer from {lo} to {hi}") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"{value} is not an integer from {lo} to {hi}")
        return value
    parse.__name__ = "integer"
    return parse


def _seconds(lo: float, hi: float) -> Callable[[str], float]:
    """A finite number of seconds from ``lo`` to ``hi``."""
    return number_in(lo, hi, "seconds")


def _existing_dir(text: str) -> Path:
    path = Path(text).resolve()
    if not path.is_dir():
        raise argparse.ArgumentTypeError(f"{text!r} is not an existing directory")
    return path


def _existing_file(text: str) -> Path:
    path = Path(text)
    if not path.is_file():
        raise argparse.ArgumentTypeError(f"{text!r} is not an existing file")
    return path


def _id(text: str) -> str:
    from ..actors.errors import InvalidRequest
    from ..actors.records import validate_id

    try:
        return validate_id("value", text)
    except InvalidRequest:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not an id (1 to 256 characters, no control characters, not only whitespace)"
        ) from None


def _project_entry(text: str) -> tuple[str, Path]:
    pid, sep, path = text.partition("=")
    if not sep or not pid or not path:
        raise argparse.ArgumentTypeError(f"takes ID=PATH, got {text!r}")
    return _id(pid), _existing_dir(path)


def _log_level(text: str) -> str:
    level = text.upper()
    if level not in ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"):
        raise argparse.ArgumentTypeError(f"{text!r} is not one of debug, info, warning, error, critical")
    return level


def build_parser() -> argparse.ArgumentParser:
    from ..actors.profiles import PERMISSIONS
    from ..actors.records import MAX_JSON_DEPTH

    parser = _Parser(prog="orchestra", description="Orchestration sidecar for fleets of AI coding agents")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("dashboard", help="a live console view of a running server (see: orchestra dashboard --help)")
    sub.add_parser("demo", help="a server and a fleet of agents on a generated code base (see: orchestra demo --help)")

    serve = sub.add_parser("serve", help="run the server")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=_int_in(0, 65535), default=3001)
    serve.add_argument("--data-dir", type=Path, default=None, help="durable store, logs and key (env ORCHESTRA_DATA_DIR)")
    serve.add_argument("--root", type=_existing_dir, default=None,
                       help="code base for context of projects without --project (default: the current directory)")
    serve.add_argument("--project", type=_project_entry, action="append", default=[], metavar="ID=PATH",
                       help="code base of one project")
    serve.add_argument("--profiles", type=_existing_file, default=None, help="agent profiles file (TOML or JSON)")
    serve.add_argument("--max-body-bytes", type=_int_in(1, 2**31 - 1), default=10 * 1024 * 1024)
    serve.add_argument("--max-json-depth", type=_int_in(2, MAX_JSON_DEPTH_FLAG), default=MAX_JSON_DEPTH,
                       help="JSON nesting levels of a body or frame (the body counts as 1)")
    serve.add_argument("--fault-injection", action="store_true", help="enable POST /api/admin/faults (admin only)")
    serve.add_argument("--no-rate-limits", action="store_true")
    serve.add_argument("--jwt-public-key", type=_existing_file, default=None, help="PEM public key for asymmetric tokens")
    serve.add_argument("--jwt-algorithm", default="RS256", choices=["RS256", "ES256", "EdDSA"])
    serve.add_argument("--event-retention", type=_int_in(1, 10**9), default=10_000, help="events kept per project")
    serve.add_argument("--idempotency-window", type=_seconds(1, 366 * 86_400), default=86_400.0,
                       metavar="SECONDS", help="how long a repeated idempotency key answers the original answer")
    serve.add_argument("--event-retention-bytes", type=_int_in(1024, 2**40), default=64 * 1024 * 1024,
                       help="encoded bytes of events kept per project (the oldest go first)")
    serve.add_argument("--sync", default="normal", choices=["normal", "full"],
                       help="SQLite synchronous mode: normal survives process crashes, full also power loss")
    serve.add_argument("--context-sweep", type=_seconds(0, 86_400), default=2.0,
                       help="seconds between checks of the code base for changed files")
    serve.add_argument("--shutdown-grace", type=_seconds(0, 3600), default=3.0,
                       help="seconds requests in progress may take to finish on SIGINT/SIGTERM before they are cancelled")
    serve.add_argument("--max-agents-per-project", type=_int_in(1, 100_000), default=64, metavar="N",
                       help="spawned agents running at once in one project (more: 429 AGENT_002)")
    serve.add_argument("--max-spawn-depth", type=_int_in(1, 100), default=3, metavar="N",
                       help="an agent spawned by a spawned agent ... at most this deep (deeper: 429 AGENT_002)")
    serve.add_argument("--agent-stop-grace", type=_seconds(0, 600), default=5.0, metavar="SECONDS",
                       help="on shutdown, seconds between SIGTERM and SIGKILL of every spawned agent")
    serve.add_argument("--log-level", type=_log_level, default="INFO")

    # listed for --help; main() hands `orchestra agent ...` to agent_cli before this parser runs
    sub.add_parser("agent", help="talk to a server from a script (orchestra agent --help)", add_help=False)
    token = sub.add_parser("token", help="print a JWT signed with the server's key")
    token.add_argument("--project", type=_id, default=None)
    token.add_argument("--agent-type", type=_id, required=True)
    token.add_argument("--sub", type=_id, default=None)
    token.add_argument("--ttl", type=_seconds(1, MAX_TOKEN_TTL), default=3600,
                       help=f"seconds the token is valid, from 1 to {MAX_TOKEN_TTL} (ten years)")
    token.add_argument("--admin", action="store_true")
    token.add_argument("--permissions", default=None, help="comma-separated: " + ",".join(sorted(PERMISSIONS)))
    token.add_argument("--data-dir", type=Path, default=None)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["agent"]:
        from .agent_cli import main as agent_main

        return agent_main(argv[1:])
    if argv[:1] == ["demo"]:  # its own parser (transport/demo.py)
        from .demo import main as demo_main

        return demo_main(argv[1:])
    if argv[:1] == ["dashboard"]:  # its own parser (transport/dashboard/app.py)
        from .dashboard.app import main as dashboard_main

        return dashboard_main(argv[1:], default_data_dir)
    args = build_parser().parse_args(argv)
    if args.command == "token":
        return _token(args)
    return _serve(args)


def _token(args: argparse.Namespace) -> int:
    from ..actors.profiles import PERMISSIONS, Profiles
    from .auth import Auth, load_secret

    if args.project is None and not args.admin:
        print("orchestra token: --project is required unless --admin", file=sys.stderr)
        return 2
    perms = None
    if args.permissions:
        perms = [p.strip() for p in args.permissions.split(",") if p.strip()]
        unknown = set(perms) - PERMISSIONS
        if unknown:
            print(f"orchestra token: unknown permission(s): {', '.join(sorted(unknown))}", file=sys.stderr)
            return 2
    data_dir = args.data_dir or default_data_dir()
    auth = Auth(load_secret(data_dir), Profiles())
    print(auth.mint(
        sub=args.sub or f"{args.agent_type}-{os.getpid()}",
        agent_type=args.agent_type,
        project_id=args.project or "*",
        ttl=args.ttl,
        permissions=perms,
        admin=args.admin,
    ))
    return 0


def _serve(args: argparse.Namespace) -> int:
    import logging

    import trio

    from ..actors.profiles import ProfileError, Profiles
    from ..actors.project import ProjectConfig
    from ..actors.system import ActorSystem, SystemConfig
    from .api import Api, ApiConfig
    from .auth import Auth, load_secret
    from .server import Server, ServerConfig

    logging.basicConfig(
        level=getattr(logging, args.log_level),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        profiles = Profiles.load(args.profiles)
    except ProfileError as exc:
        print(f"orchestra serve: {exc}", file=sys.stderr)
        return 2
    data_dir = (args.data_dir or default_data_dir()).resolve()
    public_key = args.jwt_public_key.read_bytes() if args.jwt_public_key else None
    auth = Auth(load_secret(data_dir), profiles, public_key=public_key,
                public_algorithm=args.jwt_algorithm if public_key else None)
    system = ActorSystem(SystemConfig(
        data_dir=data_dir,
        profiles=profiles,
        project=ProjectConfig(max_events=args.event_retention, max_event_bytes=args.event_retention_bytes,
                              idempotency_window=args.idempotency_window),
        synchronous=args.sync.upper(),
        roots=dict(args.project),
        context_sweep=args.context_sweep,
        default_root=args.root or Path.cwd().resolve(),
        agents_per_project=args.max_agents_per_project,
        agents_max_depth=args.max_spawn_depth,
        agents_shutdown_grace=args.agent_stop_grace,
    ))
    api = Api(system, auth, ApiConfig(
        rate_limits=not args.no_rate_limits,
        fault_injection=args.fault_injection,
        max_body_bytes=args.max_body_bytes,
        max_json_depth=args.max_json_depth,
    ))
    server = Server(api, ServerConfig(max_body_bytes=args.max_body_bytes, max_json_depth=args.max_json_depth))
    _tune_gc()
    try:
        return trio.run(_serve_async, args.host, args.port, system, api, server, args.shutdown_grace)
    except KeyboardInterrupt:
        return 0


#: young-generation collections every this many allocations (Python's default: 700)
GC_YOUNG_THRESHOLD = 50_000


def _tune_gc() -> None:
    """A request allocates many short-lived objects while the server holds many long-lived ones
    (retained events, caches, connections): collect young cycles every 50,000 allocations instead
    of 700, and keep what start-up built out of every later collection. Measured with
    ``python -m bench``: about 20 % less server CPU per durable write, single and batched."""
    import gc

    gc.freeze()
    gc.set_threshold(GC_YOUNG_THRESHOLD, 20, 10)


async def _serve_async(host: str, port: int, system: ActorSystem, api: Api, server: Server, grace: float) -> int:
    import logging

    import trio

    log = logging.getLogger("orchestra")

    try:
        listeners = await trio.open_tcp_listeners(port, host=host)
    except OSError as exc:
        print(f"orchestra serve: cannot listen on {host}:{port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    sockname = listeners[0].socket.getsockname()
    shown = f"[{sockname[0]}]" if ":" in sockname[0] else sockname[0]
    # spawned agents run on this machine: they reach a wildcard address over loopback
    reach = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(sockname[0], sockname[0])
    agents_url = f"http://{f'[{reach}]' if ':' in reach else reach}:{sockname[1]}"
    system.agents.hooks = api.spawn_hooks(lambda: agents_url)
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(system.run)
            await nursery.start(server.serve, listeners)
            print(f"listening on http://{shown}:{sockname[1]}", flush=True)
            async for signum in signals:
                log.info("signal %s: shutting down", signal.Signals(signum).name)
                break
            api.shutting_down = True
            server.stop_accepting()
            await server.close_sessions()
            await server.drain(grace=grace)
            # stops the tree in reverse: contexts, sessions, agents (every spawned process group
            # gets SIGTERM, then SIGKILL after the grace), broker, projects, store
            nursery.cancel_scope.cancel()
    log.info("stopped")
    return 0
