"""The soak (``make soak``, minutes long, not in CI) still runs, at toy size and seconds.

It asserts that every figure is reported, and the two that hold at any size (no 5xx,
no lost task); flatness needs minutes of load, so its verdict is not judged here.
"""

from __future__ import annotations

import json
import math
import subprocess
import sys
from pathlib import Path

FLATNESS = {"rss_mb", "fds", "threads"}


def test_soak_runs_at_toy_size_and_reports_every_figure(tmp_path):
    repo = Path(__file__).resolve().parents[2]
    out = tmp_path / "soak.json"
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.soak",
            *("--duration", "4", "--agents", "50", "--connections", "8"),
            *("--task-rate", "5", "--workers", "2", "--drain", "15"),
            *("--sample-interval", "0.5", "--out", str(out)),
        ],
        cwd=tmp_path,
        env={"PYTHONPATH": str(repo), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    # 1 is a failed criterion; at this size only a flatness one may fail (judged below).
    assert result.returncode in (0, 1), result.stdout[-2000:] + result.stderr[-2000:]
    report = json.loads(out.read_text())

    heartbeats = report["heartbeats"]
    assert heartbeats["requests_per_s"] > 0
    assert heartbeats["status_5xx"] == 0
    assert report["python_5xx"] == 0
    assert report["server_5xx_routes"] == {}
    assert report["heartbeat_rate_first_half"] > 0

    tasks = report["tasks"]
    assert tasks["acknowledged"] > 0
    assert tasks["lost"] == 0, tasks["lost_states"]
    assert tasks["latency_p99_ms"] is not None

    assert len(report["samples"]) >= 4
    for attr in FLATNESS:
        assert math.isfinite(report["growth"][attr]["growth_pct"])
    judged = {row["criterion"]: row["passed"] for row in report["verdict"]}
    assert judged["zero 5xx"] and judged["zero lost tasks"]
    assert len(judged) == 2 + len(FLATNESS)
    assert "PASS" in result.stdout or "FAIL" in result.stdout
