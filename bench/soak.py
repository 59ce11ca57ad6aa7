"""``make soak``: a fleet heartbeating and a task stream for minutes; does anything drift?

Benchmarks measure speed in seconds; a soak looks for what only shows with time:
answers that turn into 5xx, tasks that go missing, memory, file descriptors or
threads that creep up. The real server runs in its own process (SQLite, full sync,
as in production) while:

* ``--agents`` registered agents heartbeat from wrk, ``--connections`` connections
  rotating agents and tokens, as fast as the server answers (the rate is a figure);
* a task stream submits ``--task-rate`` tasks a second for a capability only a few
  real remote workers (``AgentClient``) have, so tasks cycle through heartbeat
  delivery and completion while the wrk fleet never holds one;
* the server process is sampled every ``--sample-interval`` seconds from /proc (RSS,
  open fds, threads) and /metrics (heartbeats, 5xx by route).

After ``--duration`` the load stops and the workers get ``--drain`` seconds to finish;
then every acknowledged task must be ``completed``. The verdict is PASS/FAIL per
criterion (zero 5xx, zero lost tasks, RSS/fds/threads growth over the second half
under 5%); the exit status is 1 when one fails. Figures go to build/bench/soak.json.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import signal
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from types import FrameType
from typing import Any

import requests

from bench import load, processes
from bench.http_scenarios import register_fleet
from bench.soak_load import Heartbeats, Tally, TaskStream, Workers
from bench.soak_samples import Sampler, growth, rate_between, scrape

OUT = Path("build/bench/soak.json")
#: Growth over the second half that still counts as flat.
FLAT_PCT = 5.0


def drain(url: str, tally: Tally, deadline: float) -> float:
    """Wait until every task of the stream was completed, or ``deadline``; seconds taken.

    A submission that got no answer may still have created its task; those that
    exist are waited for like acknowledged ones (the stream has stopped, so the
    set is final).
    """
    started = time.monotonic()
    with tally.lock:
        unanswered = sorted(tally.uncertain)
        expected = set(tally.acknowledged)
    with requests.Session() as session:
        for task_id in unanswered:
            if session.get(f"{url}/tasks/{task_id}", timeout=30).status_code == 200:
                expected.add(task_id)
    while time.monotonic() < deadline:
        with tally.lock:
            if expected <= tally.completed.keys():
                break
        time.sleep(0.2)
    return time.monotonic() - started


def account(url: str, tally: Tally) -> dict[str, Any]:
    """Every acknowledged task must be completed; so must any uncertain one that exists.

    A worker's ``completed`` answer is the evidence for a task (finished tasks may
    already be pruned from the server); the rest are looked up one by one.
    """
    session = requests.Session()
    not_completed: dict[str, str] = {}
    with tally.lock:
        missing = sorted(tally.acknowledged.keys() - tally.completed.keys())
        uncertain = sorted(tally.uncertain - tally.completed.keys())
    confirmed_by_server = 0
    for task_id in missing + uncertain:
        answer = session.get(f"{url}/tasks/{task_id}", timeout=30)
        state = answer.json().get("status", "?") if answer.status_code == 200 else "absent"
        if state == "completed":
            confirmed_by_server += 1
        elif task_id in tally.acknowledged or state != "absent":
            not_completed[task_id] = state
    latencies = sorted(
        tally.completed[t] - tally.acknowledged[t]
        for t in tally.completed.keys() & tally.acknowledged.keys()
    )

    def percentile(p: float) -> float | None:
        return round(latencies[int(p * (len(latencies) - 1))] * 1000, 1) if latencies else None

    return {
        "acknowledged": len(tally.acknowledged),
        "completed_by_workers": len(tally.completed),
        "completed_per_server_only": confirmed_by_server,
        "uncertain_submissions": len(tally.uncertain),
        "refused_submissions": tally.refused,
        "complete_errors": tally.complete_errors,
        "lost": len(not_completed),
        "lost_states": dict(list(not_completed.items())[:50]),
        "latency_p50_ms": percentile(0.5),
        "latency_p99_ms": percentile(0.99),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Set up, load, drain and account; the figures as one dict."""
    with tempfile.TemporaryDirectory(prefix="orch-soak-") as tmp:
        server = processes.orchestrator(
            str(Path(tmp) / "soak.db"),
            threads=args.http_threads,
            ORCH_HEARTBEAT_INTERVAL_S=str(args.heartbeat_interval),
            ORCH_TASK_RETENTION_S=str(args.task_retention),
        )
        tally = Tally()
        heartbeats = stream = workers = sampler = None
        try:
            print(f"registering and starting {args.agents:,} agents ...", flush=True)
            started = time.monotonic()
            tokens = register_fleet(server.url, args.agents, "soak", workers=32)
            register_s = time.monotonic() - started
            if args.settle:
                print(f"letting the server settle for {args.settle:g} s ...", flush=True)
                time.sleep(args.settle)
            workers = Workers(server.url, tally, args.workers)
            workers.start()
            heartbeats = Heartbeats(server.url, tokens, args.duration, args.connections)
            stream = TaskStream(server.url, tally, args.task_rate)
            sampler = Sampler(server, args.sample_interval)
            print(
                f"soaking {args.duration:g} s: {heartbeats.tool} heartbeats over "
                f"{args.connections} connections, {args.task_rate:g} tasks/s to "
                f"{args.workers} workers ...",
                flush=True,
            )
            sampler.start()
            heartbeats.start()
            stream.start()
            wrk = heartbeats.result()
            stream.stop()
            load_s = time.monotonic() - sampler.started_at
            drain_s = drain(server.url, tally, time.monotonic() + args.drain)
            workers.stop()
            sampler.samples.append(sampler.sample())
            sampler.stop()
            tasks = account(server.url, tally)
            stats = requests.get(f"{server.url}/stats", timeout=30).json()
            counters, server_5xx = scrape(requests.Session(), server.url)
            warnings = [line.rstrip() for line in server.warnings]
            samples = sampler.samples
        finally:
            # Load first, then the server (so blocked clients fail fast), then the threads.
            if heartbeats is not None:
                heartbeats.stop()
            server.stop()
            for part in (stream, workers, sampler):
                if part is not None:
                    part.stop()
    half = args.duration / 2
    return {
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(args).items()},
        "register_s": round(register_s, 1),
        "load_s": round(load_s, 1),
        "drain_s": round(drain_s, 1),
        "heartbeats": wrk,
        "heartbeat_rate_first_half": rate_between(samples, 0, half),
        "heartbeat_rate_second_half": rate_between(samples, half, args.duration),
        "task_rate_achieved": round(
            (tasks["acknowledged"] + tasks["uncertain_submissions"])
            / max(stream.stopped_at - stream.started_at, 1e-9),
            2,
        ),
        "tasks": tasks,
        "python_5xx": tally.python_5xx,
        "python_5xx_routes": tally.python_5xx_routes,
        "server_5xx_routes": server_5xx,
        "worker_errors": workers.errors[:20],
        "agents_by_state": stats.get("agents_by_state"),
        "server_counters": counters,
        "server_warnings": len(warnings),
        "server_warnings_first": warnings[:20],
        "sample_scrape_failures": sampler.scrape_failures,
        "growth": {
            attr: growth(samples, attr, half, args.duration)
            for attr in ("rss_mb", "fds", "threads")
        },
        "samples": [asdict(s) for s in samples],
    }


def verdict(report: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per criterion: its figure and whether it passed."""
    wrk_5xx = report["heartbeats"]["status_5xx"]
    server_5xx = int(sum(report["server_5xx_routes"].values()))
    tasks = report["tasks"]
    rows = [
        {
            "criterion": "zero 5xx",
            "figure": f"wrk {wrk_5xx}, python clients {report['python_5xx']}, "
            f"server-counted {server_5xx}",
            "passed": wrk_5xx == 0 and report["python_5xx"] == 0 and server_5xx == 0,
        },
        {
            "criterion": "zero lost tasks",
            "figure": f"{tasks['lost']} of {tasks['acknowledged']:,} acknowledged "
            f"({tasks['completed_by_workers']:,} completed by workers)",
            "passed": tasks["lost"] == 0 and tasks["acknowledged"] > 0,
        },
    ]
    for attr, label in (("rss_mb", "RSS"), ("fds", "open fds"), ("threads", "threads")):
        g = report["growth"][attr]
        pct = g["growth_pct"]
        rows.append(
            {
                "criterion": f"{label} flat (2nd half < {FLAT_PCT:g}%)",
                "figure": f"{pct:+.2f}% ({g.get('fit_start', '?')} -> {g.get('fit_end', '?')}, "
                f"{g['samples']} samples)",
                "passed": not math.isnan(pct) and pct < FLAT_PCT,  # too few samples fails
            }
        )
    return rows


def print_report(report: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    hb = report["heartbeats"]
    tasks = report["tasks"]
    settings = report["settings"]

    def rate(value: float | None) -> str:
        return "-" if value is None else f"{value:,.0f}/s"

    print()
    print(
        f"soak: {settings['agents']:,} agents, {settings['connections']} connections, "
        f"{report['load_s']:.0f} s of load (+{report['drain_s']:.1f} s drain), "
        f"registration {report['register_s']:.0f} s"
    )
    print(
        f"heartbeats ({hb['tool']}): {hb['requests_per_s']:,.0f}/s, p50 {hb['p50_ms']:.1f} ms, "
        f"p99 {hb['p99_ms']:.1f} ms; by the server's counter "
        f"{rate(report['heartbeat_rate_first_half'])} in the first half, "
        f"{rate(report['heartbeat_rate_second_half'])} in the second"
    )
    if hb.get("socket_errors") and any(hb["socket_errors"].values()):
        print(f"wrk socket errors: {hb['socket_errors']}")
    if hb.get("status_4xx"):
        print(f"wrk 4xx answers: {hb['status_4xx']:,}")
    print(
        f"tasks: {tasks['acknowledged']:,} acknowledged at {report['task_rate_achieved']:g}/s "
        f"(asked {settings['task_rate']:g}/s), {tasks['completed_by_workers']:,} completed, "
        f"latency p50 {tasks['latency_p50_ms']} ms p99 {tasks['latency_p99_ms']} ms, "
        f"{tasks['uncertain_submissions']} unanswered submissions, "
        f"{tasks['complete_errors']} failed completions"
    )
    samples = report["samples"]
    loaded = [x for x in samples if x["t_s"] <= settings["duration"]] or samples
    moments = {"before": samples[0], "end of load": loaded[-1], "after drain": samples[-1]}
    for name, unit in (("rss_mb", " MB"), ("fds", ""), ("threads", "")):
        values = ", ".join(f"{when} {x[name]:,.0f}{unit}" for when, x in moments.items())
        print(f"server {name}: {values}; peak {max(x[name] for x in samples):,.0f}{unit}")
    states = {k: v for k, v in (report["agents_by_state"] or {}).items() if v}
    counters = report["server_counters"]
    print(
        f"agents by state at the end: {states}; marked unhealthy during the run "
        f"{counters['agents_marked_unhealthy']:,.0f}, declared lost "
        f"{counters['agents_declared_lost']:,.0f}"
    )
    if report["server_warnings"]:
        print(f"server logged {report['server_warnings']} warning/error lines; the first:")
        for line in report["server_warnings_first"][:5]:
            print(f"  {line}")
    for routes, who in (
        (report["server_5xx_routes"], "server"),
        (report["python_5xx_routes"], "python"),
    ):
        for route, count in routes.items():
            print(f"5xx ({who}): {route}: {count:.0f}")
    width = max(len(r["criterion"]) for r in rows)
    print(f"\n{'criterion':<{width}}  verdict  figure")
    for r in rows:
        print(f"{r['criterion']:<{width}}  {'PASS' if r['passed'] else 'FAIL':<7}  {r['figure']}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.soak",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--duration", type=float, default=600, help="seconds of load")
    parser.add_argument("--agents", type=int, default=10_000, help="heartbeating agents")
    parser.add_argument("--connections", type=int, default=200, help="wrk connections")
    parser.add_argument("--task-rate", type=float, default=10, help="tasks submitted a second")
    parser.add_argument("--workers", type=int, default=8, help="remote agents doing the tasks")
    parser.add_argument("--drain", type=float, default=60, help="seconds to finish tasks after")
    parser.add_argument("--sample-interval", type=float, default=5, help="seconds between samples")
    parser.add_argument("--http-threads", type=int, default=8, help="server HTTP threads")
    parser.add_argument(
        "--heartbeat-interval",
        type=float,
        default=30,
        help="server heartbeat interval (s); agents missing 3 are unhealthy, 10 lost",
    )
    parser.add_argument(
        "--task-retention",
        type=float,
        default=120,
        help="seconds finished tasks are kept (production: 7 days); shorter than the soak so "
        "the task table reaches its steady size and pruning runs",
    )
    parser.add_argument(
        "--settle",
        type=float,
        default=0,
        help="seconds to idle between registration and load (tells start-up work from the soak)",
    )
    parser.add_argument("--out", type=Path, default=OUT, help="where the JSON report goes")
    args = parser.parse_args(argv)
    if args.connections < 2:
        parser.error("--connections must be at least 2 (wrk runs two threads)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if not load.have_wrk():
        print(load.WRK_HINT + " (falling back to a Python client)")
    report = run(args)
    rows = verdict(report)
    print_report(report, rows)
    report["verdict"] = rows
    report["when"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    report["machine"] = {"python": platform.python_version(), "cpus": os.cpu_count()}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str))
    print(f"written {args.out}")
    return 0 if all(r["passed"] for r in rows) else 1


def _interrupt(signum: int, frame: FrameType | None) -> None:
    raise KeyboardInterrupt


if __name__ == "__main__":
    # SIGTERM and SIGINT (even when inherited as ignored, as for a background job)
    # unwind like Ctrl-C, so the finally blocks stop wrk and the server.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    try:
        sys.exit(main())
    except KeyboardInterrupt:
        print("interrupted: server and load stopped", file=sys.stderr)
        sys.exit(130)
