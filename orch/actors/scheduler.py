"""Scheduler: the actor that owns every task, the queue and the assignment table.

Its rules are a pure ``TaskTable`` (``orch/actors/task_table.py``): the table
decides, this actor applies, as Nomad's server applies its scheduler's plan. Each
change is proposed by the table, stored here, then kept by the table (``_change``),
so a store failure leaves the task as it was; what follows from keeping it (events,
messages to agents, task locks to release) comes back as a ``Plan`` this actor
carries out (``_apply``). Assignment is a lease: it lasts while the agent is healthy
and the task's timeout has not run out; when it dies the task goes back to the queue
(its attempt counted) or, out of attempts, ends ``dead``.

Agents tell the Scheduler when they can take work (``agent_ready``), when they
cannot (``agent_unready``) and when they are gone (``agent_gone``); the Scheduler
pushes assignments to them with tells. It asks only the LockBroker, which never asks
back, so no two actors can wait on each other.
"""

from __future__ import annotations

import collections
import functools
import logging
import threading
from collections import defaultdict
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

import pykka

from orch.actors.matching import AgentSlot
from orch.actors.task_index import Plan, lock_owner, task_key_of_lock_owner
from orch.actors.task_table import TaskTable
from orch.actors.task_timing import CANCELLED, REPLACED
from orch.clock import Clock
from orch.config import Settings
from orch.errors import Conflict, OrchestratorError
from orch.events import Events
from orch.model import TERMINAL_TASK_STATES, Assignment, Task, TaskId, TaskSpec, TaskState
from orch.runtime import ActorGate, GatedActor, gate_safe
from orch.store.base import Durable, PendingWrite, Store

__all__ = ["Scheduler", "TaskView", "lock_owner", "task_key_of_lock_owner"]

logger = logging.getLogger("orch.scheduler")

Method = TypeVar("Method", bound=Callable[..., Any])


def answers_when_durable(method: Method) -> Method:
    """Return the method's answer as ``Durable``: with the task writes it made.

    The Scheduler does not wait for its own commits (that would make one commit per
    message, whatever the concurrency); the caller waits for them instead.
    """

    @functools.wraps(method)
    def wrapper(self: Scheduler, *args: Any, **kwargs: Any) -> Durable[Any]:
        outer = self._answer_writes
        self._answer_writes = []
        try:
            value = method(self, *args, **kwargs)
            return Durable(value, tuple(self._answer_writes))
        finally:
            self._answer_writes = outer

    return wrapper  # type: ignore[return-value]


class TaskView:
    """The Scheduler's task table, readable from other threads without asking it.

    ``wait_for_task`` on a task that has already ended (the common case when a caller
    submits a batch, then collects results) needed an ask just to learn that. Tasks
    are immutable and only the Scheduler's messages change the table, one at a time
    (on its thread, or on a caller's through its gate, which holds the same lock);
    a dict read is atomic in CPython, so a reader sees some recent state of each
    task, as with the agents' ``Directory``.
    """

    __slots__ = ("tasks",)

    def __init__(self) -> None:
        self.tasks: dict[str, Task] = {}

    def get(self, key: str) -> Task | None:
        return self.tasks.get(key)


def _tell(slot: AgentSlot, method: str, *args: Any) -> None:
    """A one-way message to an agent's actor, run here without a hand-off when it is idle.

    The AgentActor's handlers for these messages are ``gate_safe``: they never ask
    the Scheduler back, so running them in this thread cannot deadlock.
    """
    if slot.gate is not None:
        slot.gate.tell(slot.actor, method, *args)
    else:
        getattr(slot.actor, method).defer(*args)


class Scheduler(GatedActor):
    """Queue, assignment and task lifecycle; its public methods are its messages.

    Its ``gate`` (``orch/runtime/gate.py``) lets the facade submit, complete and read
    tasks in the caller's thread while the Scheduler is idle: over HTTP each of those
    asks was a fifth of a task cycle's CPU in thread hand-offs (bench/README.md).
    """

    use_daemon_thread = True

    def __init__(
        self,
        store: Store,
        clock: Clock,
        events: Events,
        settings: Settings,
        view: TaskView | None = None,
        gate: ActorGate | None = None,
    ) -> None:
        super().__init__(gate=gate)
        self._view = view or TaskView()
        self._store = store
        self._clock = clock
        self._events = events
        self._settings = settings
        self._broker: Any = None
        self._table = TaskTable(settings)
        self._view.tasks = self._table.tasks
        self._watchers: defaultdict[str, list[pykka.Future[Task]]] = defaultdict(list)
        self._pruning: threading.Thread | None = None
        # Task writes not yet known to be durable, oldest first; and those made while
        # answering the current message (None outside ``answers_when_durable``).
        self._in_flight: collections.deque[PendingWrite] = collections.deque()
        self._answer_writes: list[PendingWrite] | None = None

    # ------------------------------------------------------------ recovery

    def on_start(self) -> None:
        self._load_state(initial=True)

    def _load_state(self, *, initial: bool) -> None:
        """Rebuild the queue and the assignment table from the store.

        Assigned tasks are handed to their agent again once its actor is back
        (``agent_ready``); see ``TaskTiming.recovered`` for what time does to them.
        """
        self._table.load(self._store.load_tasks(), self._clock.monotonic(), initial=initial)
        if self._table.tasks and initial:
            logger.info("recovered %d tasks", len(self._table.tasks))

    def recover_orphans(self, live_agents: list[str]) -> int:
        """Requeue recovered leases whose agent did not come back (in-process ones)."""
        orphans = self._table.orphans(live_agents, self._clock.monotonic(), self._clock.time())
        for task, reason in orphans:
            self._change(task, reason)
        self._dispatch()
        return len(orphans)

    def check_writes(self) -> bool:
        """Rebuild from the store if a task write failed after it was applied.

        Returns True if it rebuilt. Called every tick, and at once by the facade
        when an answer's write failed.
        """
        failed = any(write.failed() for write in self._in_flight)
        while self._in_flight and self._in_flight[0].done():
            self._in_flight.popleft()
        if failed:
            self._reload()
        return failed

    def _reload(self) -> None:
        """Forget the in-memory queue and rebuild it from what the store holds."""
        logger.error("a task write failed after it was applied; rebuilding from the store")
        plan = self._table.rebuild(self._store.load_tasks(), self._clock.monotonic())
        self._view.tasks = self._table.tasks
        self._in_flight = collections.deque()
        self._apply(plan)
        self._dispatch()

    def set_lock_broker(self, broker: Any) -> None:
        """Wire the LockBroker (a proxy) used for tasks that name resources."""
        self._broker = broker

    # ------------------------------------------------------------ submission

    @gate_safe
    @answers_when_durable
    def submit(self, spec: TaskSpec, agent_id: str | None = None, force: bool = False) -> Task:
        """Queue a task, or assign it straight to ``agent_id``; returns it as it now is.

        A task id that is still active is a ``Conflict`` unless ``force``, which
        cancels the active one first. A named agent that cannot take the task now
        (not started, unhealthy, busy, lacking capabilities, resources held) is a
        ``Conflict`` and nothing is queued.
        """
        table = self._table
        old = table.replaced(spec, force)
        now, wall = self._clock.monotonic(), self._clock.time()
        task = table.new_task(spec, now, wall)
        if agent_id is not None:
            slot = table.named_slot(agent_id, spec)
            tokens = self._task_locks(task, slot)
            if tokens is None:
                raise Conflict(
                    f"resources {', '.join(spec.resources)} are not all free for {agent_id!r}"
                )
            leased = table.leased(task, slot, tokens, self._clock.monotonic(), wall)
            if old is not None:
                self._change(table.finished(old, TaskState.CANCELLED, wall, error=REPLACED))
            self._change(leased, leasing=True)
            return table.tasks[task.key]
        if spec.submitter is not None:
            table.refuse_if_queue_full(spec.submitter, old)
        if old is not None:
            self._change(table.finished(old, TaskState.CANCELLED, wall, error=REPLACED))
        self._change(task)
        self._dispatch()
        return table.tasks[task.key]

    # -------------------------------------------------------- agents' reports

    def agent_ready(self, slot: AgentSlot) -> None:
        """An agent can take work (started, healthy, or its config changed)."""
        plan = self._table.agent_ready(slot)
        if plan is not None:
            self._apply(plan)
            self._dispatch()

    def agent_unready(self, agent_id: str, generation: int) -> None:
        """An agent must get no new work (unhealthy, stopping); it keeps its tasks."""
        self._table.agent_unready(agent_id, generation)

    def agent_gone(
        self,
        agent_id: str,
        generation: int,
        how: str,
        error: str | None,
        still_running: frozenset[tuple[str, int]] = frozenset(),
    ) -> None:
        """An agent can no longer run its tasks; settle each of them.

        ``crashed``: failed with the error, retried by policy. ``lost``: requeued with
        the attempt counted. ``released`` (stopped without drain, deregistered):
        requeued without counting the attempt. Attempts in ``still_running`` (task
        key, attempt: a crashed in-process agent's code is still inside ``handle``,
        and a thread cannot be stopped) stay leased until that run reports, so no task
        runs twice at once.
        """
        settled = self._table.agent_gone(
            agent_id,
            generation,
            how,
            error,
            still_running,
            self._clock.monotonic(),
            self._clock.time(),
        )
        for task, reason in settled:
            try:
                self._change(task, reason)
            except OrchestratorError:
                logger.exception("could not settle task %s of agent %s", task.key, agent_id)
        self._dispatch()

    def assignment_refused(self, agent_id: str, key: str, attempt: int) -> None:
        """The agent could not take a task after all (it stopped meanwhile)."""
        now, wall = self._clock.monotonic(), self._clock.time()
        requeued = self._table.refused(agent_id, key, attempt, now, wall)
        if requeued is not None:
            self._change(*requeued)
            self._dispatch()

    @gate_safe
    def mark_running(self, agent_id: str, delivered: list[tuple[str, int]]) -> None:
        """The agent has received these assignments."""
        for running in self._table.delivered(agent_id, delivered):
            try:
                self._change(running)
            except OrchestratorError:
                # Delivery already happened; left `assigned` it is delivered again.
                logger.warning("could not record delivery of task %s", running.key)

    def resources_freed(self, resources: list[str]) -> None:
        """The LockBroker says these resources came free: retry tasks parked on them."""
        self._table.resources_freed(resources)
        self._dispatch()

    # -------------------------------------------------------------- outcomes

    @gate_safe
    @answers_when_durable
    def complete(
        self, agent_id: str, task_id: TaskId, result: Any = None, attempt: int | None = None
    ) -> Task:
        """Record a task's success; only the agent holding it may complete it."""
        table = self._table
        task = table.held(agent_id, task_id, attempt)
        done = table.finished(task, TaskState.COMPLETED, self._clock.time(), result=result)
        self._change(done)
        self._dispatch()
        return done

    @gate_safe
    @answers_when_durable
    def fail(
        self,
        agent_id: str,
        task_id: TaskId,
        error: str,
        retryable: bool = True,
        attempt: int | None = None,
    ) -> Task:
        """Record a failed attempt; retried with backoff while attempts remain."""
        table = self._table
        task = table.held(agent_id, task_id, attempt)
        failed = table.failed(task, error, retryable, self._clock.monotonic(), self._clock.time())
        self._change(failed)
        self._dispatch()
        return failed

    @gate_safe
    @answers_when_durable
    def report_progress(
        self, agent_id: str, task_id: TaskId, message: str, percent: float | None = None
    ) -> Task:
        """Keep the holder's latest progress report with the task; its state is unchanged."""
        noted = self._table.progressed(agent_id, task_id, message, percent, self._clock.time())
        self._change(noted)
        self._events.signal("task.progress_reported")
        return noted

    def complete_from_agent(self, agent_id: str, key: str, attempt: int, result: Any) -> None:
        """Tell-variant of ``complete`` for in-process agents; stale reports are dropped."""
        try:
            self.complete(agent_id, key, result, attempt)
        except OrchestratorError as exc:
            logger.info("dropped completion of %s by %s: %s", key, agent_id, exc)

    def fail_from_agent(
        self, agent_id: str, key: str, attempt: int, error: str, retryable: bool
    ) -> None:
        """Tell-variant of ``fail`` for in-process agents."""
        try:
            self.fail(agent_id, key, error, retryable, attempt)
        except OrchestratorError as exc:
            logger.info("dropped failure of %s by %s: %s", key, agent_id, exc)

    @gate_safe
    @answers_when_durable
    def cancel(self, task_id: TaskId) -> Task:
        """Cancel a task that has not ended; its agent and locks are released."""
        table = self._table
        task = table.cancellable(task_id)
        cancelled = table.finished(task, TaskState.CANCELLED, self._clock.time(), error=CANCELLED)
        self._change(cancelled)
        self._dispatch()
        return cancelled

    def watch(self, task_id: TaskId, future: pykka.Future[Task]) -> None:
        """Resolve ``future`` with the task once it ends (at once if it has)."""
        task = self._table.get(task_id)
        if task.terminal:
            future.set(task)
        else:
            self._watchers[task.key].append(future)

    # ---------------------------------------------------------------- time

    def tick(self) -> None:
        """Move due retries back to the queue and expire overdue leases."""
        self.check_writes()
        table, clock = self._table, self._clock
        now = clock.monotonic()
        try:
            while (due := table.due(now, clock.time())) is not None:
                self._change(*due)
        except OrchestratorError as exc:
            logger.warning("tick paused, store failing: %s", exc)
        for event_type, data in table.held_progress_events(now):
            self._events.emit_data(event_type, data)
        self._dispatch()
        if table.prune_due(now):
            self._prune()

    def _prune(self) -> int:
        """Forget finished tasks past retention; the store deletes them on a side thread.

        Deleting thousands of rows must not hold up the queue, so the Scheduler only
        drops them from memory and a short-lived thread asks the store to delete
        them in batches.
        """
        dropped, cutoff = self._table.prune(self._clock.time())
        if dropped and (self._pruning is None or not self._pruning.is_alive()):
            self._pruning = threading.Thread(
                target=self._prune_store, args=(cutoff,), name="orch-pruner", daemon=True
            )
            self._pruning.start()
        if dropped:
            self._events.emit("tasks.pruned", count=dropped, before=cutoff)
        return dropped

    def _prune_store(self, cutoff: float) -> None:
        try:
            removed = self._store.prune_tasks(cutoff)
            logger.info("pruned %d finished tasks from the store", removed)
        except OrchestratorError as exc:
            logger.warning("pruning finished tasks failed, will retry: %s", exc)

    # --------------------------------------------------------------- reading

    @gate_safe
    def get(self, task_id: TaskId) -> Task:
        """One task; ``NotFound`` if unknown."""
        return self._table.get(task_id)

    def list_tasks(
        self, state: TaskState | None = None, agent_id: str | None = None, limit: int = 100
    ) -> list[Task]:
        """Tasks in submission order, newest last, optionally filtered."""
        return self._table.list_tasks(state, agent_id, limit)

    def pending(self, limit: int = 100) -> list[Task]:
        """Pending tasks in the order they would be assigned."""
        return self._table.pending(limit)

    def tasks_of(self, agent_id: str) -> list[Task]:
        """The tasks an agent currently holds."""
        return self._table.tasks_of(agent_id)

    def stats(self) -> dict[str, Any]:
        """Counts for /stats and /health; O(1) in the number of tasks."""
        return self._table.stats()

    # ------------------------------------------------------ applying changes

    def _dispatch(self) -> None:
        """Assign as long as some pending task has a free eligible agent."""
        table, clock = self._table, self._clock
        while (match := table.matcher.next_match()) is not None:
            key, slot = match
            task = table.tasks[key]
            try:
                tokens = self._task_locks(task, slot) if task.spec.resources else {}
                if tokens is None:
                    table.park(task)
                    continue
                leased = table.leased(task, slot, tokens, clock.monotonic(), clock.time())
                self._change(leased, leasing=True)
            except (OrchestratorError, pykka.Timeout) as exc:
                table.enqueue(task)
                logger.warning("dispatch paused until the next tick: %s", exc)
                return

    def _task_locks(self, task: Task, slot: AgentSlot) -> Mapping[str, int] | None:
        """The fencing tokens of the locks ``task`` needs, granted to ``slot``'s agent
        all at once; None if they are not all free."""
        if not task.spec.resources:
            return {}
        if self._broker is None:
            raise Conflict("tasks with resources need a LockBroker")
        granted: Mapping[str, int] | None = self._broker.try_acquire_for_task(
            slot.agent_id,
            lock_owner(task),
            task.spec.resources,
            self._table.lease_timeout_s(task, slot),
        ).get(timeout=self._settings.ask_timeout_s)
        return granted

    def _change(self, task: Task, reason: str | None = None, *, leasing: bool = False) -> None:
        """Store a proposed change, then keep it and apply what follows: the one place
        a task changes (``reason``: see ``TaskIndex.keep``).

        A store that refuses at once raises here and nothing changes; a new lease
        (``leasing``) then gives its task locks back. A commit that fails later is
        found by ``check_writes``, which rebuilds the Scheduler from the store, so
        memory never keeps what the disk lost.
        """
        try:
            # Checked before it is stored: a refused proposal changes neither.
            admitted = self._table.admit(task)
            write = self._store.put_task_nowait(task)
        except OrchestratorError:
            if leasing and task.spec.resources:
                self._broker.release_task.defer(lock_owner(task))
            raise
        if not write.done() or write.failed():
            self._in_flight.append(write)
        if self._answer_writes is not None:
            self._answer_writes.append(write)
        self._apply(self._table.keep(task, self._clock.monotonic(), reason, admitted))
        if self._watchers and task.state in TERMINAL_TASK_STATES:
            for future in self._watchers.pop(task.key, ()):
                future.set(task)

    def _apply(self, plan: Plan) -> None:
        """Carry out a plan: events, task locks to release, messages to agents."""
        if plan.events:
            emit = self._events.emit_data
            for event_type, data in plan.events:
                emit(event_type, data)
            plan.events.clear()
        if plan.releases:
            if self._broker is not None:
                for owner in plan.releases:
                    self._broker.release_task.defer(owner)
            plan.releases.clear()
        if plan.tells:
            undelivered = None
            for slot, method, argument in plan.tells:
                try:
                    _tell(slot, method, argument)
                except pykka.ActorDeadError:
                    if method == "assign":
                        undelivered = (undelivered or []) + [(slot, argument)]
            plan.tells.clear()
            if undelivered:
                for slot, assignment in undelivered:
                    self._undeliverable(slot, assignment)

    def _undeliverable(self, slot: AgentSlot, assignment: Assignment) -> None:
        now, wall = self._clock.monotonic(), self._clock.time()
        requeued = self._table.undeliverable(slot, assignment, now, wall)
        if requeued is not None:
            self._change(*requeued)
