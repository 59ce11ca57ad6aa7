"""The Python client of the REST API: ``OrchestratorClient`` and ``AgentClient``.

``OrchestratorClient`` is one method per endpoint, named and shaped like the embedded
facade (``orch.Orchestrator``) so code can move between the two transports. Errors
come back as the same ``orch.errors`` classes the facade raises, rebuilt from the
problem+json ``code``; a server that cannot be reached is ``Unreachable`` (an
``Unavailable``), so callers never see a ``requests`` exception. Given several URLs
(a cluster's nodes), a call moves on from one that cannot be reached or has no
leader, and its writes carry one ``Idempotency-Key`` over every try.

``AgentClient`` is what a remote agent runs: it registers, starts, heartbeats on a
background thread at the interval the orchestrator sends back, receives assignments
through the heartbeat, holds leased locks that renew themselves, and stops (drained)
on exit. The agent's token lives only in this object's memory.

    with AgentClient("http://127.0.0.1:8005", agent_id="worker-1",
                     agent_type="implementation", capabilities=["code"]) as agent:
        for task in agent.tasks(timeout=30):
            with agent.lock("repo:june", ttl_s=30):
                result = {"echo": task.payload}
            agent.complete(task, result=result)

The package keeps the client apart from the worker, as Temporal's SDK does:

* ``endpoint`` — ``OrchestratorClient``, ``Unreachable``, the defaults;
* ``answers`` — the records the endpoints return and ``error_from_response``;
* ``leases`` — ``HeldLock`` (a lock renewed on its own thread) and ``LockLost``;
* ``agent`` — ``AgentClient``, the heartbeat thread and its rules.

Every name is importable from ``orch.client`` itself. The agent runtime's names are
loaded on first use, so a script that only submits work (``from orch.client import
OrchestratorClient``) never imports the modules that start threads.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from orch.client.answers import (
    AssignedTask,
    Heartbeat,
    LockGrant,
    Registration,
    error_from_response,
)
from orch.client.endpoint import (
    DEFAULT_FAILOVER_WAIT_S,
    DEFAULT_TIMEOUT_S,
    DEFAULT_URL,
    TERMINAL_TASK_STATES,
    OrchestratorClient,
    Unreachable,
)

if TYPE_CHECKING:
    from orch.client.agent import AgentClient
    from orch.client.leases import HeldLock, LockLost

__all__ = [
    "DEFAULT_FAILOVER_WAIT_S",
    "DEFAULT_TIMEOUT_S",
    "DEFAULT_URL",
    "TERMINAL_TASK_STATES",
    "AgentClient",
    "AssignedTask",
    "Heartbeat",
    "HeldLock",
    "LockGrant",
    "LockLost",
    "OrchestratorClient",
    "Registration",
    "Unreachable",
    "error_from_response",
]

#: Names of the agent runtime, imported from their module on first use.
_RUNTIME_NAMES = {
    "AgentClient": "orch.client.agent",
    "HeldLock": "orch.client.leases",
    "LockLost": "orch.client.leases",
}


def __getattr__(name: str) -> Any:
    module_name = _RUNTIME_NAMES.get(name)
    if module_name is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module_name), name)
    globals()[name] = value  # later look-ups are plain module attributes
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *__all__})
