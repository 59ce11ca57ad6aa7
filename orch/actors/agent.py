"""AgentActor: one per agent, owning that agent's lifecycle state.

Remote and in-process agents share this actor; only the transport of an assignment
differs. A remote agent's assignments wait here until its next heartbeat collects
them; an in-process agent's are handed to its worker threads at once. User code
never runs in the actor's own thread, so the actor always answers start, stop and
heartbeat promptly, and a ``BaseException`` from user code is caught by the worker's
guard instead of stopping every actor in the process.

When in-process code raises, the actor dies on purpose (``AgentCrashed``): its
``on_failure`` reports the crash to the Scheduler (which fails the agent's tasks by
retry policy) and to the Supervisor (which restarts the actor with backoff).
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

import msgspec
import pykka

from orch.actors.directory import Directory
from orch.actors.matching import AgentSlot
from orch.agent import Agent
from orch.clock import Clock
from orch.config import Settings
from orch.errors import AgentCrashed, Conflict
from orch.events import Events
from orch.model import (
    ACTIVE_STATES,
    AgentConfig,
    AgentRecord,
    AgentState,
    Assignment,
    check_agent_transition,
)
from orch.store.base import Store

logger = logging.getLogger("orch.agent")

#: States in which the Scheduler may hand the agent new work.
SCHEDULABLE_STATES = frozenset({AgentState.IDLE, AgentState.BUSY})


@dataclass(frozen=True, slots=True)
class AgentDeps:
    """What every AgentActor is wired to; built once by the Orchestrator."""

    store: Store
    clock: Clock
    events: Events
    directory: Directory
    settings: Settings
    scheduler: Any  # Scheduler proxy
    lock_broker: Any  # LockBroker proxy
    supervisor: Any  # Supervisor proxy


class AgentActor(pykka.ThreadingActor):
    """Owns one agent's state; its public methods are the messages it accepts."""

    use_daemon_thread = True

    def __init__(
        self,
        record: AgentRecord,
        generation: int,
        deps: AgentDeps,
        factory: Callable[[], Agent] | None = None,
    ) -> None:
        super().__init__()
        self._record = record
        self._generation = generation
        self._deps = deps
        self._factory = factory
        self._assignments: dict[str, Assignment] = {}
        self._undelivered: set[str] = set()
        self._runner: _Runner | None = None
        self._proxy: Any = None
        self._retired = False

    # ------------------------------------------------------------- lifecycle

    def on_start(self) -> None:
        self._proxy = self.actor_ref.proxy()
        if self._factory is not None:
            self._runner = _Runner(
                self._factory,
                self._proxy,
                self._record.config.max_concurrent_tasks,
                self._record.agent_id,
            )
        self._publish()
        if self._record.state in SCHEDULABLE_STATES:
            self._offer_to_scheduler()

    def on_stop(self) -> None:
        if self._runner is not None:
            self._runner.close()

    def on_failure(self, exception_type: Any, exception_value: Any, traceback: Any) -> None:
        if isinstance(exception_value, AgentCrashed):
            error = str(exception_value)  # already "Type: message" of the user's exception
        else:
            error = f"{getattr(exception_type, '__name__', 'Error')}: {exception_value}"
        logger.warning("agent %s crashed: %s", self._record.agent_id, error)
        if self._runner is not None:
            self._runner.close()
        deps = self._deps
        deps.scheduler.agent_gone.defer(self._record.agent_id, self._generation, "crashed", error)
        deps.supervisor.child_failed.defer(self._record.agent_id, self._generation, error)

    # ------------------------------------------------------------- messages

    def describe(self) -> AgentRecord:
        """The agent's current record."""
        return self._record

    def start_agent(self) -> str:
        """Admit the agent to scheduling; ``started`` or ``already_active``."""
        state = self._record.state
        if state in ACTIVE_STATES:
            return "already_active"
        if state is AgentState.LOST:
            raise Conflict(
                f"agent {self._record.agent_id!r} was lost; register it again to start it"
            )
        now = self._deps.clock.monotonic()
        self._transition(self._busy_or_idle(), last_heartbeat=now, last_error=None)
        self._offer_to_scheduler()
        self._deps.events.emit("agent.started", agent_id=self._record.agent_id)
        return "started"

    def stop_agent(self, drain: bool = True) -> str:
        """Stop handing the agent work; with ``drain`` its running tasks may finish.

        Returns ``stopping`` while draining, else ``stopped``. Without ``drain`` the
        agent's tasks go back to the queue without counting an attempt.
        """
        state = self._record.state
        if state in (AgentState.STOPPED, AgentState.REGISTERED):
            if state is AgentState.REGISTERED:
                self._transition(AgentState.STOPPED)
                self._deps.events.emit("agent.stopped", agent_id=self._record.agent_id)
            return "stopped"
        if state is AgentState.LOST:
            raise Conflict(f"agent {self._record.agent_id!r} was lost; nothing to stop")
        if state is AgentState.STOPPING and drain:
            return "stopping"
        if drain and self._assignments:
            self._transition(AgentState.STOPPING)
            self._deps.scheduler.agent_unready.defer(self._record.agent_id, self._generation)
            self._deps.events.emit("agent.stopping", agent_id=self._record.agent_id)
            return "stopping"
        self._finish_stop(requeue=True)
        return "stopped"

    def heartbeat(self) -> dict[str, Any]:
        """Record liveness and hand over assignments (delivery marks them running).

        The answer lists every current assignment, not only new ones, so an agent
        whose previous answer was lost still learns of its work (it deduplicates by
        task id and attempt).
        """
        record = self._record
        if record.state is AgentState.LOST:
            raise Conflict(f"agent {record.agent_id!r} was declared lost; register it again")
        now = self._deps.clock.monotonic()
        if record.state is AgentState.UNHEALTHY:
            self._transition(self._busy_or_idle(), last_heartbeat=now)
            self._offer_to_scheduler()
            self._deps.events.emit("agent.recovered", agent_id=record.agent_id)
        else:
            self._record = replace(record, last_heartbeat=now)
            self._publish()
        if self._undelivered:
            delivered = [(k, self._assignments[k].attempt) for k in self._undelivered]
            self._undelivered.clear()
            self._deps.scheduler.mark_running.defer(record.agent_id, delivered)
        record = self._record
        return {
            "agent_id": record.agent_id,
            "status": str(record.state),
            "assignments": [a.to_dict() for a in self._assignments.values()],
            "config_version": record.config.version,
            "heartbeat_interval_s": record.config.heartbeat_interval_s,
        }

    def assign(self, assignment: Assignment) -> None:
        """Take a task from the Scheduler, or hand it back if no longer able to."""
        held = self._assignments.get(assignment.key)
        if held is not None and held.attempt == assignment.attempt:
            return  # sent again (recovery): already ours
        record = self._record
        if record.state not in SCHEDULABLE_STATES or record.free_slots <= 0:
            self._deps.scheduler.assignment_refused.defer(
                record.agent_id, assignment.key, assignment.attempt
            )
            return
        self._assignments[assignment.key] = assignment
        self._sync_tasks()
        if self._runner is not None:
            self._runner.submit(assignment)
            self._deps.scheduler.mark_running.defer(
                record.agent_id, [(assignment.key, assignment.attempt)]
            )
        else:
            self._undelivered.add(assignment.key)

    def sync_assignments(self, assignments: list[Assignment]) -> None:
        """Hold exactly these assignments: the Scheduler rebuilt itself from the store.

        Assignments it no longer knows were never stored, so they are dropped (an
        in-process worker already running one finishes, and its report is refused).
        """
        wanted = {a.key: a for a in assignments}
        for key, held in list(self._assignments.items()):
            if key not in wanted or wanted[key].attempt != held.attempt:
                self._assignments.pop(key)
                self._undelivered.discard(key)
        for key, assignment in wanted.items():
            if key not in self._assignments:
                self._assignments[key] = assignment
                if self._runner is not None:
                    self._runner.submit(assignment)
                else:
                    self._undelivered.add(key)
        self._sync_tasks()

    def release(self, key: str) -> None:
        """Forget a task that ended, was cancelled or was taken away."""
        if self._assignments.pop(key, None) is None:
            return
        self._undelivered.discard(key)
        if self._record.state is AgentState.STOPPING and not self._assignments:
            self._finish_stop(requeue=False)
        else:
            self._sync_tasks()

    def check_liveness(self) -> None:
        """Judge the agent by its own last heartbeat (asked by the HealthMonitor)."""
        record = self._record
        if record.in_process or record.state not in (
            AgentState.IDLE,
            AgentState.BUSY,
            AgentState.UNHEALTHY,
            AgentState.STOPPING,
        ):
            return
        settings = self._deps.settings
        missed = (self._deps.clock.monotonic() - record.last_heartbeat) / (
            record.config.heartbeat_interval_s
        )
        if missed >= settings.lost_after_missed:
            self._declare_lost(missed)
        elif missed >= settings.unhealthy_after_missed and record.state in SCHEDULABLE_STATES:
            self._transition(AgentState.UNHEALTHY)
            self._deps.scheduler.agent_unready.defer(record.agent_id, self._generation)
            self._deps.events.emit(
                "agent.unhealthy", agent_id=record.agent_id, missed_intervals=round(missed, 1)
            )

    def update_config(self, config: AgentConfig) -> AgentRecord:
        """Adopt a new config version (validated by the caller); returns the record."""
        if config.version <= self._record.config.version:
            raise Conflict(
                f"config version {config.version} is not newer than {self._record.config.version}"
            )
        self._transition(self._record.state, config=config)
        if self._runner is not None:
            self._runner.resize(config.max_concurrent_tasks)
        if self._record.state in SCHEDULABLE_STATES:
            self._offer_to_scheduler()
        self._deps.events.emit(
            "agent.config_changed", agent_id=self._record.agent_id, version=config.version
        )
        return self._record

    def retire(self) -> None:
        """Give back everything before deregistration; the Supervisor then stops us."""
        self._retired = True
        agent_id = self._record.agent_id
        self._deps.scheduler.agent_gone.defer(agent_id, self._generation, "released", None)
        self._deps.lock_broker.release_agent.defer(agent_id)
        self._assignments.clear()
        self._undelivered.clear()

    # ---------------------------------------------- in-process worker reports

    def task_done(self, key: str, attempt: int, result: Any) -> None:
        """A worker finished a task; forward the result to the Scheduler."""
        if key not in self._assignments:
            return  # cancelled or timed out meanwhile; the Scheduler already moved on
        try:
            result = msgspec.json.decode(msgspec.json.encode(result))
        except (TypeError, msgspec.EncodeError) as exc:
            self._deps.scheduler.fail_from_agent.defer(
                self._record.agent_id,
                key,
                attempt,
                f"result is not JSON-serialisable: {exc}",
                True,
            )
            return
        self._deps.scheduler.complete_from_agent.defer(self._record.agent_id, key, attempt, result)

    def task_crashed(self, key: str, attempt: int, error: str) -> None:
        """A worker's task raised: die, so the Supervisor restarts the agent."""
        raise AgentCrashed(error)

    # ------------------------------------------------------------- internals

    def _busy_or_idle(self) -> AgentState:
        return AgentState.BUSY if self._assignments else AgentState.IDLE

    def _transition(self, state: AgentState, **changes: Any) -> None:
        """Store, then apply, then publish: nothing half-applied if the store fails."""
        check_agent_transition(self._record.agent_id, self._record.state, state)
        new = replace(self._record, state=state, **changes)
        if self._stored_view(new) != self._stored_view(self._record):
            self._deps.store.put_agent(replace(new, task_keys=frozenset(), last_heartbeat=0.0))
        self._record = new
        self._publish()

    @staticmethod
    def _stored_view(record: AgentRecord) -> AgentRecord:
        # Busy/idle flips with every task and the task table already says which
        # tasks an agent holds, so those flips are not worth a store write.
        state = AgentState.IDLE if record.state is AgentState.BUSY else record.state
        return replace(record, state=state, task_keys=frozenset(), last_heartbeat=0.0)

    def _sync_tasks(self) -> None:
        keys = frozenset(self._assignments)
        state = self._record.state
        if state in SCHEDULABLE_STATES:
            state = self._busy_or_idle()
        self._record = replace(self._record, task_keys=keys, state=state)
        self._publish()

    def _publish(self) -> None:
        if not self._retired:
            self._deps.directory.publish(self._generation, self._record)

    def _offer_to_scheduler(self) -> None:
        record = self._record
        self._deps.scheduler.agent_ready.defer(
            AgentSlot(
                agent_id=record.agent_id,
                generation=self._generation,
                actor=self._proxy,
                agent_type=record.agent_type,
                capabilities=record.capabilities,
                max_slots=record.config.max_concurrent_tasks,
                task_timeout_s=record.config.task_timeout_s,
            )
        )

    def _finish_stop(self, *, requeue: bool) -> None:
        agent_id = self._record.agent_id
        # Stored first: if the store refuses, the agent keeps its tasks and its place.
        self._transition(AgentState.STOPPED, task_keys=frozenset())
        if requeue:
            self._deps.scheduler.agent_gone.defer(agent_id, self._generation, "released", None)
        self._assignments.clear()
        self._undelivered.clear()
        self._deps.lock_broker.release_agent.defer(agent_id)
        self._deps.events.emit("agent.stopped", agent_id=agent_id)

    def _declare_lost(self, missed: float) -> None:
        agent_id = self._record.agent_id
        self._transition(AgentState.LOST, task_keys=frozenset())
        self._deps.scheduler.agent_gone.defer(agent_id, self._generation, "lost", None)
        self._deps.lock_broker.release_agent.defer(agent_id)
        self._assignments.clear()
        self._undelivered.clear()
        self._deps.events.emit("agent.lost", agent_id=agent_id, missed_intervals=round(missed, 1))


class _Runner:
    """Worker threads that run an in-process agent's ``handle`` off the actor thread."""

    def __init__(self, factory: Callable[[], Agent], actor: Any, slots: int, agent_id: str) -> None:
        self._factory = factory
        self._actor = actor
        self._agent_id = agent_id
        self._queue: queue.SimpleQueue[Assignment | None] = queue.SimpleQueue()
        self._agent: Agent | None = None
        self._agent_ready = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._closed = threading.Event()
        self.resize(slots)

    def resize(self, slots: int) -> None:
        while len(self._threads) < slots:
            thread = threading.Thread(
                target=self._work,
                name=f"agent-{self._agent_id}-{len(self._threads)}",
                daemon=True,
            )
            self._threads.append(thread)
            thread.start()

    def submit(self, assignment: Assignment) -> None:
        self._queue.put(assignment)

    def close(self) -> None:
        self._closed.set()
        for _ in self._threads:
            self._queue.put(None)
        agent = self._agent
        if agent is not None:
            try:
                agent.on_stop()
            except Exception:
                logger.exception("agent %s on_stop failed", self._agent_id)

    def _instance(self) -> Agent:
        with self._agent_ready:
            if self._agent is None:
                agent = self._factory()
                agent.on_start()
                self._agent = agent
            return self._agent

    def _work(self) -> None:
        while (assignment := self._queue.get()) is not None:
            if self._closed.is_set():
                return
            try:
                result = self._instance().handle(assignment)
            except BaseException as exc:  # the guard: nothing escapes into Pykka
                report, args = self._actor.task_crashed, (f"{type(exc).__name__}: {exc}",)
            else:
                report, args = self._actor.task_done, (result,)
            try:
                report.defer(assignment.key, assignment.attempt, *args)
            except pykka.ActorDeadError:
                return  # the actor died; its crash report already failed this task
