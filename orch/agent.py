"""The base class for in-process agents: Python objects the orchestrator runs.

An in-process agent is supervised exactly like a remote one: it lives behind an
AgentActor, and when its code raises, the actor dies and the Supervisor re-creates
the agent from its factory. An instance passed to ``Orchestrator.attach`` becomes its
own factory: its class is called again with the arguments it was built with.
"""

from __future__ import annotations

import abc
from collections.abc import Callable
from typing import Any, ClassVar

from orch.model import Assignment


class Agent(abc.ABC):
    """Subclass, set ``agent_type`` and ``capabilities``, and implement ``handle``."""

    agent_type: ClassVar[str] = "implementation"
    capabilities: ClassVar[set[str] | frozenset[str]] = frozenset()
    max_concurrent_tasks: ClassVar[int] = 1
    metadata: ClassVar[dict[str, Any]] = {}

    _constructor_args: tuple[tuple[Any, ...], dict[str, Any]]

    def __new__(cls, *args: Any, **kwargs: Any) -> Agent:
        # Remember how this instance was built so a restart can build a fresh one.
        instance = super().__new__(cls)
        instance._constructor_args = (args, kwargs)
        return instance

    def __init__(self, agent_id: str) -> None:
        self.agent_id = agent_id

    @abc.abstractmethod
    def handle(self, task: Assignment) -> Any:
        """Do the work of ``task`` and return its result (JSON-serialisable).

        Raising fails the attempt (it is retried by policy) and restarts the agent.
        """

    def on_start(self) -> None:  # noqa: B027 - optional hook
        """Called in the agent's worker thread before its first task."""

    def on_stop(self) -> None:  # noqa: B027 - optional hook
        """Called when the agent's actor stops (shutdown, restart or deregistration)."""

    def factory(self) -> Callable[[], Agent]:
        """A callable that builds a fresh copy of this agent, used on restart."""
        args, kwargs = self._constructor_args
        cls = type(self)
        return lambda: cls(*args, **kwargs)
