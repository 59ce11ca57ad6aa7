"""Does the cost per assignment grow with the fleet or the queue? (embedded)

With the memory store: through SQLite, one submitter waiting for each commit would
time the disk's syncs, the same at any fleet size, and hide what this looks for.

Two orchestrators side by side: a small fleet of started remote agents, and a large
one with ``backlog`` tasks no agent can take parked in its queue (so the queue is
deep). Then, ``rounds`` times and taking turns, each is given ``tasks`` tasks and
timed until every one is assigned (between rounds, untimed, the agents complete them
so their slots are free again). Both assign the same number of tasks a round — the
small fleet's agents get ``tasks / agents`` slots each — so the two rates differ only
by fleet and queue, and the small one is not a few milliseconds of noise.

Why turns, rounds and the median: a round lasts about a second, and on a shared
machine the two sizes measured one after the other (as before) swung the ratio from
69% to 153% between runs of the same code; taking turns puts both under the same
noise. Why the service's collector thresholds (``SERVICE_GC_THRESHOLDS``,
orch/gc_tuning.py), as ``orch serve`` runs with: with CPython's own, a full collection
of the large heap (0.34 s) landed in every round. Each round's time in full
collections is reported, so one that does land shows.
"""

from __future__ import annotations

import gc
import math
import statistics
import time
from typing import Any

from orch import Orchestrator, Settings
from orch.config import SERVICE_GC_THRESHOLDS


class _FullCollections:
    """Seconds spent in generation-2 collections while installed."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self._started = 0.0

    def __call__(self, phase: str, info: dict[str, Any]) -> None:
        if info["generation"] != 2:
            return
        if phase == "start":
            self._started = time.perf_counter()
        else:
            self.seconds += time.perf_counter() - self._started


class _Fleet:
    """One orchestrator with ``agents`` agents and ``backlog`` parked tasks."""

    def __init__(self, agents: int, backlog: int, tasks: int) -> None:
        self.agents, self.backlog, self.tasks = agents, backlog, tasks
        self.slots = max(1, math.ceil(tasks / agents))
        settings = Settings(heartbeat_interval_s=3600, gc_thresholds=SERVICE_GC_THRESHOLDS)
        self.orch = Orchestrator(settings).start()
        self.register_s = 0.0
        self.rates: list[float] = []
        self.cpu_us: list[float] = []
        self.gc_s: list[float] = []
        self._rounds = 0

    def populate(self) -> None:
        started = time.perf_counter()
        for n in range(self.agents):
            self.orch.register_agent(f"s{n}", "bench", ["bench"], max_concurrent_tasks=self.slots)
            self.orch.start_agent(f"s{n}")
        self.register_s = time.perf_counter() - started
        for n in range(self.backlog):
            self.orch.submit({}, task_id=f"parked-{n}", capabilities=["nobody-has-this"])

    def measure_round(self, collections: _FullCollections) -> None:
        orch, round_no = self.orch, self._rounds
        if round_no:
            for n in range(self.tasks):  # free the slots the last round filled
                task_id = f"work-{round_no - 1}-{n}"
                orch.complete_task(orch.task(task_id)["agent_id"], task_id)
        collections.seconds = 0.0
        before = orch.stats()["tasks"]["total_tasks_assigned"]
        cpu_started = time.process_time()
        started = time.perf_counter()
        for n in range(self.tasks):
            orch.submit({}, task_id=f"work-{round_no}-{n}", capabilities=["bench"])
        deadline = time.monotonic() + 300
        while orch.stats()["tasks"]["total_tasks_assigned"] - before < self.tasks:
            if time.monotonic() > deadline:
                raise RuntimeError("assignments did not finish within 300 s")
            time.sleep(0.005)  # polling the bench's own progress, not a timing wait
        self.rates.append(self.tasks / (time.perf_counter() - started))
        self.cpu_us.append(1e6 * (time.process_time() - cpu_started) / self.tasks)
        self.gc_s.append(collections.seconds)
        self._rounds += 1

    def report(self) -> dict[str, Any]:
        return {
            "agents": self.agents,
            "slots_per_agent": self.slots,
            "backlog": self.backlog,
            "tasks": self.tasks,
            "rounds": self._rounds,
            "register_and_start_s": self.register_s,
            "assignments_per_s": statistics.median(self.rates),
            "assignments_per_s_by_round": self.rates,
            # Less swayed than the rate by whatever else runs on a shared machine.
            "cpu_us_per_assignment": statistics.median(self.cpu_us),
            "full_gc_s_by_round": self.gc_s,
        }


def assignment_rates(
    small_agents: int, large_agents: int, backlog: int, tasks: int, rounds: int = 3
) -> dict[str, Any]:
    """``{"small": report, "large": report, "ratio": large rate / small rate}``."""
    collections = _FullCollections()
    fleets: list[_Fleet] = []
    try:
        for agents, parked in ((small_agents, 0), (large_agents, backlog)):
            fleets.append(_Fleet(agents, parked, tasks))  # stopped below, whatever happens
            fleets[-1].populate()
        gc.callbacks.append(collections)
        try:
            for _ in range(rounds):
                for fleet in fleets:
                    fleet.measure_round(collections)
        finally:
            gc.callbacks.remove(collections)
    finally:
        for fleet in fleets:
            fleet.orch.stop()
    small, large = (fleet.report() for fleet in fleets)
    return {
        "small": small,
        "large": large,
        "ratio": large["assignments_per_s"] / small["assignments_per_s"],
    }
