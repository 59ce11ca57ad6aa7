"""Scheduler: owns every task, the queue and the assignment table.

Tasks move only here. Each change is stored before it is kept (``_put``), so a store
failure leaves the task as it was. Assignment is a lease: it lasts while the agent
is healthy and the task's timeout has not run out; when it dies the task goes back
to the queue (its attempt counted) or, out of attempts, ends ``dead``.

Agents tell the Scheduler when they can take work (``agent_ready``), when they
cannot (``agent_unready``) and when they are gone (``agent_gone``); the Scheduler
pushes assignments to them with tells. It asks only the LockBroker, which never asks
back, so no two actors can wait on each other.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import heapq
import logging
import threading
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import replace
from typing import Any, TypeVar

import pykka

from orch.actors.matching import AgentSlot, Matcher, Requirement
from orch.actors.records import evolve
from orch.clock import Clock
from orch.config import Settings
from orch.errors import Conflict, NotFound, OrchestratorError, TooManyRequests
from orch.events import Events
from orch.model import (
    LEASED_TASK_STATES,
    Assignment,
    Task,
    TaskId,
    TaskSpec,
    TaskState,
    retry_delay_s,
    task_key,
)
from orch.runtime import ActorGate, GatedActor, gate_safe
from orch.store.base import Durable, PendingWrite, Store

logger = logging.getLogger("orch.scheduler")

PRUNE_INTERVAL_S = 60.0
#: What a submitter at its queue cap is told to wait; the queue drains as agents work.
QUEUE_FULL_RETRY_AFTER_S = 5.0

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
    are immutable and only the Scheduler's thread changes the table; a dict read is
    atomic in CPython, so a reader sees some recent state of each task, as with the
    agents' ``Directory``.
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


def requirement_of(spec: TaskSpec) -> Requirement:
    return (spec.agent_type, spec.capabilities)


def lock_owner(task: Task) -> str:
    """The name a task's resource locks are held under.

    It includes the submission number so the locks of a forcibly replaced task and
    those of its replacement (same task id) are never confused.
    """
    return f"{task.key}#{task.seq}"


def task_key_of_lock_owner(owner: str) -> str:
    """The task key inside a ``lock_owner`` name (ids cannot hold ``#``)."""
    return owner.rpartition("#")[0] or owner


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
        self._tasks: dict[str, Task] = {}
        self._view.tasks = self._tasks
        self._leases: defaultdict[str, set[str]] = defaultdict(set)  # agent id -> task keys
        self._matcher = Matcher(self._is_queued)
        self._parked: dict[str, tuple[str, ...]] = {}  # task key -> resources it waits for
        self._parked_by_resource: defaultdict[str, set[str]] = defaultdict(set)
        self._retry_heap: list[tuple[float, str, int]] = []
        self._lease_heap: list[tuple[float, str, int]] = []
        self._watchers: defaultdict[str, list[pykka.Future[Task]]] = defaultdict(list)
        self._seq = 0
        self._by_state: Counter[TaskState] = Counter()
        self._pending_by_priority: Counter[int] = Counter()
        self._pending_by_submitter: Counter[str] = Counter()
        self._totals: Counter[str] = Counter()
        # Leases rebuilt from the store whose agent has not yet been told of them.
        self._recovered: defaultdict[str, set[str]] = defaultdict(set)
        self._finished: collections.deque[tuple[float, str]] = collections.deque()
        self._next_prune = 0.0
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

        Monotonic times do not survive a restart: leases get a fresh timeout, due
        retries are due at once, queue waits restart. Assigned tasks are handed to
        their agent again once its actor is back (``agent_ready``).
        """
        now = self._clock.monotonic()
        for task in self._store.load_tasks():
            self._seq = max(self._seq, task.seq)
            if task.state in LEASED_TASK_STATES and task.agent_id is not None:
                timeout_s = task.spec.timeout_s or self._settings.task_timeout_s
                task = replace(task, lease_deadline=now + timeout_s, queued_at=now)
                self._leases[task.agent_id].add(task.key)
                self._recovered[task.agent_id].add(task.key)
                heapq.heappush(self._lease_heap, (now + timeout_s, task.key, task.attempts))
            elif task.state is TaskState.FAILED:
                task = replace(task, retry_at=now, queued_at=now)
                heapq.heappush(self._retry_heap, (now, task.key, task.attempts))
            else:
                task = replace(task, queued_at=now)
            self._keep(task)
            if task.state is TaskState.PENDING:
                self._enqueue(task)
            elif task.terminal:
                if initial:
                    self._totals[str(task.state)] += 1
                self._finished.append((task.finished_at or 0.0, task.key))
        if initial:
            self._totals["submitted"] = len(self._tasks)
        if self._tasks and initial:
            logger.info("recovered %d tasks", len(self._tasks))

    def recover_orphans(self, live_agents: list[str]) -> int:
        """Requeue recovered leases whose agent did not come back (in-process ones)."""
        live = set(live_agents)
        orphans = [a for a in list(self._recovered) if a not in live]
        count = 0
        for agent_id in orphans:
            for key in self._recovered.pop(agent_id):
                task = self._tasks.get(key)
                if task is not None and task.state in LEASED_TASK_STATES:
                    self._lease_lost(
                        task, "its agent did not survive a restart", count_attempt=False
                    )
                    count += 1
        self._dispatch()
        return count

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
        slots = list(self._matcher.agents())
        before = self._tasks
        self._tasks = {}
        self._view.tasks = self._tasks
        self._leases = defaultdict(set)
        self._matcher = Matcher(self._is_queued)
        self._parked = {}
        self._parked_by_resource = defaultdict(set)
        self._retry_heap = []
        self._lease_heap = []
        self._by_state = Counter()
        self._pending_by_priority = Counter()
        self._pending_by_submitter = Counter()
        self._recovered = defaultdict(set)
        self._finished = collections.deque()
        self._in_flight = collections.deque()
        self._load_state(initial=False)
        if self._broker is not None:
            for task in before.values():
                kept = self._tasks.get(task.key)
                if task.spec.resources and (
                    kept is None or kept.seq != task.seq or kept.state not in LEASED_TASK_STATES
                ):
                    self._broker.release_task.defer(lock_owner(task))
        for slot in slots:
            fresh = replace(slot, load=len(self._leases.get(slot.agent_id, ())), requirements=[])
            self._matcher.put_agent(fresh)
            held = [
                self._assignment(self._tasks[key], fresh)
                for key in sorted(self._recovered.pop(slot.agent_id, ()))
            ]
            with contextlib.suppress(pykka.ActorDeadError):
                _tell(slot, "sync_assignments", held)
        self._events.emit("scheduler.rebuilt", tasks=len(self._tasks))
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
        key = task_key(spec.task_id)
        old = self._tasks.get(key)
        if old is not None and not old.terminal and not force:
            raise Conflict(
                f"task {spec.task_id!r} is still {old.state}; submit with force to replace it",
                task_status=str(old.state),
            )
        task = Task(
            spec=spec,
            seq=self._seq + 1,
            created_at=self._clock.time(),
            queued_at=self._clock.monotonic(),
        )
        if agent_id is not None:
            slot = self._named_slot(agent_id, spec)
            leased = self._lease(task, slot)
            if leased is None:
                raise Conflict(
                    f"resources {', '.join(spec.resources)} are not all free for {agent_id!r}"
                )
            self._seq += 1
            if old is not None and not old.terminal:
                self._finish(old, TaskState.CANCELLED, error="replaced by a forced resubmission")
            self._events.emit("task.queued", task_id=spec.task_id, priority=spec.priority)
            self._totals["submitted"] += 1
            self._commit_lease(leased, slot)
            return self._tasks[key]
        if spec.submitter is not None:
            self._refuse_if_queue_full(spec.submitter, old)
        if old is not None and not old.terminal:
            self._finish(old, TaskState.CANCELLED, error="replaced by a forced resubmission")
        self._put(task)
        self._seq += 1
        self._totals["submitted"] += 1
        self._events.emit("task.queued", task_id=spec.task_id, priority=spec.priority)
        self._enqueue(task)
        self._dispatch()
        return self._tasks[key]

    def _refuse_if_queue_full(self, submitter: str, replacing: Task | None) -> None:
        """``TooManyRequests`` if ``submitter`` already has its cap of tasks queued.

        One flooding client must not grow the queue without bound or bury other
        submitters' work; a forced resubmission replaces its queued original.
        """
        limit = self._settings.max_queued_tasks_per_submitter
        queued = self._pending_by_submitter[submitter]
        if (
            replacing is not None
            and replacing.state is TaskState.PENDING
            and replacing.spec.submitter == submitter
        ):
            queued -= 1
        if queued >= limit:
            raise TooManyRequests(
                f"{submitter} already has {queued} tasks queued, the limit "
                f"(ORCH_MAX_QUEUED_TASKS_PER_SUBMITTER); submit more once some are assigned",
                retry_after_s=QUEUE_FULL_RETRY_AFTER_S,
                queued=queued,
                limit=limit,
            )

    def _named_slot(self, agent_id: str, spec: TaskSpec) -> AgentSlot:
        slot = self._matcher.agent(agent_id)
        if slot is None or not slot.ready:
            raise Conflict(f"agent {agent_id!r} is not started or not healthy", agent_id=agent_id)
        if slot.load >= slot.max_slots:
            raise Conflict(
                f"agent {agent_id!r} is busy ({slot.load}/{slot.max_slots} tasks)",
                agent_id=agent_id,
            )
        if not slot.serves(requirement_of(spec)):
            raise Conflict(
                f"agent {agent_id!r} ({slot.agent_type}) does not meet the task's "
                f"agent_type/capabilities",
                agent_id=agent_id,
            )
        return slot

    # -------------------------------------------------------- agents' reports

    def agent_ready(self, slot: AgentSlot) -> None:
        """An agent can take work (started, healthy, or its config changed)."""
        current = self._matcher.agent(slot.agent_id)
        if current is not None and current.generation > slot.generation:
            return
        slot.load = len(self._leases.get(slot.agent_id, ()))
        self._matcher.put_agent(slot)
        for key in sorted(self._recovered.pop(slot.agent_id, ())):
            task = self._tasks.get(key)
            if task is not None and task.state in LEASED_TASK_STATES:
                self._send_assignment(task, slot)
        self._dispatch()

    def agent_unready(self, agent_id: str, generation: int) -> None:
        """An agent must get no new work (unhealthy, stopping); it keeps its tasks."""
        slot = self._matcher.agent(agent_id)
        if slot is not None and slot.generation == generation:
            self._matcher.set_ready(slot, False)

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
        slot = self._matcher.agent(agent_id)
        if slot is not None and slot.generation <= generation:
            self._matcher.remove_agent(agent_id)
        for key in list(self._leases.get(agent_id, ())):
            task = self._tasks[key]
            if (key, task.attempts) in still_running:
                continue
            try:
                if how == "crashed":
                    self._fail(task, error or "agent crashed", retryable=True)
                else:
                    reason = f"agent {agent_id!r} was {'lost' if how == 'lost' else 'stopped'}"
                    self._lease_lost(task, reason, count_attempt=how == "lost")
            except OrchestratorError:
                logger.exception("could not settle task %s of agent %s", key, agent_id)
        self._dispatch()

    def assignment_refused(self, agent_id: str, key: str, attempt: int) -> None:
        """The agent could not take a task after all (it stopped meanwhile)."""
        task = self._tasks.get(key)
        if (
            task
            and task.agent_id == agent_id
            and task.attempts == attempt
            and task.state in (LEASED_TASK_STATES)
        ):
            self._lease_lost(task, "agent refused the assignment", count_attempt=False)
            self._dispatch()

    @gate_safe
    def mark_running(self, agent_id: str, delivered: list[tuple[str, int]]) -> None:
        """The agent has received these assignments."""
        for key, attempt in delivered:
            task = self._tasks.get(key)
            if (
                task
                and task.state is TaskState.ASSIGNED
                and task.agent_id == agent_id
                and task.attempts == attempt
            ):
                try:
                    self._put(evolve(task, state=TaskState.RUNNING))
                except OrchestratorError:
                    # Delivery already happened; left `assigned` it is delivered again.
                    logger.warning("could not record delivery of task %s", key)

    def resources_freed(self, resources: list[str]) -> None:
        """The LockBroker says these resources came free: retry tasks parked on them."""
        for resource in resources:
            for key in self._parked_by_resource.pop(resource, set()):
                waited_for = self._parked.pop(key, ())
                for other in waited_for:
                    if other != resource:
                        self._parked_by_resource[other].discard(key)
                task = self._tasks.get(key)
                if task is not None and task.state is TaskState.PENDING:
                    self._enqueue(task)
        self._dispatch()

    # -------------------------------------------------------------- outcomes

    @gate_safe
    @answers_when_durable
    def complete(
        self, agent_id: str, task_id: TaskId, result: Any = None, attempt: int | None = None
    ) -> Task:
        """Record a task's success; only the agent holding it may complete it."""
        task = self._held(agent_id, task_id, attempt)
        done = self._finish(task, TaskState.COMPLETED, result=result)
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
        task = self._held(agent_id, task_id, attempt)
        failed = self._fail(task, error, retryable)
        self._dispatch()
        return failed

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
        task = self._get(task_id)
        if task.terminal:
            raise Conflict(f"task {task_id!r} already ended {task.state}")
        cancelled = self._finish(task, TaskState.CANCELLED, error="cancelled")
        self._dispatch()
        return cancelled

    def watch(self, task_id: TaskId, future: pykka.Future[Task]) -> None:
        """Resolve ``future`` with the task once it ends (at once if it has)."""
        task = self._get(task_id)
        if task.terminal:
            future.set(task)
        else:
            self._watchers[task.key].append(future)

    # ---------------------------------------------------------------- time

    def tick(self) -> None:
        """Move due retries back to the queue and expire overdue leases."""
        self.check_writes()
        now = self._clock.monotonic()
        try:
            while self._retry_heap and self._retry_heap[0][0] <= now:
                _, key, attempts = self._retry_heap[0]
                task = self._tasks.get(key)
                if task and task.state is TaskState.FAILED and task.attempts == attempts:
                    pending = evolve(task, state=TaskState.PENDING, retry_at=None, queued_at=now)
                    self._put(pending)
                    self._enqueue(pending)
                    self._totals["retried"] += 1
                    self._events.emit(
                        "task.retried", task_id=task.spec.task_id, attempt=task.attempts + 1
                    )
                heapq.heappop(self._retry_heap)
            while self._lease_heap and self._lease_heap[0][0] <= now:
                _, key, attempts = self._lease_heap[0]
                task = self._tasks.get(key)
                if (
                    task
                    and task.state in LEASED_TASK_STATES
                    and task.attempts == attempts
                    and task.lease_deadline is not None
                    and task.lease_deadline <= now
                ):
                    self._totals["timed_out"] += 1
                    self._lease_lost(
                        task,
                        "timed out: no result before the task's timeout ran out",
                        count_attempt=True,
                    )
                heapq.heappop(self._lease_heap)
        except OrchestratorError as exc:
            logger.warning("tick paused, store failing: %s", exc)
        self._dispatch()
        if now >= self._next_prune:
            self._next_prune = now + PRUNE_INTERVAL_S
            self._prune()

    def _prune(self) -> int:
        """Forget finished tasks past retention; the store deletes them on a side thread.

        Deleting thousands of rows must not hold up the queue, so the Scheduler only
        drops them from memory (cheap: ``_finished`` is in finishing order) and a
        short-lived thread asks the store to delete them in batches.
        """
        cutoff = self._clock.time() - self._settings.task_retention_s
        dropped = 0
        while self._finished and self._finished[0][0] < cutoff:
            _, key = self._finished.popleft()
            task = self._tasks.get(key)
            if task is not None and task.terminal and (task.finished_at or 0.0) < cutoff:
                del self._tasks[key]
                self._by_state[task.state] -= 1
                dropped += 1
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
        return self._get(task_id)

    def list_tasks(
        self, state: TaskState | None = None, agent_id: str | None = None, limit: int = 100
    ) -> list[Task]:
        """Tasks in submission order, newest last, optionally filtered."""
        out = []
        for task in self._tasks.values():
            if state is not None and task.state is not state:
                continue
            if agent_id is not None and task.agent_id != agent_id:
                continue
            out.append(task)
        out.sort(key=lambda t: t.seq)
        return out[-limit:] if limit else out

    def pending(self, limit: int = 100) -> list[Task]:
        """Pending tasks in the order they would be assigned."""
        pending = [t for t in self._tasks.values() if t.state is TaskState.PENDING]
        pending.sort(key=lambda t: (-t.spec.priority, t.seq))
        return pending[:limit]

    def tasks_of(self, agent_id: str) -> list[Task]:
        """The tasks an agent currently holds."""
        return [self._tasks[k] for k in sorted(self._leases.get(agent_id, ()))]

    def stats(self) -> dict[str, Any]:
        """Counts for /stats and /health; O(1) in the number of tasks."""
        return {
            "tasks_by_state": {str(s): self._by_state[s] for s in TaskState},
            "pending_by_priority": {
                str(p): n for p, n in sorted(self._pending_by_priority.items(), reverse=True) if n
            },
            "parked_tasks": len(self._parked),
            "total_tasks_submitted": self._totals["submitted"],
            "total_tasks_assigned": self._totals["assigned"],
            "total_tasks_completed": self._totals["completed"],
            "total_tasks_failed": self._totals["failed"],
            "total_tasks_retried": self._totals["retried"],
            "total_tasks_dead": self._totals["dead"],
            "total_tasks_cancelled": self._totals["cancelled"],
            "total_tasks_timed_out": self._totals["timed_out"],
        }

    # ------------------------------------------------------------- internals

    def _get(self, task_id: TaskId) -> Task:
        task = self._tasks.get(task_key(task_id))
        if task is None:
            raise NotFound(f"no task {task_id!r}")
        return task

    def _held(self, agent_id: str, task_id: TaskId, attempt: int | None) -> Task:
        task = self._get(task_id)
        if task.state not in LEASED_TASK_STATES:
            raise Conflict(
                f"task {task_id!r} is {task.state}, not assigned", task_status=str(task.state)
            )
        if task.agent_id != agent_id:
            raise Conflict(f"task {task_id!r} is not assigned to agent {agent_id!r}")
        if attempt is not None and attempt != task.attempts:
            raise Conflict(f"attempt {attempt} of task {task_id!r} is over; now {task.attempts}")
        return task

    def _is_queued(self, key: str, seq: int) -> bool:
        task = self._tasks.get(key)
        return (
            task is not None
            and task.state is TaskState.PENDING
            and task.seq == seq
            and key not in self._parked
        )

    def _enqueue(self, task: Task) -> None:
        self._matcher.push_task(task.key, task.seq, task.spec.priority, requirement_of(task.spec))

    def _put(self, task: Task) -> None:
        """Hand the task to the store, then keep it: the one place a task changes.

        A failure the store reports at once leaves everything as it was. A commit
        that fails later is found by ``check_writes``, which rebuilds the Scheduler
        from the store, so memory never keeps what the disk lost.
        """
        write = self._store.put_task_nowait(task)
        self._keep(task)
        if not write.done() or write.failed():
            self._in_flight.append(write)
        if self._answer_writes is not None:
            self._answer_writes.append(write)

    def _keep(self, task: Task) -> None:
        old = self._tasks.get(task.key)
        if old is not None:
            self._by_state[old.state] -= 1
            if old.state is TaskState.PENDING:
                self._pending_by_priority[old.spec.priority] -= 1
                if old.spec.submitter is not None:
                    self._pending_by_submitter[old.spec.submitter] -= 1
                    if not self._pending_by_submitter[old.spec.submitter]:
                        del self._pending_by_submitter[old.spec.submitter]
        self._by_state[task.state] += 1
        if task.state is TaskState.PENDING:
            self._pending_by_priority[task.spec.priority] += 1
            if task.spec.submitter is not None:
                self._pending_by_submitter[task.spec.submitter] += 1
        self._tasks[task.key] = task

    def _lease(self, task: Task, slot: AgentSlot) -> Task | None:
        """The task as leased to ``slot``, with its resources locked; None if they are not free."""
        timeout_s = task.spec.timeout_s or slot.task_timeout_s
        tokens: dict[str, int] = {}
        if task.spec.resources:
            if self._broker is None:
                raise Conflict("tasks with resources need a LockBroker")
            granted = self._broker.try_acquire_for_task(
                slot.agent_id, lock_owner(task), task.spec.resources, timeout_s
            ).get(timeout=self._settings.ask_timeout_s)
            if granted is None:
                return None
            tokens = granted
        return evolve(
            task,
            state=TaskState.RUNNING if slot.in_process else TaskState.ASSIGNED,
            attempts=task.attempts + 1,
            agent_id=slot.agent_id,
            assigned_at=self._clock.time(),
            lease_deadline=self._clock.monotonic() + timeout_s,
            fencing_tokens=tokens,
            retry_at=None,
        )

    def _commit_lease(self, leased: Task, slot: AgentSlot) -> None:
        try:
            self._put(leased)
        except OrchestratorError:
            if leased.spec.resources:
                self._broker.release_task.defer(lock_owner(leased))
            raise
        key = leased.key
        self._leases[slot.agent_id].add(key)
        self._matcher.set_load(slot, len(self._leases[slot.agent_id]), assigned=True)
        heapq.heappush(self._lease_heap, (leased.lease_deadline or 0.0, key, leased.attempts))
        self._totals["assigned"] += 1
        self._events.emit(
            "task.assigned",
            task_id=leased.spec.task_id,
            agent_id=slot.agent_id,
            attempt=leased.attempts,
            queue_wait_s=round(self._clock.monotonic() - leased.queued_at, 6),
        )
        self._send_assignment(leased, slot)

    @staticmethod
    def _assignment(leased: Task, slot: AgentSlot) -> Assignment:
        spec = leased.spec
        return Assignment(
            task_id=spec.task_id,
            payload=spec.payload,
            attempt=leased.attempts,
            priority=spec.priority,
            resources=spec.resources,
            fencing_tokens=leased.fencing_tokens,
            timeout_s=spec.timeout_s or slot.task_timeout_s,
        )

    def _send_assignment(self, leased: Task, slot: AgentSlot) -> None:
        try:
            _tell(slot, "assign", self._assignment(leased, slot))
        except pykka.ActorDeadError:
            # Its actor died and its agent_gone is still queued behind this message:
            # offer it nothing more, or _dispatch would hand it the same task forever.
            current = self._matcher.agent(slot.agent_id)
            if current is not None and current.generation == slot.generation:
                self._matcher.remove_agent(slot.agent_id)
            self._lease_lost(leased, "agent actor is gone", count_attempt=False)

    def _dispatch(self) -> None:
        """Assign as long as some pending task has a free eligible agent."""
        while (match := self._matcher.next_match()) is not None:
            key, slot = match
            task = self._tasks[key]
            try:
                leased = self._lease(task, slot)
                if leased is None:
                    self._park(task)
                    continue
                self._commit_lease(leased, slot)
            except (OrchestratorError, pykka.Timeout) as exc:
                self._enqueue(task)
                logger.warning("dispatch paused until the next tick: %s", exc)
                return

    def _park(self, task: Task) -> None:
        self._parked[task.key] = task.spec.resources
        for resource in task.spec.resources:
            self._parked_by_resource[resource].add(task.key)

    def _end_lease(self, task: Task) -> None:
        """Undo what holding ``task`` gave its agent: slot, locks, the agent's copy."""
        agent_id = task.agent_id
        if agent_id is None or task.state not in LEASED_TASK_STATES:
            return
        held = self._leases.get(agent_id)
        if held is not None:
            held.discard(task.key)
            if not held:
                del self._leases[agent_id]
        slot = self._matcher.agent(agent_id)
        if slot is not None:
            self._matcher.set_load(slot, len(self._leases.get(agent_id, ())))
            with contextlib.suppress(pykka.ActorDeadError):
                _tell(slot, "release", task.key)
        if task.spec.resources and self._broker is not None:
            self._broker.release_task.defer(lock_owner(task))

    def _finish(
        self, task: Task, state: TaskState, *, result: Any = None, error: str | None = None
    ) -> Task:
        done = evolve(
            task,
            state=state,
            result=result,
            error=error if error is not None else task.error,
            finished_at=self._clock.time(),
            lease_deadline=None,
            retry_at=None,
        )
        self._put(done)
        self._end_lease(task)
        if task.key in self._parked:
            for resource in self._parked.pop(task.key):
                self._parked_by_resource[resource].discard(task.key)
        self._totals[str(state)] += 1
        self._finished.append((done.finished_at or 0.0, task.key))
        event = {
            TaskState.COMPLETED: "task.completed",
            TaskState.DEAD: "task.dead",
            TaskState.CANCELLED: "task.cancelled",
        }[state]
        run_s = None
        if state is TaskState.COMPLETED and task.assigned_at is not None:
            run_s = round(max(0.0, (done.finished_at or 0.0) - task.assigned_at), 6)
        self._events.emit(
            event,
            task_id=task.spec.task_id,
            agent_id=task.agent_id,
            attempts=task.attempts,
            **({"error": error} if error else {}),
            **({"run_s": run_s} if run_s is not None else {}),
        )
        for future in self._watchers.pop(task.key, ()):
            future.set(done)
        return done

    def _fail(self, task: Task, error: str, retryable: bool) -> Task:
        # Counted only once stored: a refused report changes nothing, counters included.
        if not retryable or task.attempts >= task.spec.max_attempts:
            dead = self._finish(task, TaskState.DEAD, error=error)
            self._totals["failed"] += 1
            return dead
        delay_s = retry_delay_s(
            task.attempts,
            self._settings.retry_backoff_initial_s,
            self._settings.retry_backoff_max_s,
        )
        failed = evolve(
            task,
            state=TaskState.FAILED,
            error=error,
            agent_id=None,
            lease_deadline=None,
            fencing_tokens={},
            retry_at=self._clock.monotonic() + delay_s,
        )
        self._put(failed)
        self._totals["failed"] += 1
        self._end_lease(task)
        heapq.heappush(self._retry_heap, (failed.retry_at or 0.0, task.key, task.attempts))
        self._events.emit(
            "task.failed",
            task_id=task.spec.task_id,
            agent_id=task.agent_id,
            attempt=task.attempts,
            error=error,
            retry_in_s=delay_s,
        )
        return failed

    def _lease_lost(self, task: Task, reason: str, *, count_attempt: bool) -> None:
        if count_attempt and task.attempts >= task.spec.max_attempts:
            self._finish(task, TaskState.DEAD, error=reason)
            self._totals["failed"] += 1
            return
        requeued = evolve(
            task,
            state=TaskState.PENDING,
            attempts=task.attempts if count_attempt else task.attempts - 1,
            agent_id=None,
            lease_deadline=None,
            fencing_tokens={},
            error=reason if count_attempt else task.error,
            queued_at=self._clock.monotonic(),
        )
        self._put(requeued)
        self._end_lease(task)
        self._enqueue(requeued)
        self._events.emit(
            "task.requeued", task_id=task.spec.task_id, agent_id=task.agent_id, reason=reason
        )
