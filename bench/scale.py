"""Does the cost per assignment grow with the fleet or the queue? (embedded)

Registers ``agents`` started remote agents, parks ``backlog`` tasks no agent can take
(so the queue is deep), then submits ``tasks`` tasks and times until every one is
assigned. Both sizes assign the same number of tasks — the small fleet's agents get
``tasks / agents`` slots each — so the two rates differ only by fleet and queue, and
the small one is not a few milliseconds of noise.
"""

from __future__ import annotations

import math
import time
from typing import Any

from orch import Orchestrator, Settings


def assignment_rate(agents: int, backlog: int, tasks: int) -> dict[str, Any]:
    slots = max(1, math.ceil(tasks / agents))
    with Orchestrator(Settings(heartbeat_interval_s=3600)) as orch:
        started = time.perf_counter()
        for n in range(agents):
            orch.register_agent(f"s{n}", "bench", ["bench"], max_concurrent_tasks=slots)
            orch.start_agent(f"s{n}")
        register_s = time.perf_counter() - started
        for n in range(backlog):
            orch.submit({}, task_id=f"parked-{n}", capabilities=["nobody-has-this"])
        before = orch.stats()["tasks"]["total_tasks_assigned"]
        cpu_started = time.process_time()
        started = time.perf_counter()
        for n in range(tasks):
            orch.submit({}, task_id=f"work-{n}", capabilities=["bench"])
        deadline = time.monotonic() + 300
        while orch.stats()["tasks"]["total_tasks_assigned"] - before < tasks:
            if time.monotonic() > deadline:
                raise RuntimeError("assignments did not finish within 300 s")
            time.sleep(0.005)  # polling the bench's own progress, not a timing wait
        elapsed = time.perf_counter() - started
        cpu_s = time.process_time() - cpu_started
        return {
            "agents": agents,
            "slots_per_agent": slots,
            "backlog": backlog,
            "tasks": tasks,
            "register_and_start_s": register_s,
            "assignments_per_s": tasks / elapsed,
            # Less swayed than the rate by whatever else runs on a shared machine.
            "cpu_us_per_assignment": 1e6 * cpu_s / tasks,
        }
