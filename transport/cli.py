"""The ``orchestra`` command: serve, token."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from pathlib import Path

import platformdirs
import trio

from ..actors.profiles import PERMISSIONS, ProfileError, Profiles
from ..actors.project import ProjectConfig
from ..actors.system import ActorSystem, SystemConfig
from .api import Api, ApiConfig
from .auth import Auth, load_secret
from .server import Server, ServerConfig

__all__ = ["main"]

log = logging.getLogger("orchestra")


def default_data_dir() -> Path:
    env = os.environ.get("ORCHESTRA_DATA_DIR")
    if env:
        return Path(env)
    return Path(platformdirs.user_data_dir("orchestra", appauthor=False))


def _project_map(values: list[str]) -> dict[str, Path]:
    out = {}
    for value in values:
        pid, sep, path = value.partition("=")
        if not sep or not pid or not path:
            raise SystemExit(f"orchestra: --project takes ID=PATH, got {value!r}")
        out[pid] = Path(path).resolve()
    return out


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="orchestra", description="Orchestration sidecar for fleets of AI coding agents")
    sub = parser.add_subparsers(dest="command", required=True)

    serve = sub.add_parser("serve", help="run the server")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=3001)
    serve.add_argument("--data-dir", type=Path, default=None, help="durable store, logs and key (env ORCHESTRA_DATA_DIR)")
    serve.add_argument("--root", type=Path, default=Path.cwd(), help="code base for context of projects without --project")
    serve.add_argument("--project", action="append", default=[], metavar="ID=PATH", help="code base of one project")
    serve.add_argument("--profiles", type=Path, default=None, help="agent profiles file (TOML or JSON)")
    serve.add_argument("--max-body-bytes", type=int, default=10 * 1024 * 1024)
    serve.add_argument("--fault-injection", action="store_true", help="enable POST /api/admin/faults (admin only)")
    serve.add_argument("--no-rate-limits", action="store_true")
    serve.add_argument("--jwt-public-key", type=Path, default=None, help="PEM public key for asymmetric tokens")
    serve.add_argument("--jwt-algorithm", default="RS256", choices=["RS256", "ES256", "EdDSA"])
    serve.add_argument("--event-retention", type=int, default=10_000, help="events kept per project")
    serve.add_argument("--idempotency-window", type=float, default=86_400.0, metavar="SECONDS",
                       help="how long a repeated idempotency key answers the original answer")
    serve.add_argument("--event-retention-bytes", type=int, default=64 * 1024 * 1024,
                       help="encoded bytes of events kept per project (the oldest go first)")
    serve.add_argument("--sync", default="normal", choices=["normal", "full"],
                       help="SQLite synchronous mode: normal survives process crashes, full also power loss")
    serve.add_argument("--context-sweep", type=float, default=2.0,
                       help="seconds between checks of the code base for changed files")
    serve.add_argument("--shutdown-grace", type=float, default=3.0,
                       help="seconds requests in progress may take to finish on SIGINT/SIGTERM before they are cancelled")
    serve.add_argument("--log-level", default="INFO")

    token = sub.add_parser("token", help="print a JWT signed with the server's key")
    token.add_argument("--project", default=None)
    token.add_argument("--agent-type", required=True)
    token.add_argument("--sub", default=None)
    token.add_argument("--ttl", type=float, default=3600)
    token.add_argument("--admin", action="store_true")
    token.add_argument("--permissions", default=None, help="comma-separated: " + ",".join(sorted(PERMISSIONS)))
    token.add_argument("--data-dir", type=Path, default=None)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "token":
        return _token(args)
    return _serve(args)


def _token(args: argparse.Namespace) -> int:
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
    logging.basicConfig(
        level=getattr(logging, str(args.log_level).upper(), logging.INFO),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        profiles = Profiles.load(args.profiles)
    except ProfileError as exc:
        print(f"orchestra serve: {exc}", file=sys.stderr)
        return 2
    if not 0 < args.idempotency_window < float("inf"):
        print("orchestra serve: --idempotency-window must be a number of seconds > 0", file=sys.stderr)
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
        roots=_project_map(args.project),
        context_sweep=args.context_sweep,
        default_root=args.root.resolve(),
    ))
    api = Api(system, auth, ApiConfig(
        rate_limits=not args.no_rate_limits,
        fault_injection=args.fault_injection,
        max_body_bytes=args.max_body_bytes,
    ))
    server = Server(api, ServerConfig(max_body_bytes=args.max_body_bytes))
    try:
        return trio.run(_serve_async, args.host, args.port, system, api, server, max(0.0, args.shutdown_grace))
    except KeyboardInterrupt:
        return 0


async def _serve_async(host: str, port: int, system: ActorSystem, api: Api, server: Server, grace: float) -> int:
    try:
        listeners = await trio.open_tcp_listeners(port, host=host)
    except OSError as exc:
        print(f"orchestra serve: cannot listen on {host}:{port}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async with trio.open_nursery() as nursery:
            await nursery.start(system.run)
            await nursery.start(server.serve, listeners)
            sockname = listeners[0].socket.getsockname()
            shown = f"[{sockname[0]}]" if ":" in sockname[0] else sockname[0]
            print(f"listening on http://{shown}:{sockname[1]}", flush=True)
            async for signum in signals:
                log.info("signal %s: shutting down", signal.Signals(signum).name)
                break
            api.shutting_down = True
            server.stop_accepting()
            await server.close_sessions()
            await server.drain(grace=grace)
            nursery.cancel_scope.cancel()  # stops the tree in reverse: sessions, broker, projects, store
    log.info("stopped")
    return 0
