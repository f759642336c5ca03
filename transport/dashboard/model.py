"""The dashboard's model: what a person sees, aggregated from /status snapshots, agent lists
and events (sans-IO, no terminal, no clock of its own: every method takes ``now``).

Guarantees: memory is bounded (the event tail and the rate series are deques with a
``maxlen``; agents kept per project are capped), and applying input never raises for a
missing or oddly typed field (a server of another version shows what it can)."""

from __future__ import annotations

import collections
import datetime
from dataclasses import dataclass, field
from typing import Any

__all__ = ["ActorRow", "ChainStep", "DashboardModel", "ModelBounds", "TailEvent", "replay_since"]


@dataclass(frozen=True)
class ModelBounds:
    #: events kept for the tail (the newest)
    tail: int = 200
    #: rate samples kept per series (one per status poll: at 1 poll/s, four minutes)
    series: int = 240
    #: agents kept per project (the newest spawns, as the server lists them)
    agents_per_project: int = 200
    #: events replayed per project when the tail starts
    replay: int = 20
    #: issues whose chain is kept (the latest active), and steps kept per issue
    chains: int = 50
    chain_steps: int = 30
    #: seconds a restart stays highlighted
    highlight_seconds: float = 10.0


@dataclass(frozen=True)
class TailEvent:
    event_type: str
    publisher: str
    project_id: str
    correlation_id: str
    round: str
    at: float


@dataclass(frozen=True)
class ChainStep:
    """One ``agent_completed`` of an issue: who finished, how, and which agents it named next."""

    agent_id: str
    agent_type: str
    status: str
    next_agents: tuple[str, ...]


@dataclass
class ActorRow:
    """One actor of the supervision tree, flattened (``depth`` levels under the root)."""

    path: str
    depth: int
    state: str
    restarts: int
    crashes: int
    last_crash: str | None
    highlighted: bool = False


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _str(value: Any) -> str:
    return value if isinstance(value, str) else ("" if value is None else str(value))


def _wall_time(iso: Any, default: float) -> float:
    if not isinstance(iso, str):
        return default
    try:
        return datetime.datetime.fromisoformat(iso.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return default


def replay_since(projects: dict[str, dict[str, Any]], count: int) -> dict[str, str]:
    """A ``since`` per project that replays about its last ``count`` events, from the
    ``last_cursor`` of /status detail; a project whose cursor is not a zero-padded number is
    left out (it starts with new events)."""
    since: dict[str, str] = {}
    for name, detail in projects.items():
        cursor = detail.get("last_cursor")
        if isinstance(cursor, str) and cursor.isdigit():
            since[name] = str(max(0, int(cursor) - count)).zfill(len(cursor))
    return since


@dataclass
class DashboardModel:
    """Everything the renderer draws. One writer: the dashboard's poll and event tasks run on
    one trio thread and call these methods in turn."""

    url: str
    bounds: ModelBounds = field(default_factory=ModelBounds)
    filter: str | None = None
    connection: str = "connecting"
    connection_detail: str = ""
    version: str = "?"
    uptime: float | None = None
    status_at: float | None = None
    connected_by_type: dict[str, int] = field(default_factory=dict)
    spawned_running: int = 0
    projects: dict[str, dict[str, Any]] = field(default_factory=dict)
    project_activity: dict[str, float] = field(default_factory=dict)
    agents: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    performance: dict[str, dict[str, Any]] = field(default_factory=dict)
    restarts: int = 0
    crashes: int = 0
    actors: list[ActorRow] = field(default_factory=list)
    rate_limited: int | None = None
    cache_hit_rate: float | None = None
    events_seen: int = 0
    events_lost: int = 0
    #: the issue whose chain is shown (None: the latest one completed)
    issue: str | None = None
    #: the deployment's server processes (/status ``deployment``, an admin's view), and the
    #: one that answered
    processes: list[dict[str, Any]] = field(default_factory=list)
    process_id: str = ""

    def __post_init__(self) -> None:
        self.tail: collections.deque[TailEvent] = collections.deque(maxlen=self.bounds.tail)
        self.requests_per_s: collections.deque[float] = collections.deque(maxlen=self.bounds.series)
        self.events_per_s: collections.deque[float] = collections.deque(maxlen=self.bounds.series)
        self._last_totals: tuple[float, int, int] | None = None
        self._actor_restarts: dict[str, int] = {}
        self._highlight_until: dict[str, float] = {}
        #: per issue (the latest active last), its ``agent_completed`` steps in order
        self.chains: collections.OrderedDict[str, collections.deque[ChainStep]] = collections.OrderedDict()

    # -- connection --

    def set_connection(self, state: str, detail: str = "") -> None:
        """``connected``, ``reconnecting``, ``connecting`` or ``failed``, with a short reason."""
        self.connection, self.connection_detail = state, detail

    # -- /status --

    def apply_status(self, status: dict[str, Any], now: float) -> None:
        """Take one /status snapshot: figures replace the previous ones; rates come from the
        difference of the cumulative counts since the previous snapshot."""
        self.status_at = now
        self.version = _str(status.get("version")) or "?"
        uptime = status.get("uptime_seconds")
        self.uptime = float(uptime) if isinstance(uptime, (int, float)) else None
        agents = _dict(status.get("agents"))
        by_type = _dict(agents.get("by_type"))
        self.connected_by_type = {str(k): _int(v) for k, v in by_type.items()}
        self.spawned_running = _int(agents.get("spawned_running"))
        projects = _dict(status.get("projects"))
        detail = projects.get("detail")
        if isinstance(detail, dict):
            self.projects = {str(k): v for k, v in detail.items() if isinstance(v, dict)}
        perf = status.get("performance")
        self.performance = {str(k): v for k, v in perf.items() if isinstance(v, dict)} if isinstance(perf, dict) else {}
        actors = _dict(status.get("actors"))
        self.restarts, self.crashes = _int(actors.get("restarts")), _int(actors.get("crashes"))
        tree = actors.get("tree")
        if isinstance(tree, dict):
            self._apply_tree(tree, now)
        requests = status.get("requests")
        self.rate_limited = _int(requests.get("rate_limited")) if isinstance(requests, dict) else None
        cache = status.get("context_cache")
        rate = cache.get("hit_rate") if isinstance(cache, dict) else None
        self.cache_hit_rate = float(rate) if isinstance(rate, (int, float)) else None
        deployment = _dict(status.get("deployment"))
        listed = deployment.get("processes")
        self.processes = [p for p in listed if isinstance(p, dict)] if isinstance(listed, list) else []
        self.process_id = _str(deployment.get("process_id"))
        events = _dict(status.get("events"))
        total_requests = sum(_int(p.get("count")) for p in self.performance.values())
        total_events = _int(events.get("total_published"))
        if self._last_totals is not None:
            at, requests_before, events_before = self._last_totals
            elapsed = now - at
            if elapsed > 0:
                # a restarted server counts from zero again: no negative rate
                self.requests_per_s.append(max(0, total_requests - requests_before) / elapsed)
                self.events_per_s.append(max(0, total_events - events_before) / elapsed)
        self._last_totals = (now, total_requests, total_events)

    def _apply_tree(self, tree: dict[str, Any], now: float) -> None:
        rows: list[ActorRow] = []

        def walk(node: dict[str, Any], prefix: str, depth: int) -> None:
            children = node.get("children")
            for child in children if isinstance(children, list) else []:
                if not isinstance(child, dict):
                    continue
                path = f"{prefix}/{_str(child.get('id'))}"
                restarts = _int(child.get("restarts"))
                before = self._actor_restarts.get(path)
                if before is not None and restarts > before:
                    self._highlight_until[path] = now + self.bounds.highlight_seconds
                self._actor_restarts[path] = restarts
                last = child.get("last_crash")
                rows.append(ActorRow(
                    path=path, depth=depth, state=_str(child.get("state")), restarts=restarts,
                    crashes=_int(child.get("crashes")), last_crash=last if isinstance(last, str) else None,
                    highlighted=self._highlight_until.get(path, 0.0) > now,
                ))
                sup = child.get("supervisor")
                if isinstance(sup, dict):
                    walk(sup, path, depth + 1)

        walk(tree, "", 0)
        # forget actors that are gone (a stopped project): the maps stay as large as the tree
        alive = {r.path for r in rows}
        self._actor_restarts = {k: v for k, v in self._actor_restarts.items() if k in alive}
        self._highlight_until = {k: v for k, v in self._highlight_until.items() if k in alive and v > now}
        self.actors = rows

    # -- agent lists --

    def apply_agents(self, project_id: str, agents: list[dict[str, Any]]) -> None:
        """The spawned agents of one project (newest first, as ``agent.list`` answers)."""
        self.agents[project_id] = [a for a in agents[: self.bounds.agents_per_project] if isinstance(a, dict)]

    def forget_projects(self, keep: set[str]) -> None:
        for pid in [p for p in self.agents if p not in keep]:
            del self.agents[pid]
        for pid in [p for p in self.project_activity if p not in keep]:
            del self.project_activity[pid]

    # -- events --

    def apply_event(self, event: dict[str, Any], now_wall: float) -> None:
        """One event of the ``"*"`` subscription: into the tail, and its project's activity
        (at the event's ``timestamp``, else ``now_wall``: both wall-clock seconds)."""
        self.events_seen += 1
        project = _str(event.get("project_id"))
        now = _wall_time(event.get("timestamp"), now_wall)
        self.project_activity[project] = max(now, self.project_activity.get(project, 0.0))
        rnd = event.get("round")
        self.tail.append(TailEvent(
            event_type=_str(event.get("event_type")), publisher=_str(event.get("publisher")),
            project_id=project, correlation_id=_str(event.get("correlation_id")),
            round="" if rnd is None else _str(rnd), at=now,
        ))
        if event.get("event_type") == "agent_completed":
            self._chain(_dict(event.get("data")))

    def _chain(self, data: dict[str, Any]) -> None:
        issue = _str(data.get("issue_id"))
        if not issue:
            return
        steps = self.chains.pop(issue, None)
        if steps is None:
            steps = collections.deque(maxlen=self.bounds.chain_steps)
            while len(self.chains) >= self.bounds.chains:
                self.chains.popitem(last=False)
        self.chains[issue] = steps
        nxt = data.get("next_agents")
        steps.append(ChainStep(
            agent_id=_str(data.get("agent_id")), agent_type=_str(data.get("agent_type")),
            status=_str(data.get("status")),
            next_agents=tuple(_str(n) for n in nxt) if isinstance(nxt, list) else (),
        ))

    def chain(self) -> tuple[str, list[ChainStep]] | None:
        """The selected issue (``issue``, else the latest completed) and its steps in order."""
        issue = self.issue if self.issue is not None else next(reversed(self.chains), None)
        if issue is None:
            return None
        return issue, list(self.chains.get(issue, ()))

    # -- derived figures --

    def agent_counts(self) -> tuple[collections.Counter[str], collections.Counter[str]]:
        """Spawned agents by state and by type, over every project."""
        by_state: collections.Counter[str] = collections.Counter()
        by_type: collections.Counter[str] = collections.Counter()
        for agents in self.agents.values():
            for a in agents:
                by_state[_str(a.get("state"))] += 1
                by_type[_str(a.get("agent_type"))] += 1
        return by_state, by_type

    def all_agents(self) -> list[dict[str, Any]]:
        """Every listed agent, the ones needing a look first (failed, stalled, exited non-zero),
        then the live ones, then the rest."""
        def rank(a: dict[str, Any]) -> int:
            state = a.get("state")
            if state == "failed" or (state == "exited" and _int(a.get("exit_code")) != 0):
                return 0
            if state == "stalled":
                return 1
            if state in ("running", "starting"):
                return 2
            return 3

        agents = [a for project in self.agents.values() for a in project]
        return sorted(agents, key=rank)
