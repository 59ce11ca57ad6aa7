"""The controllers the Orchestrator composes, as Mopidy's ``Core`` composes its own.

Each controller owns one area of the embedded API and is the only implementation of
its methods; ``Orchestrator`` exposes them under their README names (see
``orch.system``), and the HTTP resources call the same methods.
"""

from __future__ import annotations

from dataclasses import dataclass

from orch.controllers.agents import AgentsController
from orch.controllers.base import Actors
from orch.controllers.config import ConfigController
from orch.controllers.locks import LocksController
from orch.controllers.observation import ObservationController
from orch.controllers.tasks import TaskHandle, TasksController
from orch.tokens import Tokens


@dataclass(frozen=True, slots=True)
class Controllers:
    """One Orchestrator's controllers, each reaching the actors through the same ``Actors``."""

    agents: AgentsController
    tasks: TasksController
    locks: LocksController
    config: ConfigController
    observation: ObservationController
    tokens: Tokens


__all__ = [
    "Actors",
    "AgentsController",
    "ConfigController",
    "Controllers",
    "LocksController",
    "ObservationController",
    "TaskHandle",
    "TasksController",
    "Tokens",
]
