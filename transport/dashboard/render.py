"""The dashboard's renderer: a :class:`~.model.DashboardModel` to rich renderables that fit
``width`` x ``height`` cells. Panels are laid out in priority order (header, agents, projects,
processes when several share the store, supervision, events, throughput, the chain of an issue); each first gets its smallest useful height, the rows left
then go to them in the same order, and a panel with no room is left out (80x24 shows the
first ones; a taller terminal shows more rows and more panels). Pure: same model, same text."""

from __future__ import annotations

import collections
import math
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from rich.console import Group, RenderableType
from rich.table import Table
from rich.text import Text

from .model import DashboardModel, _wall_time

__all__ = ["render", "sparkline"]

_BARS = "▁▂▃▄▅▆▇█"


def sparkline(values: Iterable[float], width: int) -> str:
    """The last ``width`` values as block characters scaled to their maximum."""
    data = list(values)[-width:] if width > 0 else []
    top = max(data, default=0.0)
    if top <= 0:
        return _BARS[0] * len(data)
    return "".join(_BARS[min(len(_BARS) - 1, int(v / top * (len(_BARS) - 1) + 0.5))] for v in data)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    s = int(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600:02d}h"


def _ago(now: float, at: float | None) -> str:
    return "-" if at is None else _duration(max(0.0, now - at)) + " ago"


def _iso_ago(now_wall: float, iso: Any) -> str:
    at = _wall_time(iso, math.nan)
    return "-" if math.isnan(at) else _ago(now_wall, at)


def _table(*columns: tuple[str, str]) -> Table:
    table = Table(box=None, expand=True, pad_edge=False, show_edge=False, padding=(0, 1),
                  header_style="bold dim")
    for i, (name, justify) in enumerate(columns):
        # the first and last columns give way when the width is short; the others keep their header's width
        table.add_column(name, justify=justify, no_wrap=True, overflow="ellipsis",  # type: ignore[arg-type]
                         min_width=None if i in (0, len(columns) - 1) else len(name),
                         ratio=1 if i in (0, len(columns) - 1) else None)
    return table


@dataclass
class _Section:
    title: Callable[[], Text]
    #: rows wanted (at most), and the builder of the body for a given number of rows
    wanted: int
    body: Callable[[int], RenderableType]
    #: rows the body needs around its data rows (a table's header)
    chrome: int = 1


def _title(name: str, extra: str = "") -> Text:
    text = Text(f"── {name} ", style="bold cyan", no_wrap=True, overflow="ellipsis")
    if extra:
        text.append(extra, style="dim")
    return text


def _header(model: DashboardModel) -> list[Text]:
    style = {"connected": "bold green", "reconnecting": "bold yellow", "connecting": "yellow",
             "failed": "bold red"}.get(model.connection, "")
    line = Text(no_wrap=True, overflow="ellipsis")  # one line each, whatever the width
    line.append("Orchestra ", style="bold")
    line.append(f"{model.url}  v{model.version}  up {_duration(model.uptime)}  ")
    line.append(model.connection, style=style)
    if model.connection_detail:
        line.append(f" ({model.connection_detail})", style="dim")
    by_state, _ = model.agent_counts()
    connected = sum(model.connected_by_type.values())
    # the agents needing a look come first: the line is cut at the terminal's width
    summary = Text(no_wrap=True, overflow="ellipsis")
    for state, style in (("failed", "bold red"), ("stalled", "bold yellow")):
        if by_state.get(state):
            summary.append(f"{state} {by_state[state]}  ", style=style)
    summary.append(
        f"connected {connected}  spawned live {model.spawned_running}  projects {len(model.projects)}  "
        f"restarts {model.restarts}  crashes {model.crashes}  events seen {model.events_seen}",
        style="dim",
    )
    return [line, summary]


def _agents(model: DashboardModel, now_wall: float) -> _Section:
    by_state, by_type = model.agent_counts()
    agents = model.all_agents()
    states = " ".join(f"{k}:{v}" for k, v in sorted(by_state.items()))
    types = " ".join(f"{k}:{v}" for k, v in by_type.most_common(4))

    def body(rows: int) -> RenderableType:
        table = _table(("agent", "left"), ("type", "left"), ("project", "left"), ("pid", "right"),
                       ("state", "left"), ("exit", "right"), ("rst", "right"), ("active", "right"))
        for a in agents[:rows]:
            state = str(a.get("state", ""))
            exit_code = a.get("exit_code")
            bad = state == "failed" or (state == "exited" and exit_code not in (0, None))
            style = "bold red" if bad else "bold yellow" if state == "stalled" else ""
            table.add_row(
                str(a.get("agent_id", "")), str(a.get("agent_type", "")), str(a.get("project_id", "")),
                "" if a.get("pid") is None else str(a.get("pid")), Text(state, style=style),
                "" if exit_code is None else str(exit_code), str(a.get("restarts", 0)),
                _iso_ago(now_wall, a.get("last_activity")),
            )
        return table

    extra = f"{states}  types {types}" if agents else "no spawned agents"
    return _Section(lambda: _title("Agents", extra), len(agents), body, chrome=1 if agents else 0)


def _projects(model: DashboardModel, now: float) -> _Section:
    names = sorted(model.projects, key=lambda p: -model.project_activity.get(p, 0.0))

    def body(rows: int) -> RenderableType:
        table = _table(("project", "left"), ("agents", "right"), ("results", "right"), ("events", "right"),
                       ("subs", "right"), ("last event", "right"))
        for name in names[:rows]:
            d = model.projects[name]
            table.add_row(name, str(len(model.agents.get(name, []))), str(d.get("results_stored", "")),
                          str(d.get("events_published", "")), str(d.get("subscriptions", "")),
                          _ago(now, model.project_activity.get(name)))
        return table

    return _Section(lambda: _title("Projects", f"{len(names)} running"), len(names), body,
                    chrome=1 if names else 0)


def _processes(model: DashboardModel, now_wall: float) -> _Section:
    """The deployment's server processes (several on one PostgreSQL): lost ones first."""
    procs = sorted(model.processes, key=lambda p: {"lost": 0, "alive": 1}.get(str(p.get("state")), 2))
    states = collections.Counter(str(p.get("state", "")) for p in procs)

    def body(rows: int) -> RenderableType:
        table = _table(("process", "left"), ("host", "left"), ("pid", "right"), ("state", "left"),
                       ("started", "right"), ("beat", "right"))
        for p in procs[:rows]:
            state = str(p.get("state", ""))
            style = "bold red" if state == "lost" else "dim" if state == "stopped" else ""
            name = str(p.get("process_id", "")) + (" *" if p.get("process_id") == model.process_id else "")
            table.add_row(name, str(p.get("host", "")), str(p.get("pid", "")), Text(state, style=style),
                          _iso_ago(now_wall, p.get("started_at")), _iso_ago(now_wall, p.get("last_beat")))
        return table

    extra = "  ".join(f"{k} {v}" for k, v in sorted(states.items())) + "  (* answered)"
    return _Section(lambda: _title("Processes", extra), len(procs), body)


def _supervision(model: DashboardModel) -> _Section:
    # the actors that need a look first: a fresh restart, then any crash, then the tree in order
    rows = sorted(model.actors, key=lambda r: (not r.highlighted, r.crashes == 0))

    def body(n: int) -> RenderableType:
        table = _table(("actor", "left"), ("state", "left"), ("restarts", "right"), ("crashes", "right"),
                       ("last crash", "left"))
        for r in rows[:n]:
            style = "bold black on yellow" if r.highlighted else ("red" if r.crashes else "")
            table.add_row(Text(r.path.lstrip("/"), style=style), r.state, Text(str(r.restarts), style=style),
                          str(r.crashes), r.last_crash or "")
        return table

    return _Section(lambda: _title("Supervision", f"restarts {model.restarts} crashes {model.crashes}"),
                    len(rows), body, chrome=1 if rows else 0)


def _events(model: DashboardModel, now: float) -> _Section:
    tail = list(model.tail)

    def body(n: int) -> RenderableType:
        table = _table(("event", "left"), ("publisher", "left"), ("project", "left"),
                       ("correlation", "left"), ("round", "right"), ("age", "right"))
        for e in reversed(tail[-n:] if n else []):
            table.add_row(e.event_type, e.publisher, e.project_id, e.correlation_id, e.round,
                          _duration(max(0.0, now - e.at)))
        return table

    extra = f"filter {model.filter}" if model.filter else "all"
    if model.events_lost:
        extra += f"  (events lost: {model.events_lost})"
    return _Section(lambda: _title("Events", extra), len(tail), body, chrome=1 if tail else 0)


def _throughput(model: DashboardModel, width: int) -> _Section:
    ops = sorted(model.performance.items(), key=lambda kv: -int(kv[1].get("count", 0) or 0))
    spark = max(8, min(60, width - 40))

    def rate_line(name: str, series: Sequence[float]) -> Text:
        last = series[-1] if series else 0.0
        line = Text(f"{name:<10}{last:>9.1f}/s ")
        line.append(sparkline(series, spark), style="green")
        return line

    def body(n: int) -> RenderableType:
        parts: list[RenderableType] = [rate_line("requests", model.requests_per_s)]
        if n >= 2:
            parts.append(rate_line("events", model.events_per_s))
        if n >= 3 and ops:
            table = _table(("operation", "left"), ("count", "right"), ("p50 ms", "right"), ("p99 ms", "right"))
            for name, p in ops[: n - 2]:
                table.add_row(name, str(p.get("count", "")), str(p.get("p50_ms", "-")), str(p.get("p99_ms", "-")))
            parts.append(table)
        return Group(*parts)

    hit = "-" if model.cache_hit_rate is None else f"{model.cache_hit_rate:.0%}"
    limited = "-" if model.rate_limited is None else str(model.rate_limited)
    return _Section(lambda: _title("Throughput", f"rate-limited {limited}  context cache hits {hit}"),
                    2 + len(ops), body, chrome=1 if ops else 0)


def _chain(model: DashboardModel) -> _Section:
    chain = model.chain()
    issue, steps = chain if chain is not None else ("", [])

    def body(n: int) -> RenderableType:
        lines = []
        for step in steps[-n:]:
            line = Text(f"{step.agent_id} ({step.agent_type}) ")
            line.append(step.status, style="green" if step.status == "success" else "bold red")
            if step.next_agents:
                line.append(" → " + ", ".join(step.next_agents), style="cyan")
            line.no_wrap, line.overflow = True, "ellipsis"
            lines.append(line)
        return Group(*lines)

    extra = f"issue {issue}" if chain is not None else "no agent_completed yet"
    return _Section(lambda: _title("Chain", extra), len(steps), body, chrome=0)


def render(model: DashboardModel, width: int = 80, height: int = 24, *,
           now: float | None = None, now_wall: float | None = None) -> RenderableType:
    """The whole view for a ``width`` x ``height`` terminal. ``now`` is the model's clock
    (trio's), ``now_wall`` the wall clock (for the agents' ``last_activity`` times)."""
    now = model.status_at or 0.0 if now is None else now
    now_wall = time.time() if now_wall is None else now_wall
    parts: list[RenderableType] = list(_header(model))
    budget = height - len(parts)
    sections = [_agents(model, now_wall), _projects(model, now_wall), _supervision(model), _events(model, now_wall),
                _throughput(model, width), _chain(model)]
    if len(model.processes) > 1:  # several processes share the store: each one, after the projects
        sections.insert(2, _processes(model, now_wall))
    # first pass: each panel its title, table header and one row (or its "nothing" line)
    rows: list[int | None] = []
    for s in sections:
        need = 1 + (s.chrome + 1 if s.wanted else 0)
        if need <= budget:
            rows.append(1 if s.wanted else 0)
            budget -= need
        else:
            rows.append(None)
            budget = 0  # lower priorities do not jump ahead of a higher one left out
    # second pass: the rows left, one at a time to each panel in priority order (a long
    # supervision tree does not starve the event tail)
    growing = True
    while budget > 0 and growing:
        growing = False
        for i, s in enumerate(sections):
            given = rows[i]
            if budget > 0 and given is not None and given < s.wanted:
                rows[i] = given + 1
                budget -= 1
                growing = True
    for s, n in zip(sections, rows, strict=True):
        if n is None:
            continue
        parts.append(s.title())
        if n:
            parts.append(s.body(n))
    return Group(*parts)
