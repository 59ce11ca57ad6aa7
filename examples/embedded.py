"""The embedded API: an orchestrator inside this process, with an in-process agent.

No server needed: ``Orchestrator()`` runs the same actors the REST API serves, with a
memory store. Run it with ``python examples/embedded.py``.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from orch import Agent, Assignment, Orchestrator, TaskFailed


class Echo(Agent):
    """Answers every task with its payload; a payload with ``crash`` makes it raise."""

    agent_type = "implementation"
    capabilities = {"echo"}

    def handle(self, task: Assignment) -> Any:
        if task.payload.get("crash"):
            raise RuntimeError("boom")
        return {"echo": task.payload}


def main() -> int:
    """Submit work to an in-process agent, crash it once, and show it carried on."""
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s")  # the crash is logged
    with Orchestrator() as orch:  # memory store, no HTTP
        orch.attach(Echo("echo-1"))  # registered, started and supervised
        handle = orch.submit({"msg": "hi"}, capabilities={"echo"})
        print("result:", handle.result(timeout=5))

        bad = orch.submit({"crash": True}, capabilities={"echo"}, max_attempts=1)
        try:
            bad.result(timeout=10)
        except TaskFailed as exc:
            print("failed as expected:", exc)

        again = orch.submit({"n": 2}, capabilities={"echo"})
        print("after the crash:", again.result(timeout=10))
        print("restarts of echo-1:", orch.agent("echo-1")["restarts"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
