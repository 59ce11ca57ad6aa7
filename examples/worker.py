"""A remote agent: takes tasks from the orchestrator over HTTP until interrupted.

Start the server (``make run``), then ``python examples/worker.py`` in another
terminal and submit work, for example with
``june-orchestrator tasks submit --capability code --payload '{"msg": "hi"}'``.
Ctrl-C, or SIGTERM (``docker stop``, systemd), stops the agent cleanly: it stops
taking work and ends ``stopped``.

``ORCH_URL`` points it at another server (or several, separated by commas: the nodes
of a cluster, tried in turn), ``ORCH_ADMIN_TOKEN`` is passed on when the server
needs one (registering and stopping an agent are operator calls).
Started by ``june-orchestrator launcher``, it finds ``ORCH_AGENT_ID`` and
``ORCH_AGENT_TOKEN`` in its environment and joins the registration the launcher
made instead of registering.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
from typing import Any

from orch.client import AgentClient, AssignedTask, LockLost
from orch.errors import OrchestratorError


def handle(task: AssignedTask) -> dict[str, Any]:
    """The work itself. Here: echo the payload; a real agent would write code."""
    return {"echo": task.payload}


def main(argv: list[str] | None = None) -> int:
    """Serve tasks until Ctrl-C or SIGTERM, or until ``--max-tasks`` have been done."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--url", default=os.environ.get("ORCH_URL", "http://127.0.0.1:8005"))
    parser.add_argument("--agent-id", default=os.environ.get("ORCH_AGENT_ID", "worker-1"))
    parser.add_argument("--capability", action="append", default=None, help="default: code")
    parser.add_argument("--max-tasks", type=int, default=None, help="stop after N tasks")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    log = logging.getLogger("worker")

    # SIGTERM would kill the process at once, leaving the agent's tasks assigned until
    # it is declared lost; as a KeyboardInterrupt it leaves the `with` block below,
    # whose exit stops and drains the agent, just as Ctrl-C does.
    signal.signal(signal.SIGTERM, signal.default_int_handler)
    done = 0
    try:
        with AgentClient(
            args.url,
            agent_id=args.agent_id,
            agent_type="implementation",
            capabilities=args.capability or ["code"],
            admin_token=os.environ.get("ORCH_ADMIN_TOKEN") or None,
            token=os.environ.get("ORCH_AGENT_TOKEN") or None,
        ) as agent:
            log.info("%s is ready at %s; Ctrl-C stops it", args.agent_id, args.url)
            while args.max_tasks is None or done < args.max_tasks:
                for task in agent.tasks(timeout=30):  # ends after 30 s without work
                    log.info("task %s (attempt %d): %s", task.task_id, task.attempt, task.payload)
                    try:
                        repo = str(task.payload.get("repo", "june"))
                        with agent.lock(f"repo:{repo}", ttl_s=30, wait_s=10):
                            result = handle(task)
                        agent.complete(task, result=result)
                        log.info("task %s completed", task.task_id)
                    except LockLost as exc:
                        log.warning("task %s: %s; giving it back", task.task_id, exc)
                        agent.fail(task, error=str(exc), retryable=True)
                    except OrchestratorError as exc:  # e.g. cancelled meanwhile
                        log.warning("task %s: %s", task.task_id, exc)
                    done += 1
                    if args.max_tasks is not None and done >= args.max_tasks:
                        break
    except KeyboardInterrupt:
        log.info("interrupted")
    except OrchestratorError as exc:
        log.error("%s", exc)
        return 1
    log.info("stopped after %d task(s)", done)
    return 0


if __name__ == "__main__":
    sys.exit(main())
