"""``make bench``: every scenario with its target, one table, JSON under build/bench/.

Machines here are shared and noisy, so throughput targets are ratios against a
reference measured in the same run: the bare-Falcon app on waitress for HTTP, the raw
Pykka ask round trip for actor work. ``--smoke`` runs every scenario at toy size (it
is part of ``make test`` so this code cannot rot); its figures mean nothing.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench import cluster, core, durability, http_scenarios, load, scale

OUT_DIR = Path("build/bench")

FULL = {
    "hb_agents": 1000,
    "duration_s": 10.0,
    "connections": 64,
    "cycle_agents": 100,
    "fleet_agents": 10_000,
    "fleet_heartbeats_per_s": 1000,
    "fleet_connections": 1000,  # as many kept-alive connections as a real fleet holds open
    "scale_small": 100,
    "scale_large": 10_000,
    "backlog": 100_000,
    "embedded_tasks": 6000,
    "locks": 4000,
    "durability_s": 2.0,
    "failover_rounds": cluster.ROUNDS,
}
SMOKE = {
    "hb_agents": 10,
    "duration_s": 1.0,
    "connections": 4,
    "cycle_agents": 4,
    "fleet_agents": 20,
    "fleet_heartbeats_per_s": 20,
    "fleet_connections": 2,
    "scale_small": 10,
    "scale_large": 40,
    "backlog": 200,
    "embedded_tasks": 100,
    "locks": 64,
    "durability_s": 0.2,
    "failover_rounds": 1,
}


def _row(name: str, figure: str, target: str, met: bool | None) -> dict[str, Any]:
    return {"scenario": name, "figure": figure, "target": target, "met": met}


def run(sizes: dict[str, Any], prefer_wrk: bool, only: set[str] | None) -> dict[str, Any]:
    results: dict[str, Any] = {}
    rows: list[dict[str, Any]] = []

    def scenario(name: str, fn: Callable[[], Any]) -> Any:
        if only and name not in only:
            return None
        print(f"running {name} ...", flush=True)
        results[name] = fn()
        return results[name]

    ask = scenario("pykka_ask", lambda: core.pykka_ask_rate(20 * sizes["embedded_tasks"]))
    hb = scenario(
        "heartbeats",
        lambda: http_scenarios.heartbeats(
            sizes["hb_agents"], sizes["duration_s"], sizes["connections"], prefer_wrk
        ),
    )
    if hb:
        rows.append(
            _row(
                f"heartbeats, {sizes['hb_agents']} agents ({hb['tool']})",
                f"{hb['heartbeats_per_s']:,.0f}/s = {hb['ratio']:.0%} of bare Falcon "
                f"({hb['ceiling_per_s']:,.0f}/s), p99 {hb['p99_ms']:.1f} ms",
                ">= 60% of ceiling",
                hb["ratio"] >= 0.6,
            )
        )
    cycle = scenario(
        "http_task_cycle",
        lambda: http_scenarios.task_cycle(sizes["cycle_agents"], sizes["duration_s"], prefer_wrk),
    )
    if cycle:
        rows.append(
            _row(
                f"task cycle over HTTP, {cycle['agents']} agents ({cycle['tool']})",
                f"{cycle['tasks_per_s']:,.0f} tasks/s",
                ">= 1,000 tasks/s",
                cycle["tasks_per_s"] >= 1000,
            )
        )
    keyed = scenario(
        "keyed_task_cycle",
        lambda: http_scenarios.keyed_cycle(sizes["cycle_agents"], sizes["duration_s"] / 2),
    )
    if keyed:
        rows.append(
            _row(
                f"task cycle over HTTP with Idempotency-Keys, {keyed['agents']} agents (python,"
                f" median of {http_scenarios.KEYED_ROUNDS} in turns)",
                f"{keyed['keyed_per_s']:,.0f} vs {keyed['plain_per_s']:,.0f} tasks/s without"
                f" = {keyed['ratio']:.0%}",
                "-",
                None,
            )
        )
    embedded = scenario(
        "embedded_task_cycle",
        lambda: core.embedded_task_rate(sizes["embedded_tasks"], agents=8, submitters=4),
    )
    if embedded:
        ratio = f" ({embedded / ask:.0%} of Pykka ask {ask:,.0f}/s)" if ask else ""
        rows.append(
            _row(
                "task cycle, embedded, in-process agents",
                f"{embedded:,.0f} tasks/s{ratio}",
                ">= 3,000 tasks/s",
                embedded >= 3000,
            )
        )
    fleet = scenario(
        "fleet",
        lambda: http_scenarios.fleet(
            sizes["fleet_agents"],
            sizes["fleet_heartbeats_per_s"],
            sizes["duration_s"],
            sizes["fleet_connections"],
            prefer_wrk,
        ),
    )
    if fleet:
        rows.append(
            _row(
                f"register+start {fleet['agents']:,} agents over HTTP",
                f"{fleet['register_and_start_s']:.1f} s, RSS {fleet['rss_mb']:.0f} MB",
                "<= 15 s, <= 600 MB",
                fleet["register_and_start_s"] <= 15 and fleet["rss_mb"] <= 600,
            )
        )
        rows.append(
            _row(
                f"heartbeats, {fleet['agents']:,} agents at "
                f"{sizes['fleet_heartbeats_per_s']:,}/s over {sizes['fleet_connections']:,} "
                f"connections ({fleet['tool']})",
                f"p99 {fleet['heartbeat_p99_ms']:.1f} ms at {fleet['heartbeats_per_s']:,.0f}/s, "
                f"{fleet['heartbeat_errors']} errors",
                "p99 <= 25 ms",
                fleet["heartbeat_p99_ms"] <= 25 and not fleet["heartbeat_errors"],
            )
        )
    scaled = scenario(
        "scale",
        lambda: scale.assignment_rates(
            sizes["scale_small"], sizes["scale_large"], sizes["backlog"], sizes["scale_large"]
        ),
    )
    if scaled:
        small, large, ratio = scaled["small"], scaled["large"], scaled["ratio"]
        rows.append(
            _row(
                f"assignment rate at {large['agents']:,} agents + {large['backlog']:,} queued "
                f"vs {small['agents']} (same {large['tasks']:,} tasks, median of "
                f"{large['rounds']} rounds in turns)",
                f"{large['assignments_per_s']:,.0f}/s vs {small['assignments_per_s']:,.0f}/s "
                f"= {ratio:.0%} (CPU {large['cpu_us_per_assignment']:.0f} vs "
                f"{small['cpu_us_per_assignment']:.0f} µs)",
                ">= 80%",
                ratio >= 0.8,
            )
        )
    for contenders in (1, 32):
        pairs = scenario(
            f"locks_facade_{contenders}",
            lambda c=contenders: core.lock_pair_rate(sizes["locks"], contenders=c),
        )
        if pairs:
            rows.append(
                _row(f"lock pairs, facade, {contenders} contender(s)", f"{pairs:,.0f}/s", "-", None)
            )
        http_pairs = scenario(
            f"locks_http_{contenders}",
            lambda c=contenders: http_scenarios.http_locks(c, sizes["duration_s"]),
        )
        if http_pairs:
            rows.append(
                _row(
                    f"lock pairs, HTTP, {contenders} contender(s)",
                    f"{http_pairs['pairs_per_s']:,.0f}/s "
                    f"({http_pairs['answered_503']:,} acquires told to retry later)",
                    "-",
                    None,
                )
            )
    durable = scenario("durability", lambda: durability.run(sizes["durability_s"]))
    if durable:
        ratio = durable["ratio"]["32"]
        rows.append(
            _row(
                "SQLite (full sync) vs memory store, 32 callers"
                f" (median of {durability.ROUNDS} in turns)",
                ", ".join(
                    f"{c}: {durable['sqlite_full'][c]:,.0f} vs {durable['memory'][c]:,.0f}/s"
                    for c in durable["memory"]
                ),
                ">= 50% at 32",
                ratio >= 0.5,
            )
        )
        rows.append(
            _row(
                f"PostgreSQL vs memory store, 32 callers (median of {durability.ROUNDS} in turns)",
                ", ".join(
                    f"{c}: {durable['postgresql'][c]:,.0f} vs {durable['memory'][c]:,.0f}/s"
                    for c in durable["memory"]
                ),
                ">= 50% at 32",
                durable["postgresql_ratio"]["32"] >= 0.5,
            )
        )
    clustered = scenario(
        "cluster",
        lambda: cluster.run(
            sizes["failover_rounds"], sizes["hb_agents"], sizes["duration_s"], sizes["connections"]
        ),
    )
    if clustered:
        rows.append(
            _row(
                f"failover: SIGKILL of the leader to the first acknowledged write"
                f" (median of {sizes['failover_rounds']})",
                f"{clustered['failover_median_s']:.2f} s"
                f" ({', '.join(f'{t:.2f}' for t in clustered['failover_s'])})",
                "<= 3 s",
                clustered["failover_median_s"] <= 3.0,
            )
        )
        rows.append(
            _row(
                f"failover: SIGSTOP of the leader to the first acknowledged write"
                f" (lease {cluster.LEASE_S:g} s)",
                f"{clustered['frozen_failover_s']:.2f} s",
                f"<= {cluster.LEASE_S + 2:g} s",
                clustered["frozen_failover_s"] <= cluster.LEASE_S + 2,
            )
        )
        rows.append(
            _row(
                "heartbeats through a standby vs to the leader (Python client)",
                f"{clustered['heartbeats_standby_per_s']:,.0f} vs"
                f" {clustered['heartbeats_leader_per_s']:,.0f}/s"
                f" ({clustered['standby_ratio']:.0%})",
                "-",
                None,
            )
        )
    return {"results": results, "rows": rows}


def print_table(rows: list[dict[str, Any]]) -> None:
    width = max(len(r["scenario"]) for r in rows) if rows else 10
    print(f"\n{'scenario':<{width}}  {'target':<20} {'met':<4} figure")
    for r in rows:
        met = {True: "yes", False: "NO", None: "-"}[r["met"]]
        print(f"{r['scenario']:<{width}}  {r['target']:<20} {met:<4} {r['figure']}")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--smoke", action="store_true", help="toy sizes (what make test runs)")
    parser.add_argument("--python-load", action="store_true", help="do not use wrk")
    parser.add_argument("--only", help="comma-separated scenario names")
    args = parser.parse_args(argv)
    sizes = SMOKE if args.smoke else FULL
    if not args.python_load and not load.have_wrk():
        print(load.WRK_HINT)
    only = set(args.only.split(",")) if args.only else None
    report = run(sizes, prefer_wrk=not args.python_load and not args.smoke, only=only)
    print_table(report["rows"])
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    path = OUT_DIR / ("smoke.json" if args.smoke else "bench.json")
    path.write_text(
        json.dumps(
            {
                "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                "machine": {"python": platform.python_version(), "cpus": os.cpu_count()},
                "sizes": sizes,
                **report,
            },
            indent=2,
        )
    )
    print(f"written {path}")


if __name__ == "__main__":
    main()
