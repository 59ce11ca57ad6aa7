"""``Actors``: the running actors as every controller reaches them, and the look-ups they share.

The Orchestrator owns one ``Actors`` and hands it to each controller. It puts the
actors' proxies here when they start, and stand-ins when they stop, so every
controller sees the same actors at every moment without asking the Orchestrator.
Controllers reach an actor only through ``orch.runtime.Calls``: ``call`` for a
message that may run through the actor's gate, ``ask``/``ask_all`` for futures.
"""

from __future__ import annotations

from typing import Any

import pykka

from orch.actors.directory import Directory, Entry
from orch.actors.scheduler import TaskView
from orch.errors import Conflict, NotFound, Unavailable
from orch.model import AgentState, TaskId, validate_id
from orch.runtime import ActorHandle, Calls
from orch.store.base import PendingWrite

NOT_STARTED = "the orchestrator is not started; use `with Orchestrator() as orch` or call start()"
STOPPED = "the orchestrator has stopped; a stopped one cannot restart, create a new Orchestrator"


class NotRunning:
    """Stands in for the actor proxies while no actors run (before start, after stop).

    Every controller call that needs an actor reaches it through ``Actors``, so this
    one stand-in turns all of them into an ``Unavailable`` that says what to do,
    instead of an ``AttributeError`` (never started) or a call to a dead actor.
    """

    def __init__(self, message: str) -> None:
        self._message = message

    def __getattr__(self, name: str) -> Any:
        raise Unavailable(self._message)


class Actors:
    """The actors' proxies, their published views, and the one call path to them."""

    # Proxies, or ``NotRunning`` stand-ins while no actors run.
    supervisor: Any
    scheduler: Any
    broker: Any
    health: Any
    #: The Intake actor, when serving with the TODO service connected; else None.
    intake: Any
    #: What the Intake publishes (``IntakeView``), read without an ask; else None.
    intake_view: Any
    #: The Scheduler's gate (callers run its messages while it is idle); None when stopped.
    scheduler_gate: Any

    def __init__(self, calls: Calls, directory: Directory, task_view: TaskView) -> None:
        self.calls = calls
        #: The agents as the Supervisor publishes them, read without an ask.
        self.directory = directory
        #: The Scheduler's tasks, read without an ask (ended tasks, held tasks' ids).
        self.task_view = task_view
        #: Every actor this Orchestrator started, in start order (for health and stop).
        self.refs: list[pykka.ActorRef[Any]] = []
        self.started = False
        #: When the actors started, on the Orchestrator's clock (for ``uptime_s``).
        self.started_at = 0.0
        self.stand_in(NOT_STARTED)

    def connect(
        self,
        *,
        supervisor: Any,
        scheduler: Any,
        scheduler_gate: Any,
        broker: Any,
        health: Any,
    ) -> None:
        """Reach these actors from now on (the Orchestrator's start, once)."""
        self.supervisor = supervisor
        self.scheduler = scheduler
        self.scheduler_gate = scheduler_gate
        self.broker = broker
        self.health = health
        # Built once: submit and complete go through it on every call.
        self._scheduler_handle = ActorHandle(scheduler, scheduler_gate)

    def stand_in(self, message: str) -> None:
        """Put ``NotRunning(message)`` where the proxies go: calls fail as ``Unavailable``."""
        not_running = NotRunning(message)
        self.supervisor = not_running
        self.scheduler = not_running
        self.scheduler_gate = None
        self.broker = not_running
        self.health = not_running
        self.intake = None
        self.intake_view = None
        self._scheduler_handle = ActorHandle(not_running)

    def check_running(self) -> None:
        """For the calls that need no actor (they read the Directory): the same answer."""
        if not self.started:
            raise Unavailable(STOPPED if self.refs else NOT_STARTED)

    def scheduler_call(
        self, method: str, *args: Any, answer_writes: list[PendingWrite] | None = None
    ) -> Any:
        """Run a Scheduler message here if it is idle (its gate lets us), else ask it.

        ``answer_writes``: see ``Calls.settle`` (a caller that holds the answer itself).
        """
        return self.calls.call(self._scheduler_handle, method, *args, answer_writes=answer_writes)

    def agent_call(
        self,
        entry: Entry,
        method: str,
        *args: Any,
        answer_writes: list[PendingWrite] | None = None,
    ) -> Any:
        """Run an AgentActor message here if its actor is idle (its gate), else ask it."""
        handle = ActorHandle(entry.actor, entry.gate)
        return self.calls.call(handle, method, *args, answer_writes=answer_writes)

    def entry(self, agent_id: str) -> Entry:
        """The agent's published entry; ``NotFound`` if there is no such agent."""
        self.check_running()
        validate_id("agent_id", agent_id)
        entry = self.directory.get(agent_id)
        if entry is None:
            raise NotFound(f"no agent {agent_id!r}")
        return entry

    def live_entry(self, agent_id: str) -> Entry:
        """The agent's entry, if it has a running actor (``Conflict``/``Unavailable`` if not)."""
        entry = self.entry(agent_id)
        if entry.actor is None:
            if entry.record.state is AgentState.FAILED:
                raise Conflict(
                    f"agent {agent_id!r} failed (restart intensity exceeded); start it again",
                    state="failed",
                )
            raise Unavailable(f"agent {agent_id!r} is restarting; try again shortly")
        return entry

    def task_id_of(self, key: str) -> TaskId:
        """A held task's id as submitted (``123``, not ``"123"``), read without an ask.

        An agent's record names its tasks by key; the Scheduler's ``TaskView`` has the
        tasks themselves. A task an agent holds is never pruned, so the key is only a
        fallback, for the moment the Scheduler spends rebuilding its table.
        """
        task = self.task_view.get(key)
        return key if task is None else task.spec.task_id
