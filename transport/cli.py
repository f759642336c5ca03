"""The ``orchestra`` command: serve, token, config, agent.

The server's modules are imported by the commands that use them, not at import time: ``orchestra
agent`` (transport/agent_cli.py) is called by scripts many times and must start fast.

A failure to start is one line on stderr and a non-zero exit status, never a traceback: 2 for a
setting that cannot be used (a flag, a variable or a config file's key), 1 for what the machine
refuses (a data dir that cannot be written, a key that cannot be read, a port in use)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
from typing import NoReturn

from .argtypes import identifier, number_in

TYPE_CHECKING = False  # not typing's: importing typing slows `orchestra agent` down
if TYPE_CHECKING:
    from ..actors.profiles import Profiles
    from ..actors.system import ActorSystem
    from .api import Api
    from .auth import Auth
    from .server import Server

__all__ = ["main"]


def default_data_dir() -> Path:
    import platformdirs

    env = os.environ.get("ORCHESTRA_DATA_DIR")
    if env:
        return Path(env)
    return Path(platformdirs.user_data_dir("orchestra", appauthor=False))


#: Bounds of command-line values (docs/configuration.md).
MAX_TOKEN_TTL = 10 * 366 * 86_400  # ten years


class _Parser(argparse.ArgumentParser):
    """Refuses a bad value with one line on stderr and exit status 2 (no usage dump)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message}\n")


class _StartError(Exception):
    """The server cannot start; ``status`` is the exit status."""

    def __init__(self, message: str, status: int = 1) -> None:
        super().__init__(message)
        self.status = status


_CONFIG_HELP = "TOML file of settings, keys as `orchestra config --print-defaults` writes them (env ORCHESTRA_CONFIG)"


def build_parser() -> argparse.ArgumentParser:
    from ..actors.profiles import PERMISSIONS
    from .config import SERVE_SETTINGS, add_flags

    parser = _Parser(prog="orchestra", description="Orchestration sidecar for fleets of AI coding agents")
    parser.add_argument("--version", action="version", version=f"%(prog)s {_version()}")
    sub = parser.add_subparsers(dest="command", required=True)
    sub.add_parser("dashboard", help="a live console view of a running server (see: orchestra dashboard --help)")
    sub.add_parser("mcp", help="an MCP server over stdio for coding agents (see: orchestra mcp --help)")
    sub.add_parser("demo", help="a server and a fleet of agents on a generated code base (see: orchestra demo --help)")

    serve = sub.add_parser(
        "serve", help="run the server",
        description="Run the server. Every option is also read from its ORCHESTRA_* environment variable, "
                    "then from the --config file; precedence: flag > environment > file > default "
                    "(docs/configuration.md). Tokens are signed with ORCHESTRA_JWT_SECRET, else with "
                    "<data-dir>/jwt.secret (made by the first start, mode 0600).",
    )
    serve.add_argument("--config", type=Path, default=None, metavar="FILE", help=_CONFIG_HELP)
    add_flags(serve, SERVE_SETTINGS)
    # set by `serve --workers N` on the processes it starts: listen with SO_REUSEPORT
    serve.add_argument("--reuse-port", action="store_true", help=argparse.SUPPRESS)

    # listed for --help; main() hands `orchestra agent ...` to agent_cli before this parser runs
    sub.add_parser("agent", help="talk to a server from a script (orchestra agent --help)", add_help=False)
    token = sub.add_parser("token", help="print a JWT signed with the server's key")
    token.add_argument("--project", type=identifier, default=None)
    token.add_argument("--agent-type", type=identifier, required=True)
    token.add_argument("--sub", type=identifier, default=None)
    token.add_argument("--ttl", type=number_in(1, MAX_TOKEN_TTL, "seconds"), default=3600,
                       help=f"seconds the token is valid, from 1 to {MAX_TOKEN_TTL} (ten years) [default: %(default)s]")
    token.add_argument("--admin", action="store_true")
    token.add_argument("--permissions", default=None, help="comma-separated: " + ",".join(sorted(PERMISSIONS)))
    token.add_argument("--data-dir", type=Path, default=argparse.SUPPRESS, metavar="DIR",
                       help="the server's data dir, whose key signs (env ORCHESTRA_DATA_DIR, "
                            "else the --config file's data_dir)")
    token.add_argument("--config", type=Path, default=None, metavar="FILE",
                       help="the server's config file, for its data_dir (env ORCHESTRA_CONFIG)")

    config = sub.add_parser("config", help="the server's settings: a default file, the reference, a check")
    what = config.add_mutually_exclusive_group(required=True)
    what.add_argument("--print-defaults", action="store_true",
                      help="write a commented TOML file of every setting at its default to stdout")
    what.add_argument("--print-reference", action="store_true",
                      help="write the settings reference (Markdown, as in docs/configuration.md) to stdout")
    what.add_argument("--show", action="store_true",
                      help="check the settings `orchestra serve` would run with (this environment and "
                           "--config file) and print each with where it came from")
    config.add_argument("--config", type=Path, default=None, metavar="FILE", help=_CONFIG_HELP)
    return parser


def _version() -> str:
    from .. import __version__

    return __version__


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["agent"]:
        from .agent_cli import main as agent_main

        return agent_main(argv[1:])
    if argv[:1] == ["demo"]:  # its own parser (transport/demo.py)
        from .demo import main as demo_main

        return demo_main(argv[1:])
    if argv[:1] == ["mcp"]:  # its own parser (transport/mcp/); serving imports the mcp SDK
        from .mcp import main as mcp_main

        return mcp_main(argv[1:])
    if argv[:1] == ["dashboard"]:  # its own parser (transport/dashboard/app.py)
        from .dashboard.app import main as dashboard_main

        return dashboard_main(argv[1:], default_data_dir)
    args = build_parser().parse_args(argv)
    try:
        if args.command == "token":
            return _token(args)
        if args.command == "config":
            return _config(args)
        return _serve(args)
    except _StartError as exc:
        print(f"orchestra {args.command}: {exc}", file=sys.stderr)
        return exc.status


def _settings(args: argparse.Namespace) -> argparse.Namespace:
    """The serve settings: flags, environment, file, defaults (transport/config.py). A flag
    added to the parser by hand, not as a setting, keeps its parsed value (but has no variable
    or file key: make it a setting)."""
    from .config import SERVE_SETTINGS, ConfigError, config_path, resolve

    flags = vars(args)
    try:
        resolved = resolve(SERVE_SETTINGS, flags, os.environ, config_path(flags, os.environ))
    except ConfigError as exc:
        raise _StartError(str(exc), 2) from None
    return argparse.Namespace(**{**flags, **resolved.values})


def _config(args: argparse.Namespace) -> int:
    from .config import (
        SERVE_SETTINGS,
        ConfigError,
        config_path,
        default_file,
        reference_markdown,
        resolve,
    )

    if args.print_defaults:
        sys.stdout.write(default_file(SERVE_SETTINGS))
        return 0
    if args.print_reference:
        sys.stdout.write(reference_markdown(SERVE_SETTINGS))
        return 0
    path = config_path(vars(args), os.environ)
    try:
        resolved = resolve(SERVE_SETTINGS, {}, os.environ, path)
    except ConfigError as exc:
        raise _StartError(str(exc), 2) from None
    for s in SERVE_SETTINGS:
        value = resolved.values[s.name]
        if value is None:  # worked out at start, as serve does
            value = {"data_dir": default_data_dir(), "root": Path.cwd()}.get(s.name, s.shown_default())
        origin = resolved.origins[s.name]
        source = {"env": s.env, "file": str(path)}.get(origin, origin)
        print(f"{s.name} = {value!s}  ({source})")
    return 0


def _data_dir(args: argparse.Namespace) -> Path:
    """``token``'s data dir, found as serve finds it: flag, variable, config file, default."""
    from .config import SERVE_SETTINGS, ConfigError, config_path, resolve

    flags = vars(args)
    try:
        found = resolve(SERVE_SETTINGS, flags, os.environ, config_path(flags, os.environ), only=("data_dir",))
    except ConfigError as exc:
        raise _StartError(str(exc), 2) from None
    return Path(found.values["data_dir"] or default_data_dir())


def _token(args: argparse.Namespace) -> int:
    from ..actors.profiles import PERMISSIONS, Profiles
    from .auth import Auth, KeyFileError, load_secret

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
    try:
        secret = load_secret(_data_dir(args))
    except KeyFileError as exc:
        raise _StartError(str(exc)) from None
    auth = Auth(secret, Profiles())
    print(auth.mint(
        sub=args.sub or f"{args.agent_type}-{os.getpid()}",
        agent_type=args.agent_type,
        project_id=args.project or "*",
        ttl=args.ttl,
        permissions=perms,
        admin=args.admin,
    ))
    return 0


def prepare_data_dir(path: Path) -> None:
    """Makes the data dir (mode 0700: it holds the signing key) and checks that it can be
    written; raises ``OSError`` if not."""
    import tempfile

    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    with tempfile.TemporaryFile(dir=path, prefix=".write-check-"):
        pass


def _prepare(args: argparse.Namespace, profiles: Profiles) -> tuple[Path, Auth]:
    """The data dir, ready to be written, and the verifier of tokens (its keys read and
    checked): what can fail before the server starts fails here, as one line."""
    import logging
    import sqlite3

    from ..actors.store import SQLiteBackend, StoreError, default_db_path
    from .auth import (
        Auth,
        KeyFileError,
        load_previous_key,
        load_public_key,
        load_secret,
        loose_permissions,
    )

    data_dir = (args.data_dir or default_data_dir()).resolve()
    try:
        prepare_data_dir(data_dir)
    except OSError as exc:
        raise _StartError(f"data dir {data_dir}: {exc.strerror or exc}") from None
    if args.store is None:
        db_path = default_db_path(data_dir)
        store = SQLiteBackend(db_path)
        try:
            store.open()  # also brings an older store's schema up to date
        except (sqlite3.Error, StoreError) as exc:
            raise _StartError(f"the store {db_path} cannot be opened: {exc}") from None
        finally:
            store.close()
    try:
        secret = load_secret(data_dir, create=True)
        public_key = load_public_key(args.jwt_public_key, args.jwt_algorithm) if args.jwt_public_key else None
        previous = (load_previous_key(args.jwt_previous_key, args.jwt_algorithm),) if args.jwt_previous_key else ()
    except KeyFileError as exc:
        raise _StartError(str(exc)) from None
    except OSError as exc:  # the key could not be created
        raise _StartError(f"data dir {data_dir}: cannot write the signing key: {exc.strerror or exc}") from None
    key_file = data_dir / "jwt.secret"
    if not os.environ.get("ORCHESTRA_JWT_SECRET") and loose_permissions(key_file):
        logging.getLogger("orchestra").warning(
            "%s can be read by other users than its owner; chmod 600 it", key_file)
    auth = Auth(secret, profiles, public_key=public_key,
                public_algorithm=args.jwt_algorithm if public_key is not None else None,
                previous_keys=previous)
    return data_dir, auth


def _serve(args: argparse.Namespace) -> int:
    import logging

    import trio

    from ..actors.context.engine import ContextLimits
    from ..actors.profiles import ProfileError, Profiles
    from ..actors.project import ProjectConfig
    from ..actors.system import ActorSystem, SystemConfig
    from .api import Api, ApiConfig
    from .config import SERVE_SETTINGS, misspelt_variables
    from .observability import configure_logging
    from .server import Server, ServerConfig

    args = _settings(args)
    configure_logging(args.log_level.upper(), args.log_format, access_log=args.access_log)
    for warning in misspelt_variables(SERVE_SETTINGS, os.environ):
        logging.getLogger("orchestra").warning("%s", warning)
    try:
        profiles = Profiles.load(args.profiles)
    except ProfileError as exc:
        raise _StartError(str(exc), 2) from None
    if args.workers > 1 and args.store is None:
        raise _StartError("--workers: more than one process needs a postgresql:// --store "
                          "(the SQLite store belongs to one process)", 2)
    if args.lease_expiry < 2 * args.lease_interval:
        raise _StartError(f"--lease-expiry ({args.lease_expiry:g} s) must be at least twice "
                          f"--lease-interval ({args.lease_interval:g} s)", 2)
    if args.store is not None:
        from ..actors.store_postgres import store_url_problem

        if (problem := store_url_problem(args.store)) is not None:
            raise _StartError(f"--store: {problem}", 2)
    data_dir, auth = _prepare(args, profiles)
    if args.workers > 1:
        from .workers import serve_workers

        try:
            return trio.run(serve_workers, args.workers, args.host, args.port,
                            args.shutdown_grace + args.agent_stop_grace + 10.0)
        except KeyboardInterrupt:
            return 0
    store_url = args.store
    system = ActorSystem(SystemConfig(
        data_dir=data_dir,
        store_url=store_url,
        profiles=profiles,
        project=ProjectConfig(max_events=args.event_retention, max_event_bytes=args.event_retention_bytes,
                              idempotency_window=args.idempotency_window),
        synchronous=args.sync.upper(),
        roots=dict(args.project),
        context_sweep=args.context_sweep,
        context_withhold=tuple(args.context_withhold),
        context_limits=ContextLimits(listing_share=args.context_listing_share,
                                     search_cache_bytes=args.context_search_cache_bytes,
                                     word_tables=args.context_word_tables),
        default_root=args.root or Path.cwd().resolve(),
        agents_per_project=args.max_agents_per_project,
        agents_max_depth=args.max_spawn_depth,
        agents_shutdown_grace=args.agent_stop_grace,
        lease_interval=args.lease_interval,
        lease_expiry=args.lease_expiry,
    ))
    if args.otel:
        import importlib.util

        if importlib.util.find_spec("opentelemetry") is None:
            raise _StartError("--otel needs OpenTelemetry: pip install 'orchestra-sidecar[otel]'", 2)
    api = Api(system, auth, ApiConfig(
        otel=args.otel,
        rate_limits=args.rate_limits,
        fault_injection=args.fault_injection,
        max_body_bytes=args.max_body_bytes,
        max_json_depth=args.max_json_depth,
    ))
    server = Server(api, ServerConfig(max_body_bytes=args.max_body_bytes, max_json_depth=args.max_json_depth))
    _tune_gc()
    try:
        return trio.run(_serve_async, args.host, args.port, system, api, server, args.shutdown_grace,
                        args.reuse_port)
    except KeyboardInterrupt:
        return 0
    except BaseException as exc:
        gave_up = _gave_up(exc)
        if gave_up is None:
            raise
        # a crash loop past the root's intensity: exit non-zero and say why, in one line
        print(f"orchestra serve: {gave_up}; stopped (everything acknowledged is in {data_dir}: "
              "start it again)", file=sys.stderr)
        return 1


def _gave_up(exc: BaseException) -> BaseException | None:
    """The root supervisor's ``SupervisorGaveUp`` in ``exc`` (bare or in an exception group)."""
    from ..actors.runtime import SupervisorGaveUp

    if isinstance(exc, SupervisorGaveUp):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _gave_up(inner)
            if found is not None:
                return found
    return None


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


async def _serve_async(host: str, port: int, system: ActorSystem, api: Api, server: Server, grace: float,
                       reuse_port: bool = False) -> int:
    import logging

    import trio

    from .workers import reuse_port_listener

    log = logging.getLogger("orchestra")

    try:
        if reuse_port:
            listeners = [await reuse_port_listener(host, port)]
        else:
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
