"""The bench's output: one table of rows, a JSON record, a growth plot and the README section."""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path

from rich.table import Table

README_BEGIN = "<!-- bench:table begin (python -m bench --readme rewrites this part) -->"
README_END = "<!-- bench:table end -->"


@dataclass
class Row:
    """One figure: Orchestra's value, the baseline's (if any) and the goal it is held to.

    ``unit`` says how values print: ``s`` (shown in ms), ``us`` (seconds shown in µs), ``/s``,
    ``MB``, ``B``, ``%`` (a share 0..1), ``x`` (a plain number). ``ratio`` is ours / baseline;
    ``met`` is None where there is no goal or no figure.
    """

    section: str
    key: str
    label: str
    ours: float | None
    unit: str
    base: float | None = None
    base_label: str = ""
    goal: str = ""
    met: bool | None = None
    note: str = ""
    ratio: float | None = field(default=None)

    def __post_init__(self) -> None:
        if self.ours is not None and self.base:
            self.ratio = self.ours / self.base


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit == "s":
        return f"{value * 1e3:.3f} ms" if value < 0.01 else f"{value * 1e3:.1f} ms"
    if unit == "us":
        return f"{value * 1e6:.1f} µs"
    if unit == "/s":
        return f"{value:,.0f}/s"
    if unit == "MB":
        return f"{value:.1f} MB"
    if unit == "B":
        return f"{value:,.0f} B"
    if unit == "%":
        return f"{value:.1%}"
    if unit == "x":
        return f"{value:.2f}"
    return f"{value:g} {unit}"


def ratio_text(row: Row) -> str:
    if row.ratio is None:
        return "-"
    return f"{row.ratio:.0%}" if row.unit == "/s" else f"{row.ratio:.2f}x"


def verdict(row: Row) -> str:
    return {True: "met", False: "NOT met", None: ""}[row.met]


def table(rows: list[Row], title: str) -> Table:
    t = Table(title=title, show_lines=False)
    for col, just in (("figure", "left"), ("orchestra", "right"), ("baseline", "right"), ("ratio", "right"),
                      ("goal", "left"), ("", "left")):
        t.add_column(col, justify=just)  # type: ignore[arg-type]
    section = None
    for r in rows:
        if r.section != section:
            section = r.section
            t.add_section()
            t.add_row(f"[bold]{section}[/bold]", "", "", "", "", "")
        base = f"{fmt(r.base, r.unit)} ({r.base_label})" if r.base is not None else (r.base_label or "-")
        style = {True: "green", False: "red", None: ""}[r.met]
        t.add_row(r.label, fmt(r.ours, r.unit), base, ratio_text(r), r.goal,
                  f"[{style}]{verdict(r)}[/{style}]" if style else "")
    return t


def markdown(rows: list[Row]) -> str:
    lines = ["| figure | orchestra | baseline | ratio | goal | | note |", "|---|---:|---:|---:|---|---|---|"]
    section = None
    for r in rows:
        if r.section != section:
            section = r.section
            lines.append(f"| **{section}** | | | | | | |")
        base = f"{fmt(r.base, r.unit)} ({r.base_label})" if r.base is not None else (r.base_label or "-")
        lines.append(f"| {r.label} | {fmt(r.ours, r.unit)} | {base} | {ratio_text(r)} | {r.goal} | {verdict(r)} "
                     f"| {r.note} |")
    return "\n".join(lines)


def write_json(path: Path, meta: dict[str, object], rows: list[Row], growth: dict[str, object],
               skipped: list[str]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({**meta, "rows": [asdict(r) for r in rows], "growth": growth, "skipped": skipped},
                               indent=1) + "\n")


def plot(path: Path, growth: dict[str, list[list[float]]]) -> str | None:
    """Draw the growth curves; the reason it did not (matplotlib missing), or None."""
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return "plot: matplotlib not installed (pip install -e '.[bench]')"
    panels = [
        ("fanout", "fan-out: deliveries/s", "subscribers", "deliveries/s", 1.0),
        ("fanout_cpu", "fan-out: server CPU per delivery", "subscribers", "µs", 1e6),
        ("idle_ping", "ping p99 with idle agents connected", "idle agents", "ms", 1e3),
        ("context", "context uncached p99", "files in the code base", "ms", 1e3),
        ("retained_rss", "server RSS by retained events", "retained events", "MB", 1.0),
    ]
    fig, axes = plt.subplots(1, len(panels), figsize=(4.2 * len(panels), 3.6))
    for ax, (key, title, xlabel, ylabel, scale) in zip(axes, panels, strict=True):
        for series, points in sorted(growth.items()):
            if series.split(":")[0] != key or not points:
                continue
            xs = [p[0] for p in points]
            ys = [p[1] * scale for p in points]
            ax.plot(xs, ys, marker="o", label=series.split(":", 1)[1] if ":" in series else None)
        ax.set_title(title, fontsize=9)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.set_ylabel(ylabel, fontsize=8)
        if key in ("fanout", "fanout_cpu", "idle_ping", "context"):
            ax.set_xscale("log")
        ax.tick_params(labelsize=7)
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend(fontsize=7)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return None


def update_readme(readme: Path, body: str) -> None:
    """Replace the part between the markers (or append it) and keep every other section."""
    text = readme.read_text() if readme.exists() else "# Benchmarks\n"
    block = f"{README_BEGIN}\n{body.rstrip()}\n{README_END}"
    if README_BEGIN in text and README_END in text:
        text = re.sub(re.escape(README_BEGIN) + ".*?" + re.escape(README_END), lambda _: block, text, flags=re.S)
    else:
        text = text.rstrip() + "\n\n" + block + "\n"
    readme.write_text(text)
