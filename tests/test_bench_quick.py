"""The bench never rots: ``python -m bench --quick`` runs end to end and produces every figure.

It asserts that each figure was measured, never how fast (speed belongs in the bench's own
table). Tools the machine may lack are allowed to be skipped with a reason: the Redis and NATS
references (no server answering) and the plot (no matplotlib); wrk has a Python stand-in.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent

#: every figure the quick profile must produce (the references are optional)
EXPECTED = {
    "seed_context_http_p99", "seed_context_ws_p99", "seed_events_http_p99", "seed_events_ws_p99",
    "seed_load_http", "seed_load_ws",
    "ping_p50", "ping_p99", "deliver_p50", "deliver_p99", "fanout_119", "fanout_119_cpu", "fanout_119_relay",
    "http_get", "http_post",
    "writes_single", "writes_batch", "writes_single_cpu", "writes_batch_cpu", "sqlite_single",
    "http_get_cpu", "http_post_cpu",
    "rss_119", "rss_retained", "rss_per_event",
    "fanout_10", "fanout_200", "idle_ping_20", "idle_ping_50", "idle_ping_100",
    "context_100", "context_200", "context_400",
    "shell_get", "shell_floor",
    "floor_handoff", "floor_thread_hop", "floor_frame_in", "floor_frame_out", "floor_json",
}
OPTIONAL_PREFIXES = ("redis_", "nats_")
#: figures compared with a baseline: the baseline must be there too
WITH_BASELINE = {"ping_p50", "deliver_p50", "fanout_119", "fanout_119_cpu", "http_get", "http_post",
                 "writes_single", "writes_batch", "rss_per_event", "http_get_cpu", "http_post_cpu",
                 "writes_single_cpu", "writes_batch_cpu"}


def test_quick_profile_produces_every_figure(tmp_path: Path) -> None:
    out = subprocess.run([sys.executable, "-m", "bench", "--quick", "--results", str(tmp_path)], cwd=ROOT,
                         capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    [record] = tmp_path.glob("quick-*.json")
    data = json.loads(record.read_text())
    rows = {row["key"]: row for row in data["rows"]}
    assert EXPECTED <= set(rows), sorted(EXPECTED - set(rows))
    assert not [k for k in rows if k not in EXPECTED and not k.startswith(OPTIONAL_PREFIXES)]
    for row in rows.values():
        assert isinstance(row["ours"], float | int) and math.isfinite(row["ours"]) and row["ours"] >= 0, row
    for key in WITH_BASELINE:
        assert rows[key]["base"] and rows[key]["ratio"] is not None, rows[key]
    for key in ("seed_load_http", "seed_load_ws"):
        assert rows[key]["ours"] > 0, "no seed agent completed its steps"
    # every goal got a verdict, and the table printed it
    assert all(row["met"] is not None for row in rows.values() if row["goal"])
    assert "Orchestra against bare baselines" in out.stdout
    skipped = " ".join(data["skipped"])
    for which in ("redis", "nats"):
        assert any(k.startswith(which) for k in rows) or which in skipped, f"{which}: neither measured nor skipped"
    assert (tmp_path / "growth-quick.png").exists() or "matplotlib" in skipped
    for series in ("fanout:orchestra", "idle_ping:orchestra p99", "context:uncached p99", "retained_rss:orchestra"):
        assert len(data["growth"][series]) >= 3, series


def test_context_speed_least_of_runs_measures_each_kind(tmp_path: Path) -> None:
    # `python -m bench.context_speed --in-process --repo R --runs N`: every answer measured in
    # each run, the least kept (a figure per kind, never how fast)
    from tests.actors.test_context import make_repo

    repo = make_repo(tmp_path / "repo")
    out = subprocess.run([sys.executable, "-m", "bench.context_speed", "--in-process", "--repo", str(repo),
                          "--answers", "6", "--runs", "2"], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0].startswith("repo: least CPU time of each answer over 2 runs")
    assert [line.split(":")[0].strip() for line in lines[1:]] == ["uncached answer, task", "uncached answer, no task"]
    assert all(line.endswith("s over 6") for line in lines[1:])
