"""June Orchestrator: the control plane for June's software agents.

The embedded API is ``Orchestrator`` (the facade both transports use) and ``Agent``
(the base class of in-process agents); errors are in ``orch.errors``.
"""

from orch.agent import Agent
from orch.clock import ManualClock
from orch.config import Settings
from orch.controllers.tasks import TaskHandle
from orch.errors import (
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    OrchestratorError,
    TaskCancelled,
    TaskFailed,
    Timeout,
    Unauthorized,
    Unavailable,
)
from orch.model import Assignment
from orch.system import Orchestrator


def serve(
    orchestrator: Orchestrator | None = None, settings: Settings | None = None, **options: object
) -> None:
    """Serve the REST API from this process until SIGTERM/SIGINT (see ``orch.http.serve``).

    Imported lazily so that embedding without HTTP does not load Falcon and waitress.
    """
    from orch.http.serve import serve as serve_http

    serve_http(orchestrator, settings, **options)  # type: ignore[arg-type]


__all__ = [
    "Agent",
    "Assignment",
    "Conflict",
    "Forbidden",
    "Invalid",
    "ManualClock",
    "NotFound",
    "Orchestrator",
    "OrchestratorError",
    "Settings",
    "TaskCancelled",
    "TaskFailed",
    "TaskHandle",
    "Timeout",
    "Unauthorized",
    "Unavailable",
    "serve",
]
