"""``TaskTable``: the Scheduler's rules, with no threads, no I/O and no clock of its own.

As Nomad's scheduler returns a plan that the server applies, the table decides and
the ``Scheduler`` actor applies: it stores, emits, tells agents and asks the
LockBroker. The table holds every task, the queue (``Matcher``), the assignment
(lease) table, the parked, retry and lease bookkeeping and the counters; time comes
in as arguments (``now`` monotonic, ``wall`` for timestamps people read).

A change is made in two steps, so that a store failure leaves the task as it was:

1. a *proposal* (``leased``, ``finished``, ``failed``, ``requeued``, ``due``, ...)
   builds the task's successor and changes nothing;
2. the actor stores it; only then ``keep`` makes it the task's state, updates every
   index and returns the ``Plan`` of what follows (events, messages to agents, task
   locks to release), all derived from the transition it checked.

Proposing first costs nothing extra (the successor is built either way) and needs no
undo: a refused write simply never reaches ``keep``. Three modules, one owner:
``task_timing.py`` (the proposals' rules of time, and the deadline heaps),
``task_index.py`` (the state and ``keep``), this one (the decisions per message).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import replace

from orch.actors.matching import AgentSlot
from orch.actors.records import evolve
from orch.actors.task_index import Plan, TaskIndex, lock_owner, requirement_of
from orch.actors.task_timing import ACTOR_GONE, ORPHANED, REFUSED, TIMED_OUT
from orch.errors import Conflict, Forbidden, NotFound, TooManyRequests
from orch.model import (
    LEASED_TASK_STATES,
    Assignment,
    Task,
    TaskId,
    TaskProgress,
    TaskSpec,
    TaskState,
    task_key,
)

PRUNE_INTERVAL_S = 60.0
#: What a submitter at its queue cap is told to wait; the queue drains as agents work.
QUEUE_FULL_RETRY_AFTER_S = 5.0
_PENDING = TaskState.PENDING


class TaskTable(TaskIndex):
    """The Scheduler's decisions; see the module docstring."""

    # ------------------------------------------------------------ recovery

    def load(self, stored: Iterable[Task], now: float, *, initial: bool) -> None:
        """Take in the tasks the store holds (``now``: see ``TaskTiming.recovered``)."""
        for stored_task in stored:
            self.seq = max(self.seq, stored_task.seq)
            task = self.recovered(stored_task, now)
            if task.state in LEASED_TASK_STATES and task.agent_id is not None:
                self._leases[task.agent_id].add(task.key)
                self._recovered[task.agent_id].add(task.key)
                self._deadlines.expire_later(task)
            elif task.state is TaskState.FAILED:
                self._deadlines.retry_later(task)
            self._index(task.key, self.tasks.get(task.key), task)
            if task.state is _PENDING:
                self._enqueue(task)
            elif task.terminal:
                if initial:
                    self.totals[str(task.state)] += 1
                self._finished.append((task.finished_at or 0.0, task.key))
        if initial:
            self.totals["submitted"] = len(self.tasks)

    def rebuild(self, stored: Iterable[Task], now: float) -> Plan:
        """Start again from the store (a write failed after it was kept).

        The plan releases the task locks of leases the store does not hold and hands
        every known agent exactly the assignments it does (``sync_assignments``).
        """
        slots = list(self.matcher.agents())
        before = self.tasks
        self._reset()
        self.load(stored, now, initial=False)
        plan = self.plan
        for task in before.values():
            if task.spec.resources:
                kept = self.tasks.get(task.key)
                if kept is None or kept.seq != task.seq or kept.state not in LEASED_TASK_STATES:
                    plan.releases.append(lock_owner(task))
        for slot in slots:
            fresh = replace(slot, load=len(self._leases.get(slot.agent_id, ())), requirements=[])
            self.matcher.put_agent(fresh)
            held = [
                self.assignment(self.tasks[key], fresh)
                for key in sorted(self._recovered.pop(slot.agent_id, ()))
            ]
            plan.tells.append((slot, "sync_assignments", held))
        plan.events.append(("scheduler.rebuilt", {"tasks": len(self.tasks)}))
        return plan

    def orphans(
        self, live_agents: Iterable[str], now: float, wall: float
    ) -> list[tuple[Task, str]]:
        """Recovered leases whose agent did not come back, proposed back in the queue."""
        live = set(live_agents)
        out = []
        for agent_id in [a for a in self._recovered if a not in live]:
            for key in self._recovered.pop(agent_id):
                task = self.tasks.get(key)
                if task is not None and task.state in LEASED_TASK_STATES:
                    out.append((self.requeued(task, ORPHANED, now, wall, False), ORPHANED))
        return out

    # ---------------------------------------------------------- submission

    def replaced(self, spec: TaskSpec, force: bool) -> Task | None:
        """The active task a submission of ``spec`` replaces (to be cancelled first).

        A task id that is still active is a ``Conflict`` unless ``force``.
        """
        old = self.tasks.get(task_key(spec.task_id))
        if old is None or old.terminal:
            return None
        if not force:
            raise Conflict(
                f"task {spec.task_id!r} is still {old.state}; submit with force to replace it",
                task_status=str(old.state),
            )
        return old

    def new_task(self, spec: TaskSpec, now: float, wall: float) -> Task:
        return Task(spec=spec, seq=self.seq + 1, created_at=wall, queued_at=now)

    def refuse_if_queue_full(self, submitter: str, replacing: Task | None) -> None:
        """``TooManyRequests`` if ``submitter`` already has its cap of tasks queued.

        One flooding client must not grow the queue without bound or bury other
        submitters' work; a forced resubmission replaces its queued original.
        """
        limit = self._settings.max_queued_tasks_per_submitter
        queued = self._pending_by_submitter[submitter]
        if (
            replacing is not None
            and replacing.state is _PENDING
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

    def named_slot(self, agent_id: str, spec: TaskSpec) -> AgentSlot:
        """The agent a submission names, if it can take the task now; else ``Conflict``."""
        slot = self.matcher.agent(agent_id)
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

    # ------------------------------------------------------------- leasing

    def enqueue(self, task: Task) -> None:
        """Put a pending task back in the queue (a dispatch step that could not finish)."""
        self._enqueue(task)

    def park(self, task: Task) -> None:
        """Hold a pending task out of the queue until one of its resources comes free."""
        self._parked[task.key] = task.spec.resources
        for resource in task.spec.resources:
            self._parked_by_resource[resource].add(task.key)

    def resources_freed(self, resources: Iterable[str]) -> None:
        """Queue again the tasks parked on ``resources``."""
        for resource in resources:
            for key in self._parked_by_resource.pop(resource, set()):
                for other in self._parked.pop(key, ()):
                    if other != resource:
                        self._parked_by_resource[other].discard(key)
                task = self.tasks.get(key)
                if task is not None and task.state is _PENDING:
                    self._enqueue(task)

    # ------------------------------------------------------------ outcomes

    def get(self, task_id: TaskId) -> Task:
        """One task; ``NotFound`` if unknown."""
        task = self.tasks.get(task_key(task_id))
        if task is None:
            raise NotFound(f"no task {task_id!r}")
        return task

    def held(self, agent_id: str, task_id: TaskId, attempt: int | None) -> Task:
        """The task ``agent_id`` reports on, if it holds it (that attempt); else ``Conflict``."""
        task = self.get(task_id)
        if task.state not in LEASED_TASK_STATES:
            raise Conflict(
                f"task {task_id!r} is {task.state}, not assigned", task_status=str(task.state)
            )
        if task.agent_id != agent_id:
            raise Conflict(f"task {task_id!r} is not assigned to agent {agent_id!r}")
        if attempt is not None and attempt != task.attempts:
            raise Conflict(f"attempt {attempt} of task {task_id!r} is over; now {task.attempts}")
        return task

    def progressed(
        self, agent_id: str, task_id: TaskId, message: object, percent: object, wall: float
    ) -> Task:
        """The task with ``agent_id``'s progress report, proposed; the agent must hold it.

        Anyone else, including an agent that held an earlier attempt, is ``Forbidden``:
        progress is the holder's word, and a stale report must not overwrite it.
        """
        task = self.get(task_id)
        if task.state not in LEASED_TASK_STATES or task.agent_id != agent_id:
            holder = f"held by {task.agent_id!r}" if task.agent_id else "held by no agent"
            raise Forbidden(
                f"agent {agent_id!r} does not hold task {task_id!r} (it is {task.state}, "
                f"{holder}); only the agent holding a task may report its progress",
                task_status=str(task.state),
            )
        return evolve(task, progress=TaskProgress.build(message, percent, wall))

    def cancellable(self, task_id: TaskId) -> Task:
        """The task to cancel; ``Conflict`` if it has ended."""
        task = self.get(task_id)
        if task.terminal:
            raise Conflict(f"task {task_id!r} already ended {task.state}")
        return task

    # -------------------------------------------------------------- agents

    def agent_ready(self, slot: AgentSlot) -> Plan | None:
        """Offer work to an agent; the plan re-sends the leases it held before a restart.

        None if ``slot`` is older than the agent's view already held.
        """
        current = self.matcher.agent(slot.agent_id)
        if current is not None and current.generation > slot.generation:
            return None
        slot.load = len(self._leases.get(slot.agent_id, ()))
        self.matcher.put_agent(slot)
        plan = self.plan
        for key in sorted(self._recovered.pop(slot.agent_id, ())):
            task = self.tasks.get(key)
            if task is not None and task.state in LEASED_TASK_STATES:
                plan.tells.append((slot, "assign", self.assignment(task, slot)))
        return plan

    def agent_unready(self, agent_id: str, generation: int) -> None:
        slot = self.matcher.agent(agent_id)
        if slot is not None and slot.generation == generation:
            self.matcher.set_ready(slot, False)

    def agent_gone(
        self,
        agent_id: str,
        generation: int,
        how: str,
        error: str | None,
        still_running: frozenset[tuple[str, int]],
        now: float,
        wall: float,
    ) -> list[tuple[Task, str | None]]:
        """Offer the agent nothing more; propose what becomes of each task it held.

        See ``Scheduler.agent_gone`` for ``how`` and ``still_running``. Each proposal
        comes with the reason to keep it with.
        """
        slot = self.matcher.agent(agent_id)
        if slot is not None and slot.generation <= generation:
            self.matcher.remove_agent(agent_id)
        out: list[tuple[Task, str | None]] = []
        for key in list(self._leases.get(agent_id, ())):
            task = self.tasks[key]
            if (key, task.attempts) in still_running:
                continue
            if how == "crashed":
                out.append((self.failed(task, error or "agent crashed", True, now, wall), None))
            else:
                reason = f"agent {agent_id!r} was {'lost' if how == 'lost' else 'stopped'}"
                out.append((self.requeued(task, reason, now, wall, how == "lost"), reason))
        return out

    def undeliverable(
        self, slot: AgentSlot, assignment: Assignment, now: float, wall: float
    ) -> tuple[Task, str] | None:
        """An assignment's agent actor is dead: the task proposed back in the queue.

        Its ``agent_gone`` is still queued behind the current message: the agent is
        offered nothing more meanwhile, or dispatch would hand it the same task forever.
        """
        current = self.matcher.agent(slot.agent_id)
        if current is not None and current.generation == slot.generation:
            self.matcher.remove_agent(slot.agent_id)
        return self._given_back(
            slot.agent_id, assignment.key, assignment.attempt, ACTOR_GONE, now, wall
        )

    def refused(
        self, agent_id: str, key: str, attempt: int, now: float, wall: float
    ) -> tuple[Task, str] | None:
        """The agent could not take a task after all: it proposed back in the queue."""
        return self._given_back(agent_id, key, attempt, REFUSED, now, wall)

    def _given_back(
        self, agent_id: str, key: str, attempt: int, reason: str, now: float, wall: float
    ) -> tuple[Task, str] | None:
        """That lease, if it still is, proposed back in the queue without counting it."""
        task = self.tasks.get(key)
        if (
            task
            and task.agent_id == agent_id
            and task.attempts == attempt
            and task.state in LEASED_TASK_STATES
        ):
            return self.requeued(task, reason, now, wall, count_attempt=False), reason
        return None

    def delivered(self, agent_id: str, delivered: Iterable[tuple[str, int]]) -> list[Task]:
        """Assigned tasks the agent has received, proposed ``running``."""
        out = []
        for key, attempt in delivered:
            task = self.tasks.get(key)
            if (
                task
                and task.state is TaskState.ASSIGNED
                and task.agent_id == agent_id
                and task.attempts == attempt
            ):
                out.append(evolve(task, state=TaskState.RUNNING))
        return out

    # ---------------------------------------------------------------- time

    def due(self, now: float, wall: float) -> tuple[Task, str | None] | None:
        """The next change time calls for by ``now``, with its reason; None if none.

        Due retries go back to the queue first, then overdue leases are lost (their
        attempt counted). Keep each before asking for the next: the same one is
        proposed again until it is kept.
        """
        task = self._deadlines.next_retry(self.tasks, now)
        if task is not None:
            return self.retried(task, now), None
        task = self._deadlines.next_expired(self.tasks, now)
        if task is not None:
            return self.requeued(task, TIMED_OUT, now, wall, count_attempt=True), TIMED_OUT
        return None

    def prune_due(self, now: float) -> bool:
        """Whether to prune now: at most once every ``PRUNE_INTERVAL_S``."""
        if now < self._next_prune:
            return False
        self._next_prune = now + PRUNE_INTERVAL_S
        return True

    def prune(self, wall: float) -> tuple[int, float]:
        """Forget finished tasks past retention: ``(how many, the cutoff)``.

        Cheap: ``_finished`` is in finishing order; the store's rows are the actor's.
        """
        cutoff = wall - self._settings.task_retention_s
        dropped = 0
        while self._finished and self._finished[0][0] < cutoff:
            _, key = self._finished.popleft()
            task = self.tasks.get(key)
            if task is not None and task.terminal and (task.finished_at or 0.0) < cutoff:
                del self.tasks[key]
                self._by_state[task.state] -= 1
                dropped += 1
        return dropped, cutoff
