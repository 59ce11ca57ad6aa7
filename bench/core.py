"""Actor-level scenarios: the Pykka ask ceiling, the embedded task cycle, lock pairs."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pykka

from orch import Agent, Orchestrator, Settings


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
