"""Submit work and wait for the results, as a script that feeds agents would.

With the server running (``make run``) and a worker (``python examples/worker.py``):
``python examples/submit.py`` submits three tasks that need the ``code``
capability, then polls ``GET /tasks/{id}`` until each has ended, and prints results.

``ORCH_URL`` (one URL, or several separated by commas) and ``ORCH_ADMIN_TOKEN`` are
honoured, as by the command line.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

from orch.client import TERMINAL_TASK_STATES, OrchestratorClient
from orch.errors import OrchestratorError


def main(argv: list[str] | None = None) -> int:
    """Exit 0 when every task completed, 1 if one did not (or time ran out)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("ORCH_URL", "http://127.0.0.1:8005"))
    parser.add_argument("--count", type=int, default=3, help="how many tasks (default 3)")
    parser.add_argument("--capability", default="code", help="what the agent must have")
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds to wait in all")
    args = parser.parse_args(argv)

    client = OrchestratorClient(args.url, token=os.environ.get("ORCH_ADMIN_TOKEN") or None)
    try:
        waiting = []
        for n in range(1, args.count + 1):
            answer = client.assign_task(
                {"msg": f"hello {n}", "repo": "june"}, capabilities=[args.capability]
            )
            print(f"submitted {answer['task_id']} ({answer['status']})", flush=True)
            waiting.append(answer["task_id"])

        deadline = time.monotonic() + args.timeout
        results = {}
        while waiting and time.monotonic() < deadline:
            for task_id in list(waiting):
                task = client.task(task_id)
                if task["status"] in TERMINAL_TASK_STATES:
                    waiting.remove(task_id)
                    results[task_id] = task
                    outcome = task["result"] if task["status"] == "completed" else task["error"]
                    print(f"{task_id} {task['status']}: {json.dumps(outcome)}", flush=True)
            if waiting:
                time.sleep(0.2)
    except OrchestratorError as exc:
        print(f"submit.py: {exc}", file=sys.stderr)
        return 1
    finally:
        client.close()

    for task_id in waiting:
        print(f"{task_id} has not ended after {args.timeout:g}s", file=sys.stderr)
    completed = all(t["status"] == "completed" for t in results.values())
    return 0 if completed and not waiting else 1


if __name__ == "__main__":
    sys.exit(main())
