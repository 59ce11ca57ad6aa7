"""Does the cost per assignment grow with the fleet or the queue? (embedded, in-process)

Registers ``agents`` started remote agents, parks ``backlog`` tasks no agent can take
(so the queue is deep), then submits one task per agent and times until every one
is assigned. The rate at a large fleet is compared with the rate at 100 agents.
"""

from __future__ import annotations

import threading
import time
from typing import Any

from orch import Orchestrator, Settings

#: Each agent is an actor thread; the default 8 MiB stack reservation is far more than
#: an actor needs and limits how many fit.
ACTOR_STACK_BYTES = 512 * 1024


def assignment_rate(agents: int, backlog: int) -> dict[str, Any]:
    previous = threading.stack_size(ACTOR_STACK_BYTES)
    try:
        with Orchestrator(Settings(heartbeat_interval_s=3600)) as orch:
            started = time.perf_counter()
            for n in range(agents):
                orch.register_agent(f"s{n}", "bench", ["bench"])
                orch.start_agent(f"s{n}")
            register_s = time.perf_counter() - started
            for n in range(backlog):
                orch.submit({}, task_id=f"parked-{n}", capabilities=["nobody-has-this"])
            before = orch.stats()["tasks"]["total_tasks_assigned"]
            started = time.perf_counter()
            for n in range(agents):
                orch.submit({}, task_id=f"work-{n}", capabilities=["bench"])
            deadline = time.monotonic() + 300
            while orch.stats()["tasks"]["total_tasks_assigned"] - before < agents:
                if time.monotonic() > deadline:
                    raise RuntimeError("assignments did not finish within 300 s")
                time.sleep(0.005)  # polling the bench's own progress, not a timing wait
            elapsed = time.perf_counter() - started
            return {
                "agents": agents,
                "backlog": backlog,
                "register_and_start_s": register_s,
                "assignments_per_s": agents / elapsed,
            }
    finally:
        threading.stack_size(previous)
