"""`make bench`: measure, print one table, write JSON under build/bench/.

Machines here are shared and noisy, so every figure sits next to a reference taken in
the same run on the same machine: the embedded task cycle is compared with the raw
Pykka ask round trip (the ceiling for anything built from actor messages).
"""

from __future__ import annotations

import argparse
import json
import platform
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pykka

from bench import durability
from orch import Agent, Orchestrator, Settings

OUT_DIR = Path("build/bench")


class _Echo(pykka.ThreadingActor):
    use_daemon_thread = True

    def echo(self, value: Any) -> Any:
        return value


class _Worker(Agent):
    agent_type = "implementation"
    capabilities = frozenset({"bench"})

    def handle(self, task: Any) -> Any:
        return task.payload


def _rate(count: int, run: Callable[[], None]) -> float:
    started = time.perf_counter()
    run()
    return count / (time.perf_counter() - started)


def pykka_ask_rate(n: int) -> float:
    """Sequential proxy asks to one actor: the message-passing ceiling."""
    ref = _Echo.start()
    proxy = ref.proxy()
    try:
        return _rate(n, lambda: [proxy.echo(i).get() for i in range(n)])
    finally:
        ref.stop()


def embedded_task_rate(n: int, agents: int, submitters: int) -> float:
    """Submit -> in-process agent -> result, with several submitting threads."""
    with Orchestrator(Settings()) as orch:
        for i in range(agents):
            orch.attach(_Worker(f"bench-{i}"))

        def submit_many(count: int) -> None:
            handles = [orch.submit({"i": i}, capabilities={"bench"}) for i in range(count)]
            for handle in handles:
                handle.result(timeout=60)

        def run() -> None:
            threads = [
                threading.Thread(target=submit_many, args=(n // submitters,))
                for _ in range(submitters)
            ]
            for t in threads:
                t.start()
            for t in threads:
                t.join()

        return _rate(n // submitters * submitters, run)


def lock_pair_rate(n: int, contenders: int) -> float:
    """Acquire/release pairs per second through the facade, on one resource."""
    with Orchestrator(Settings()) as orch:
        ids = [f"locker-{i}" for i in range(contenders)]
        for agent_id in ids:
            orch.register_agent(agent_id, "implementation")
        per_thread = n // contenders

        def loop(agent_id: str) -> None:
            for _ in range(per_thread):
                grant = orch.acquire_lock(agent_id, "bench:resource", ttl_s=30, wait_s=25)
                orch.release_lock(agent_id, "bench:resource", grant["fencing_token"])

        def run() -> None:
            threads = [threading.Thread(target=loop, args=(a,)) for a in ids]
            for t in threads:
                t.start()
            for t in threads:
                t.join()

        return _rate(per_thread * contenders, run)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "--scale", type=float, default=1.0, help="multiply every size (0.01 = smoke)"
    )
    args = parser.parse_args(argv)
    size = lambda n: max(32, int(n * args.scale))  # noqa: E731

    reference = pykka_ask_rate(size(20_000))
    results = {
        "pykka_ask_round_trips_per_s": reference,
        "embedded_tasks_per_s": embedded_task_rate(size(6_000), agents=8, submitters=4),
        "lock_pairs_per_s_uncontended": lock_pair_rate(size(4_000), contenders=1),
        "lock_pairs_per_s_32_contenders": lock_pair_rate(size(4_000), contenders=32),
    }
    rows = [
        ("Pykka ask round trip (reference)", reference, 1.0),
        *[(name, value, value / reference) for name, value in list(results.items())[1:]],
    ]
    print(f"{'scenario':<40} {'per second':>12} {'vs reference':>13}")
    for name, value, ratio in rows:
        print(f"{name:<40} {value:>12,.0f} {ratio:>12.1%}")
    durable = durability.run(duration_s=max(0.2, 2.0 * args.scale))
    durability.print_table(durable)
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    report = {
        "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "machine": {"python": platform.python_version(), "cpus": __import__("os").cpu_count()},
        "scale": args.scale,
        "results": results,
        "durability_cycles_per_s": durable,
    }
    path = OUT_DIR / "core.json"
    path.write_text(json.dumps(report, indent=2))
    print(f"written {path}")


if __name__ == "__main__":
    main()
