"""``make bench-smoke`` inside ``make test``: every benchmark scenario still runs.

It asserts that the scenarios ran and produced figures, never how fast they were.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

SCENARIOS = {
    "pykka_ask",
    "heartbeats",
    "http_task_cycle",
    "keyed_task_cycle",
    "embedded_task_cycle",
    "fleet",
    "scale",
    "locks_facade_1",
    "locks_facade_32",
    "locks_http_1",
    "locks_http_32",
    "durability",
    "cluster",
}


def test_every_benchmark_scenario_runs_at_toy_size(tmp_path):
    repo = Path(__file__).resolve().parents[2]
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--smoke"],
        cwd=tmp_path,
        env={"PYTHONPATH": str(repo), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-2000:]
    report = json.loads((tmp_path / "build/bench/smoke.json").read_text())
    assert set(report["results"]) == SCENARIOS
    assert report["results"]["heartbeats"]["heartbeats_per_s"] > 0
    assert report["results"]["heartbeats"]["errors"] == 0
    fleet = report["results"]["fleet"]
    assert fleet["active_agents"] == report["sizes"]["fleet_agents"]
    assert fleet["heartbeats_per_s"] > 0 and fleet["heartbeat_errors"] == 0
    assert all(row["figure"] for row in report["rows"])
    clustered = report["results"]["cluster"]
    assert clustered["failover_median_s"] > 0 and clustered["frozen_failover_s"] > 0
    assert clustered["heartbeats_standby_per_s"] > 0 and clustered["errors"] == 0
    keyed = report["results"]["keyed_task_cycle"]
    assert keyed["keyed_per_s"] > 0 and keyed["plain_per_s"] > 0
    scaled = report["results"]["scale"]
    for size in ("small", "large"):
        assert len(scaled[size]["assignments_per_s_by_round"]) == scaled[size]["rounds"] == 3
        assert len(scaled[size]["full_gc_s_by_round"]) == 3
    assert scaled["large"]["backlog"] == report["sizes"]["backlog"]
