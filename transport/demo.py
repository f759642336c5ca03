"""`orchestra demo`: a real server, a generated code base, and a fleet a newcomer can watch.

Everything goes through the public protocol, as a user's own tooling would: the server runs as
its own process (`orchestra serve`), the fleet is spawned through the spawn API, and every agent
is the ordinary program examples/fleet_agent.py on the SDK. The demo itself only starts the
chief architects (one per project), watches the events of every project through an admin
``"*"`` subscription, and prints a summary at the end. ``--chaos`` crashes actors through fault
injection and SIGKILLs agent processes while the fleet works, and still expects every round's
work done.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
import trio

from .demo_codebase import write_codebase

__all__ = ["main", "plan_fleet"]

AGENT_TYPES = (
    "chief-architect", "python-specialist", "go-specialist", "rust-specialist", "api-explorer",
    "devops-engineer", "code-reviewer", "security-auditor", "test-engineer", "documentation-expert",
)
IMPLEMENTERS = AGENT_TYPES[1:6]
REVIEWERS = ("code-reviewer", "security-auditor")
MODULES = ("models", "pricing", "storage", "reports", "cli")
FLEET_AGENT = Path(__file__).resolve().parent.parent / "examples" / "fleet_agent.py"
#: how often --chaos may kill one agent: its profile restarts it up to 10 times a minute
KILLS_PER_AGENT = 2
#: actor crashes --chaos injects in any minute, under the root's intensity of 20
CRASHES_PER_MINUTE = 8


def plan_fleet(size: int) -> list[tuple[str, str | None]]:
    """The agents a project's architect spawns for a project of ``size`` agents (itself
    included): half implementers, then reviewers, test engineers and documentation experts,
    each on a module (round robin). At least one of each kind once ``size`` >= 5."""
    rest = max(0, size - 1)
    tests = max(1, rest // 10) if rest >= 4 else 0
    docs = max(1, rest // 10) if rest >= 4 else 0
    reviews = max(1, (rest - tests - docs) * 2 // 5) if rest >= 2 else 0
    implements = rest - tests - docs - reviews
    fleet: list[tuple[str, str | None]] = []
    for i in range(implements):
        fleet.append((IMPLEMENTERS[i % len(IMPLEMENTERS)], MODULES[i % len(MODULES)]))
    for i in range(reviews):
        fleet.append((REVIEWERS[i % len(REVIEWERS)], MODULES[i % min(len(MODULES), max(1, implements))]))
    fleet += [("test-engineer", None)] * tests
    fleet += [("documentation-expert", None)] * docs
    return fleet


def _profiles(path: Path, fleet_agent: Path, size: int) -> None:
    """Every agent type runs the fleet agent, restarted on failure (chaos kills some)."""
    command = json.dumps([sys.executable, str(fleet_agent)])
    lines = []
    for agent_type in AGENT_TYPES:
        lines += [
            f'[profiles."{agent_type}"]',
            f"command = {command}",
            'restart = "on-failure"',
            "max_restarts = 10",
            "restart_backoff = 0.2",
            "stall_timeout = 120",
            f"max_running = {size + 8}",
            "",
        ]
    path.write_text("\n".join(lines))


@dataclass
class ProjectView:
    """What the demo knows of one project, from the events it watches."""

    expected: int
    spawned: set[str] = field(default_factory=set)
    exited_ok: set[str] = field(default_factory=set)
    failed: set[str] = field(default_factory=set)
    results: int = 0
    events: int = 0
    rounds: set[int] = field(default_factory=set)

    @property
    def done(self) -> bool:
        return len(self.exited_ok) + len(self.failed) >= self.expected


@dataclass
class Chaos:
    injected: Counter[str] = field(default_factory=Counter)
    killed: list[str] = field(default_factory=list)
    crash_times: list[float] = field(default_factory=list)


class Demo:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.workdir = Path(tempfile.mkdtemp(prefix="orchestra-demo-"))
        self.projects = [f"demo-{i + 1}" for i in range(args.projects)]
        sizes = [args.agents // args.projects + (1 if i < args.agents % args.projects else 0)
                 for i in range(args.projects)]
        self.sizes = dict(zip(self.projects, sizes, strict=True))
        self.views = {p: ProjectView(self.sizes[p]) for p in self.projects}
        self.chaos = Chaos()
        self.started = time.monotonic()
        self.url = ""
        self.proc: subprocess.Popen[bytes] | None = None

    # -- the server, as its own process --

    def start_server(self) -> None:
        data = self.workdir / "data"
        argv = [sys.executable, "-m", "orchestra", "serve", "--port", "0", "--data-dir", str(data),
                "--profiles", str(self.workdir / "profiles.toml"), "--root", str(self.workdir)]
        for project in self.projects:
            argv += ["--project", f"{project}={self.workdir / 'code' / project}"]
        if self.args.chaos:
            argv.append("--fault-injection")
        log = open(self.workdir / "server.log", "wb")  # noqa: SIM115 - the server process owns it
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=log, start_new_session=True)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().decode().strip()
        if not line.startswith("listening on "):
            raise SystemExit(f"orchestra demo: the server did not start (see {self.workdir / 'server.log'})")
        self.url = line.removeprefix("listening on ")

    def stop_server(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def token(self, project: str, agent_type: str, sub: str, *, admin: bool = False) -> str:
        from ..actors.profiles import Profiles
        from .auth import Auth, load_secret

        auth = Auth(load_secret(self.workdir / "data", create=False), Profiles())
        return auth.mint(sub=sub, agent_type=agent_type, project_id=project, ttl=3600, admin=admin)

    # -- the run --

    async def run(self) -> int:
        from . import client

        for project in self.projects:
            write_codebase(self.workdir / "code" / project)
        _profiles(self.workdir / "profiles.toml", FLEET_AGENT, max(self.sizes.values()))
        self.start_server()
        admin = self.token("*", "orchestra-demo", "demo-watch", admin=True)
        deadline = self.args.timeout
        try:
            async with client.connect(self.url, admin) as watcher, trio.open_nursery() as nursery:
                sub = await watcher.subscribe("*", project_id="*")
                nursery.start_soon(self._watch, sub)
                for project in self.projects:
                    await self._spawn_architect(client, project)
                if self.args.chaos:
                    nursery.start_soon(self._chaos, client)
                nursery.start_soon(self._reconcile)
                with trio.move_on_after(deadline) as timer:
                    await self._show(watcher)
                nursery.cancel_scope.cancel()
            status = await self._status(client, admin)
        finally:
            self.stop_server()
        ok = not timer.cancelled_caught and all(
            len(v.exited_ok) >= v.expected and not v.failed for v in self.views.values())
        self._summary(status, timed_out=timer.cancelled_caught)
        if self.args.keep:
            print(f"kept: {self.workdir} (server log, data dir, code bases, agent logs)")
        else:
            shutil.rmtree(self.workdir, ignore_errors=True)
        return 0 if ok else 1

    async def _spawn_architect(self, client: Any, project: str) -> None:
        fleet = plan_fleet(self.sizes[project])
        token = self.token(project, "chief-architect", f"{project}-lead")
        params = {"fleet": fleet, "root": str(self.workdir / "code" / project)}
        async with client.connect(self.url, token) as lead:
            await lead.spawn("chief-architect", f"{project}-PLAN",
                             task="plan the work on the inventory library and spawn the fleet",
                             environment={"DEMO_PARAMS": json.dumps(params)},
                             idempotency_key=f"{project}-architect")

    async def _watch(self, sub: Any) -> None:
        async for event in sub:
            view = self.views.get(event.get("project_id"))
            if view is None:
                continue
            view.events += 1
            data = event.get("data") or {}
            kind = event["event_type"]
            agent = data.get("agent_id", "")
            if event.get("round") is not None:
                view.rounds.add(event["round"])
            if kind == "agent_spawned":
                view.spawned.add(agent)
            elif kind == "agent_exited" and data.get("exit_code") == 0:
                view.exited_ok.add(agent)
            elif kind in ("agent_exited", "agent_failed"):  # ended for good, without success
                view.failed.add(agent)
            elif kind == "agent_completed":
                view.results += 1

    async def _ask(self, method: str, target: str, token: str, body: bytes = b"") -> Any:
        """One request to the demo's server: the answer, or None when it cannot be had now
        (a connection reset or refused while chaos crashes things; 10 s at most)."""
        import h11

        from .http_client import request

        host, port = self.url.removeprefix("http://").rsplit(":", 1)
        with trio.move_on_after(10):
            try:
                return await request(host, int(port), method, target, token=token, body=body)
            except (OSError, trio.BrokenResourceError, h11.ProtocolError):
                return None
        return None

    async def _reconcile(self) -> None:
        """Every two seconds, the agents' states from the agent API, the authority: an
        ``agent_*`` event whose publication failed while chaos crashed its project is not
        waited for forever."""

        admin = self.token("*", "orchestra-demo", "demo-reconcile", admin=True)
        while True:
            await trio.sleep(2)
            for project, view in self.views.items():
                listed = await self._ask("GET", f"/api/agents?project_id={project}", admin)
                if listed is None or listed.status != 200:
                    continue
                for agent in orjson.loads(listed.body)["agents"]:
                    view.spawned.add(agent["agent_id"])
                    if agent["state"] == "exited" and agent.get("exit_code") == 0:
                        view.exited_ok.add(agent["agent_id"])
                    elif agent["state"] in ("exited", "failed", "stopped"):
                        view.failed.add(agent["agent_id"])

    async def _show(self, watcher: Any) -> None:
        """Until every agent has ended: a live view (rich), or a line every few seconds."""
        if self.args.no_dashboard or not sys.stdout.isatty():
            last = 0.0
            while not all(v.done for v in self.views.values()):
                await trio.sleep(0.25)
                if time.monotonic() - last >= 5:
                    last = time.monotonic()
                    print(self._line(), flush=True)
            print(self._line(), flush=True)
            return
        # the live dashboard (orchestra dashboard) on the demo's server, while the fleet works
        from rich.console import Console

        from .dashboard.app import DashboardConfig
        from .dashboard.app import run as dashboard

        view = DashboardConfig(url=self.url, token=None, filter=None, once=False, issue=None,
                               data_dir=None, timeout=10.0, refresh=4.0, poll=1.0)
        admin = self.token("*", "orchestra-demo", "demo-dashboard", admin=True)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(dashboard, view, admin, Console())
            while not all(v.done for v in self.views.values()):  # noqa: ASYNC110 (set by two tasks)
                await trio.sleep(0.25)
            nursery.cancel_scope.cancel()
        print(self._line(), flush=True)

    def _line(self) -> str:
        parts = [f"{p}: {len(v.exited_ok)}/{v.expected} done, {len(v.spawned)} spawned, "
                 f"{v.results} results" for p, v in self.views.items()]
        return f"[{time.monotonic() - self.started:5.1f}s] " + "; ".join(parts)

    async def _chaos(self, client: Any) -> None:
        """Crash actors and kill agent processes while the fleet works."""

        rnd = random.Random(7)
        admin = self.token("*", "orchestra-demo", "demo-chaos", admin=True)
        targets = ["store", "broker", *(f"project:{p}" for p in self.projects),
                   *(f"context:{p}" for p in self.projects)]
        while True:
            await trio.sleep(rnd.uniform(0.2, 0.8))
            # at most KILLS_PER_AGENT kills each, well within its restart budget (max_restarts)
            running = [(p, a) for p, v in self.views.items()
                       for a in sorted(v.spawned - v.exited_ok - v.failed)
                       if self.chaos.killed.count(a) < KILLS_PER_AGENT]
            if rnd.random() < 0.5 and running:
                project, agent = rnd.choice(running)
                # its pid now (a restarted agent has a new one), from the agent API
                answer = await self._ask("GET", f"/api/agents/{agent}/status?project_id={project}", admin)
                record = orjson.loads(answer.body) if answer is not None and answer.status == 200 else {}
                if record.get("state") == "running" and isinstance(record.get("pid"), int):
                    try:
                        os.kill(record["pid"], signal.SIGKILL)
                        self.chaos.killed.append(agent)
                    except ProcessLookupError:
                        pass  # it had ended already
                continue
            # crashes stay under the supervisors' intensity (20 restarts a minute): chaos tests
            # recovery, not the deliberate give-up of a crash loop
            now = time.monotonic()
            recent = [t for t in self.chaos.crash_times if now - t < 60]
            self.chaos.crash_times = recent
            if len(recent) >= CRASHES_PER_MINUTE:
                continue
            target = rnd.choice(targets)
            answer = await self._ask("POST", "/api/admin/faults", admin,
                                     orjson.dumps({"target": target, "kind": "crash"}))
            if answer is not None and answer.status == 200:
                self.chaos.injected[target.split(":")[0]] += 1
                self.chaos.crash_times.append(now)

    async def _status(self, client: Any, admin: str) -> dict[str, Any]:

        answer = await self._ask("GET", "/status", admin)
        status: dict[str, Any] = orjson.loads(answer.body) if answer is not None and answer.status == 200 else {}
        restarted = 0
        for project in self.projects:
            listed = await self._ask("GET", f"/api/agents?project_id={project}", admin)
            if listed is not None and listed.status == 200:
                restarted += sum(1 for a in orjson.loads(listed.body)["agents"] if a.get("restarts"))
        status["agents_restarted"] = restarted
        return status

    def _summary(self, status: dict[str, Any], *, timed_out: bool) -> None:
        from rich.console import Console
        from rich.table import Table

        console = Console()
        total = sum(v.expected for v in self.views.values())
        ok = sum(len(v.exited_ok) for v in self.views.values())
        failed = sum(len(v.failed) for v in self.views.values())
        console.print(
            f"\n[bold]orchestra demo[/bold]: {ok}/{total} agents succeeded, {failed} failed"
            f"{' (timed out)' if timed_out else ''} in {time.monotonic() - self.started:.1f}s; "
            f"{sum(v.results for v in self.views.values())} results stored; "
            f"{sum(v.events for v in self.views.values())} events delivered to the watcher"
        )
        perf = status.get("performance", {})
        if perf:
            table = Table(title="latency per operation (server side)")
            for column in ("operation", "count", "p50 ms", "p99 ms"):
                table.add_column(column, justify="left" if column == "operation" else "right")
            for op, figures in sorted(perf.items()):
                table.add_row(op, str(figures.get("count", 0)), str(figures.get("p50_ms", "-")),
                              str(figures.get("p99_ms", "-")))
            console.print(table)
        cache = status.get("context_cache", {})
        actors = status.get("actors", {})
        console.print(f"context cache hit rate: {cache.get('hit_rate')}; actor restarts: "
                      f"{actors.get('restarts')}, crashes: {actors.get('crashes')}")
        if self.args.chaos:
            restarted = status.get("agents_restarted", 0)
            console.print(
                f"chaos: injected {dict(self.chaos.injected)} actor crashes and killed "
                f"{len(self.chaos.killed)} agent processes; {restarted} agents were restarted and "
                f"{ok}/{total} finished their work"
            )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="orchestra demo", description=__doc__.split("\n")[0])
    parser.add_argument("--agents", type=int, default=119, help="agents in all (default 119)")
    parser.add_argument("--projects", type=int, default=3, help="projects (default 3)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary folder and print it")
    parser.add_argument("--no-dashboard", action="store_true", help="plain progress lines, no live view")
    parser.add_argument("--chaos", action="store_true", help="crash actors and kill agents while it runs")
    parser.add_argument("--timeout", type=float, default=300.0, help="give up after this many seconds")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.projects < 1 or args.agents < args.projects * 5:
        print("orchestra demo: needs at least one project and five agents per project", file=sys.stderr)
        return 2
    if not FLEET_AGENT.is_file():
        print(f"orchestra demo: {FLEET_AGENT} is missing (run it from a checkout)", file=sys.stderr)
        return 2
    return trio.run(Demo(args).run)
