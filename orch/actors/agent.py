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
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, cast

import msgspec

from orch.actors import liveness
from orch.actors.directory import Directory
from orch.actors.liveness import SCHEDULABLE_STATES
from orch.actors.matching import AgentSlot
from orch.actors.records import evolve
from orch.actors.runner import InProcessRunner
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
from orch.runtime import ActorGate, ActorPool, GatedActor, LightProxy, PooledActor, gate_safe
from orch.store.base import Durable, PendingWrite, Store

if TYPE_CHECKING:
    from orch.actors.proxies import AgentProxy, LockBrokerProxy, SchedulerProxy, SupervisorProxy

logger = logging.getLogger("orch.agent")


@dataclass(frozen=True, slots=True)
class AgentDeps:
    """What every AgentActor is wired to; built once by the Orchestrator."""

    store: Store
    clock: Clock
    events: Events
    directory: Directory
    settings: Settings
    scheduler: SchedulerProxy
    lock_broker: LockBrokerProxy
    supervisor: SupervisorProxy
    pool: ActorPool  # the threads every AgentActor's messages run on
    scheduler_gate: ActorGate | None = None  # for ``mark_running`` without a hand-off


class AgentActor(GatedActor, PooledActor):
    """Owns one agent's state; its public methods are the messages it accepts.

    Its messages run on the Supervisor's ``ActorPool``, not a thread of its own, so a
    fleet of 10,000 agents is not 10,000 threads (``orch/runtime/pool.py``).

    Its gate-safe messages run in the caller's thread when the actor is idle
    (``orch/runtime/gate.py``): the facade's ``heartbeat`` and ``start_agent``, the
    Scheduler's ``assign``, ``release`` and ``sync_assignments``, and the worker
    threads' ``task_done``. None of them asks the Scheduler (or anyone who calls them
    through a gate) back, and a start queues its write (see ``gate_safe``).
    """

    def __init__(
        self,
        record: AgentRecord,
        generation: int,
        deps: AgentDeps,
        factory: Callable[[], Agent] | None = None,
        gate: ActorGate | None = None,
        registered: PendingWrite | None = None,
    ) -> None:
        super().__init__(deps.pool, gate=gate)
        # What the Scheduler and the worker threads send through (Pykka's proxy
        # would cost more than the rest of a registration, ``LightProxy``).
        self._proxy = cast("AgentProxy", LightProxy(self.actor_ref))
        # The registration write, until known durable: no write of ours may be
        # acknowledged for an agent whose registration was not stored.
        self._registered = registered
        # The write of a start answered before it committed, until a later one is stored.
        self._unconfirmed_start: PendingWrite | None = None
        self._record = record
        self._generation = generation
        self._deps = deps
        self._factory = factory
        self._assignments: dict[str, Assignment] = {}
        self._undelivered: set[str] = set()
        self._runner: InProcessRunner | None = None
        self._retired = False
        # A launcher reported the agent's process gone and will start it again: no
        # work until the new process's first heartbeat (``process_exited``).
        self._awaiting_process = False

    # ------------------------------------------------------------- lifecycle

    def on_start(self) -> None:
        if self._factory is not None:
            self._runner = InProcessRunner(
                self._factory,
                self._proxy,
                self._record.config.max_concurrent_tasks,
                self._record.agent_id,
                self._gate,
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
        running: frozenset[tuple[str, int]] = frozenset()
        deps = self._deps
        if self._runner is not None:
            running = self._runner.close(orphans_to=deps.scheduler, error=error)
        deps.scheduler.agent_gone.defer(
            self._record.agent_id, self._generation, "crashed", error, running
        )
        deps.supervisor.child_failed.defer(self._record.agent_id, self._generation, error)

    # ------------------------------------------------------------- messages

    def describe(self) -> AgentRecord:
        """The agent's current record."""
        return self._record

    @gate_safe
    def start_agent(self) -> str | Durable[str]:
        """Admit the agent to scheduling; ``started`` or ``already_active``.

        The new state's write is queued, not waited for, and the answer is
        ``Durable``: whoever gives it waits for the commit (or holds the HTTP answer
        for it, ``orch/http/waitress_adapter.py``), so a start costs no commit inside this
        message. Should the write fail after all, the caller is refused and the
        Supervisor, told of the write (``watch_start``), has the start undone
        (``undo_start``), as for a registration.
        """
        state = self._record.state
        if state in ACTIVE_STATES:
            return "already_active"
        if state is AgentState.LOST:
            raise Conflict(
                f"agent {self._record.agent_id!r} was lost; register it again to start it"
            )
        now = self._deps.clock.monotonic()
        stored = self._record
        write = self._transition(
            self._busy_or_idle(), queue_write=True, last_heartbeat=now, last_error=None
        )
        self._offer_to_scheduler()
        self._deps.events.emit("agent.started", agent_id=self._record.agent_id)
        if write is None or (write.done() and not write.failed()):
            return "started"
        self._unconfirmed_start = write
        self._deps.supervisor.watch_start.defer(stored.agent_id, self._generation, write, stored)
        return Durable("started", (write,))

    def undo_start(self, write: PendingWrite, stored: AgentRecord) -> None:
        """Put the agent back as it is stored (``stored``): the write of its start failed.

        Sent by the Supervisor. Whatever the agent was given meanwhile goes back to
        the queue without an attempt counted, as when it is stopped without draining.
        Nothing is written: the store already holds the state restored here.
        """
        if self._unconfirmed_start is not write:
            return  # a later change was stored since, and memory matches it
        self._unconfirmed_start = None
        agent_id = stored.agent_id
        self._deps.scheduler.agent_gone.defer(agent_id, self._generation, "released", None)
        self._deps.lock_broker.release_agent.defer(agent_id)
        self._assignments.clear()
        self._undelivered.clear()
        self._record = evolve(stored, last_heartbeat=self._record.last_heartbeat)
        self._publish()
        logger.error("the start of agent %s was not stored; undone", agent_id)

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

    @gate_safe
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
            self._record = evolve(record, last_heartbeat=now)
            self._publish()
            if self._awaiting_process and record.state in SCHEDULABLE_STATES:
                self._offer_to_scheduler()  # the relaunched process is here
        self._awaiting_process = False
        if self._undelivered:
            delivered = [(k, self._assignments[k].attempt) for k in self._undelivered]
            self._undelivered.clear()
            self._mark_running(record.agent_id, delivered)
        record = self._record
        return {
            "agent_id": record.agent_id,
            "status": str(record.state),
            "assignments": [a.to_dict() for a in self._assignments.values()],
            "config_version": record.config.version,
            "heartbeat_interval_s": record.config.heartbeat_interval_s,
        }

    def _mark_running(self, agent_id: str, delivered: list[tuple[str, int]]) -> None:
        """Tell the Scheduler of a delivery, in this thread if it is idle (``ActorGate``).

        Every heartbeat that hands over work sends this; queued, it woke the
        Scheduler's thread once per task. The Scheduler never waits on an agent, so
        running it here while holding this actor's gate cannot deadlock (both gates
        are only ever tried, never waited for, by a thread holding the other).
        """
        gate = self._deps.scheduler_gate
        if gate is not None:
            try:
                ran, _ = gate.try_call("mark_running", agent_id, delivered)
            except Exception:  # a bug in the Scheduler: the delivery is made again later
                logger.exception("marking tasks of %s running failed", agent_id)
                return
            if ran:
                return
        self._deps.scheduler.mark_running.defer(agent_id, delivered)

    @gate_safe
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
            # Handed over now; the Scheduler leased it ``running`` already (AgentSlot).
            self._runner.submit(assignment)
        else:
            self._undelivered.add(assignment.key)

    @gate_safe
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

    @gate_safe
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
        settings = self._deps.settings
        found = liveness.judge(
            record,
            self._deps.clock.monotonic(),
            unhealthy_after=settings.unhealthy_after_missed,
            lost_after=settings.lost_after_missed,
        )
        if found.verdict is liveness.Verdict.LOST:
            self._declare_lost(found.missed_intervals)
        elif found.verdict is liveness.Verdict.UNHEALTHY:
            self._transition(AgentState.UNHEALTHY)
            self._deps.scheduler.agent_unready.defer(record.agent_id, self._generation)
            self._deps.events.emit(
                "agent.unhealthy",
                agent_id=record.agent_id,
                missed_intervals=round(found.missed_intervals, 1),
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

    def update_metadata(self, metadata: dict[str, Any]) -> AgentRecord:
        """Replace the agent's ``metadata`` (validated by the caller); returns the record.

        A launcher sets it on every launch (pid, host, program), so the stored record
        says which process is the agent now.
        """
        self._transition(self._record.state, metadata=metadata)
        return self._record

    def process_exited(self, error: str, restarting: bool) -> AgentRecord:
        """A launcher saw the agent's process end; settle its tasks and its state.

        The tasks it held are failed with ``error`` and retried by policy, as for a
        crashed in-process agent. With ``restarting`` the launcher starts the process
        again after its backoff: the restart is counted in ``restarts`` and the agent
        takes no work until the new process's first heartbeat. Without it the
        launcher gave up (restart intensity): the agent is ``failed``, its locks
        released, and ``start`` revives it. A stopping agent whose process ends is
        stopped; a stopped, registered, failed or lost one has nothing to settle.
        """
        record = self._record
        if self._runner is not None:
            raise Conflict(
                f"agent {record.agent_id!r} runs in the orchestrator's process; "
                "it has no process to exit"
            )
        agent_id = record.agent_id
        state = record.state
        if state in (AgentState.STOPPED, AgentState.REGISTERED, AgentState.FAILED, AgentState.LOST):
            return record
        self._deps.scheduler.agent_gone.defer(agent_id, self._generation, "crashed", error)
        self._assignments.clear()
        self._undelivered.clear()
        if state is AgentState.STOPPING:
            self._finish_stop(requeue=False)
            return self._record
        events = self._deps.events
        if restarting:
            self._transition(
                AgentState.IDLE,
                task_keys=frozenset(),
                restarts=record.restarts + 1,
                last_error=error,
            )
            self._awaiting_process = True
            events.emit("agent.crashed", agent_id=agent_id, error=error, process=True)
            events.emit("agent.restarted", agent_id=agent_id, restarts=self._record.restarts)
            return self._record
        self._transition(AgentState.FAILED, task_keys=frozenset(), last_error=error)
        self._deps.lock_broker.release_agent.defer(agent_id)
        events.emit("agent.crashed", agent_id=agent_id, error=error, process=True)
        events.emit("agent.failed", agent_id=agent_id, error=error, restarts=record.restarts)
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

    @gate_safe
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

    def _transition(
        self, state: AgentState, *, queue_write: bool = False, **changes: Any
    ) -> PendingWrite | None:
        """Store, then apply, then publish: nothing half-applied if the store fails.

        With ``queue_write`` the write is queued and returned instead of waited for
        (``start_agent``), once the registration is known stored: an agent's record
        must never be committed without the credential its registration wrote.
        """
        check_agent_transition(self._record.agent_id, self._record.state, state)
        new = evolve(self._record, state=state, **changes)
        write = None
        if self._stored_view(new) != self._stored_view(self._record):
            record = evolve(new, task_keys=frozenset(), last_heartbeat=0.0)
            registered = self._registered
            if registered is not None and registered.done() and not registered.failed():
                self._registered = registered = None
            if queue_write and registered is None:
                write = self._deps.store.put_agent_nowait(record)
            else:
                if registered is not None:
                    registered.wait()  # StoreError if it failed: nothing applied
                    self._registered = None
                self._deps.store.put_agent(record)
                self._unconfirmed_start = None  # a later state is stored: nothing to undo
        self._record = new
        self._publish()
        return write

    @staticmethod
    def _stored_view(record: AgentRecord) -> AgentRecord:
        # Busy/idle flips with every task and the task table already says which
        # tasks an agent holds, so those flips are not worth a store write.
        state = AgentState.IDLE if record.state is AgentState.BUSY else record.state
        return evolve(record, state=state, task_keys=frozenset(), last_heartbeat=0.0)

    def _sync_tasks(self) -> None:
        keys = frozenset(self._assignments)
        state = self._record.state
        if state in SCHEDULABLE_STATES:
            state = self._busy_or_idle()
        self._record = evolve(self._record, task_keys=keys, state=state)
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
                gate=self._gate,
                in_process=self._runner is not None,
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
