"""The running dashboard: one SDK client, a poll task (/status, then the agents of each
project), an event task (one ``"*"`` subscription into the model's bounded tail) and a draw
loop at a steady rate. Events are aggregated into the model as they come; the screen is
drawn only by the draw loop (``refresh`` times a second), never per event."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import trio
from rich.console import Console

from ..argtypes import number_in
from ..client import ClientConfig, EventsLost, Forbidden, OrchestraError, Unauthorized, connect
from .model import DashboardModel, replay_since
from .render import render

__all__ = ["DashboardConfig", "main", "run", "snapshot"]

DEFAULT_URL = "http://127.0.0.1:3001"


class DashboardConfig(argparse.Namespace):
    url: str
    token: str | None
    filter: str | None
    once: bool
    issue: str | None
    data_dir: Path | None
    timeout: float
    refresh: float
    poll: float


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="orchestra dashboard", description="a live console view of a running server")
    parser.add_argument("--url", default=os.environ.get("ORCHESTRA_URL", DEFAULT_URL),
                        help=f"the server (default env ORCHESTRA_URL, else {DEFAULT_URL})")
    parser.add_argument("--token", default=os.environ.get("ORCHESTRA_TOKEN") or None,
                        help="an admin token for project '*' (default: minted from the data dir's key)")
    parser.add_argument("--data-dir", type=Path, default=None, help="the server's data dir, for minting a token")
    parser.add_argument("--filter", default=None, help="the protocol's filter grammar, for the event tail")
    parser.add_argument("--issue", default=None, help="the issue whose chain is shown (default: the latest completed)")
    parser.add_argument("--once", action="store_true", help="print one snapshot and exit (no TTY needed)")
    parser.add_argument("--timeout", type=number_in(0.1, 3600), default=10.0,
                        help="with --once: seconds to wait for a connection before giving up")
    parser.add_argument("--refresh", type=number_in(0.5, 10), default=3.0, help="screen redraws per second")
    parser.add_argument("--poll", type=number_in(0.1, 60), default=1.0, help="seconds between /status polls")
    return parser


def mint_admin_token(data_dir: Path) -> str:
    """An admin token for every project, signed with the key in ``data_dir`` (as ``orchestra
    token --admin`` mints it)."""
    from ...actors.profiles import Profiles
    from ..auth import Auth, load_secret

    auth = Auth(load_secret(data_dir), Profiles())
    return auth.mint(sub=f"dashboard-{os.getpid()}", agent_type="dashboard", project_id="*", ttl=86_400, admin=True)


async def poll_once(client: Any, model: DashboardModel) -> None:
    """One round: /status into the model, then the agents of each project it lists."""
    model.apply_status(await client.status(), trio.current_time())
    for project in list(model.projects):
        try:
            listed = await client.list_agents(project_id=project)
        except OrchestraError:
            continue  # a server without agent processes (404/503): no agents shown
        agents = listed.get("agents") if isinstance(listed, dict) else None
        model.apply_agents(project, agents if isinstance(agents, list) else [])
    model.forget_projects(set(model.projects))


async def _poller(client: Any, model: DashboardModel, every: float) -> None:
    """Polls every ``every`` seconds. A poll not answered in time (the SDK reconnecting
    underneath) shows ``reconnecting``; the figures shown stay the last ones known."""
    while True:
        problem: str | None = "no answer"
        with trio.move_on_after(max(2.0, every * 2)):
            try:
                await poll_once(client, model)
                problem = None
            except (Unauthorized, Forbidden):
                raise  # final for the client: the command ends with one line
            except OrchestraError as exc:  # a server shutting down (503), a connection given up
                problem = f"{type(exc).__name__}: {exc.code}"
        if problem is not None:
            model.set_connection("reconnecting", problem)
        else:
            reconnects = client.connections - 1
            model.set_connection("connected", f"reconnected {reconnects}x" if reconnects else "")
        await trio.sleep(every)


async def _events(sub: Any, model: DashboardModel) -> None:
    while True:
        try:
            async for event in sub:
                model.apply_event(event, time.time())
            return
        except EventsLost:
            model.events_lost += 1


async def _subscribe(client: Any, model: DashboardModel) -> Any:
    """The ``"*"`` subscription of the tail, replaying the latest events of each project; a
    filter that does not parse raises here (``InvalidRequest``), before anything is drawn."""
    since = replay_since(model.projects, model.bounds.replay) or None
    return await client.subscribe("*", filter=model.filter, project_id="*", since=since)


async def snapshot(url: str, token: str, *, event_filter: str | None = None, issue: str | None = None,
                   settle: float = 0.5, config: ClientConfig | None = None) -> DashboardModel:
    """Connect, poll twice (rates need two snapshots) with events gathered in between, and
    return the model: what ``--once`` prints."""
    model = DashboardModel(url=url, filter=event_filter, issue=issue)
    async with connect(url, token, config=config) as client:
        model.set_connection("connected")
        await poll_once(client, model)
        sub = await _subscribe(client, model)
        with trio.move_on_after(settle):
            await _events(sub, model)
        await poll_once(client, model)
    return model


async def run(args: DashboardConfig, token: str, console: Console) -> int:
    """The live view until Ctrl-C. Connects (waiting for the server as long as it takes) and
    subscribes first, so that a refused token or filter is one line on stderr, not a screen."""
    from rich.live import Live

    model = DashboardModel(url=args.url, filter=args.filter, issue=args.issue)
    config = ClientConfig(reconnect_timeout=None, connect_timeout=5.0, backoff_max=2.0)

    def view() -> Any:
        return render(model, console.size.width, console.size.height, now=trio.current_time())

    print(f"orchestra dashboard: connecting to {args.url}", file=sys.stderr)
    async with connect(args.url, token, config=config) as client:
        model.set_connection("connected")
        await poll_once(client, model)
        sub = await _subscribe(client, model)
        with Live(view(), console=console, auto_refresh=False, screen=True) as live:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(_poller, client, model, args.poll)
                nursery.start_soon(_events, sub, model)
                while True:
                    live.update(view(), refresh=True)
                    await trio.sleep(1 / args.refresh)
    return 0


def _orchestra_error(exc: BaseException) -> OrchestraError | None:
    """The SDK's error that ended a run, also from inside an exception group."""
    if isinstance(exc, OrchestraError):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = _orchestra_error(inner)
            if found is not None:
                return found
    return None


def main(argv: list[str], default_data_dir: Callable[[], Path]) -> int:
    """``orchestra dashboard``; ``default_data_dir`` is the server's (transport/cli.py), for
    minting a token when none is given."""
    args = build_parser().parse_args(argv, namespace=DashboardConfig())
    token = args.token
    if token is None:
        try:
            token = mint_admin_token(args.data_dir or default_data_dir())
        except OSError as exc:
            print(f"orchestra dashboard: cannot mint a token from the data dir: {exc}", file=sys.stderr)
            return 2
    if args.once:
        console = Console(width=max(80, Console().width) if sys.stdout.isatty() else 100)
        try:
            config = ClientConfig(reconnect_timeout=args.timeout, connect_timeout=args.timeout)
            model = trio.run(lambda: snapshot(args.url, token, event_filter=args.filter,
                                              issue=args.issue, config=config))
        except OrchestraError as exc:
            print(f"orchestra dashboard: {type(exc).__name__}: {exc}", file=sys.stderr)
            return 1
        console.print(render(model, console.width, 60, now=model.status_at,
                             now_wall=time.time()))
        return 0
    try:
        return trio.run(run, args, token, Console())
    except KeyboardInterrupt:
        return 0
    except BaseException as exc:
        error = _orchestra_error(exc)
        if error is None:
            if isinstance(exc, BaseExceptionGroup) and exc.subgroup(KeyboardInterrupt) is not None:
                return 0
            raise
        print(f"orchestra dashboard: {type(error).__name__}: {error}", file=sys.stderr)
        return 1
