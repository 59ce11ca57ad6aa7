"""``TaskIndex``: the TaskTable's state, and what keeping a change means.

Everything the Scheduler knows of its tasks is here: the tasks, the queue
(``Matcher``), the leases per agent, parked tasks, retry and lease deadlines,
counters. ``keep`` is the one place a task changes: it checks the transition
(``check_task_transition``), updates every index and fills the ``Plan`` with what
follows from it. The decisions that lead to a change are ``TaskTable``'s
(``orch/actors/task_table.py``).
"""

from __future__ import annotations

import collections
from collections import Counter, defaultdict
from typing import Any

from orch.actors.matching import AgentSlot, Matcher, Requirement
from orch.actors.task_timing import TIMED_OUT, Deadlines, TaskTiming
from orch.config import Settings
from orch.errors import Conflict
from orch.model import (
    LEASED_TASK_STATES,
    Assignment,
    Task,
    TaskProgress,
    TaskSpec,
    TaskState,
    check_task_transition,
)

_PENDING = TaskState.PENDING
#: ``TaskIndex.admit``'s answer: (the record now kept under the key, the record the
#: proposal changes or None for a submission, its state, the agent of a new lease).
Admitted = tuple["Task | None", "Task | None", "TaskState | None", "AgentSlot | None"]
_FAILED = TaskState.FAILED
_COMPLETED = TaskState.COMPLETED
_DEAD = TaskState.DEAD
_END_EVENTS = {
    TaskState.COMPLETED: "task.completed",
    TaskState.DEAD: "task.dead",
    TaskState.CANCELLED: "task.cancelled",
}


def _is_progress_note(old: Task | None, task: Task) -> bool:
    """A leased task whose only news is a progress report: a change, not a transition."""
    return (
        old is not None
        and old.state is task.state
        and task.state in LEASED_TASK_STATES
        and task.progress is not old.progress
    )


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


class Plan:
    """What the actor does after a change; the table fills it, the actor empties it.

    One object, reused: the hot paths (submit, assign, complete) add a tuple or two
    to a list instead of building a result per change.
    """

    __slots__ = ("events", "releases", "tells")

    def __init__(self) -> None:
        self.events: list[tuple[str, dict[str, Any]]] = []  # (type, data) to emit
        self.tells: list[tuple[AgentSlot, str, Any]] = []  # (agent, message, argument)
        self.releases: list[str] = []  # lock owners whose task locks to release


class TaskIndex(TaskTiming):
    """Tasks and their indexes; ``keep`` changes them. See the module docstring."""

    def __init__(self, settings: Settings) -> None:
        super().__init__(settings)
        self.plan = Plan()
        self.seq = 0  # the last submission number given
        self.totals: Counter[str] = Counter()
        self._next_prune = 0.0
        self._reset()

    def _reset(self) -> None:
        """Forget the tasks and every index of them; ``seq`` and ``totals`` live on."""
        self.tasks: dict[str, Task] = {}
        self.matcher = Matcher(self._is_queued)
        self._leases: defaultdict[str, set[str]] = defaultdict(set)  # agent id -> task keys
        self._parked: dict[str, tuple[str, ...]] = {}  # task key -> resources it waits for
        self._parked_by_resource: defaultdict[str, set[str]] = defaultdict(set)
        self._by_state: Counter[TaskState] = Counter()
        self._pending_by_priority: Counter[int] = Counter()
        self._pending_by_submitter: Counter[str] = Counter()
        # Leases rebuilt from the store whose agent has not yet been told of them.
        self._recovered: defaultdict[str, set[str]] = defaultdict(set)
        self._finished: collections.deque[tuple[float, str]] = collections.deque()
        self._deadlines = Deadlines()
        # Leased task key -> (when its last task.progress event went out, reports since).
        self._progress_events: dict[str, tuple[float, int]] = {}
        # Keys whose latest report is not in the feed yet (``held_progress_events``).
        self._progress_held: set[str] = set()

    @staticmethod
    def assignment(leased: Task, slot: AgentSlot) -> Assignment:
        """What the agent holding ``leased`` is handed."""
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

    # ---------------------------------------------------------------- keep

    def admit(self, task: Task) -> Admitted:
        """Check that ``task`` may become current, changing nothing.

        An illegal transition is a bug in the proposal; a record with a new ``seq``
        is a submission, and the one it replaces must have ended; a new lease needs
        its agent still here. The actor calls this *before* storing the proposal, so
        a refusal leaves store and memory as they were, and hands the answer to
        ``keep``.
        """
        stored = self.tasks.get(task.key)
        if stored is not None and stored.seq == task.seq:
            old: Task | None = stored
            prior: TaskState | None = stored.state
        else:
            if stored is not None and not stored.terminal:
                raise Conflict(f"task {task.spec.task_id!r} is still {stored.state}")
            old = prior = None
        if not _is_progress_note(old, task):
            check_task_transition(task.spec.task_id, prior, task.state)
        slot = None
        if task.state in LEASED_TASK_STATES and prior not in LEASED_TASK_STATES:
            slot = self.matcher.agent(task.agent_id or "")
            if slot is None:
                raise Conflict(f"agent {task.agent_id!r} left before the lease was kept")
        return stored, old, prior, slot

    def keep(
        self, task: Task, now: float, reason: str | None = None, admitted: Admitted | None = None
    ) -> Plan:
        """Make ``task`` (a stored proposal) current; the plan says what follows.

        ``reason`` is why a lease ended back in the queue (``requeued``'s reason).
        ``admitted`` is ``admit``'s answer for this very task, taken before it was
        stored; without it ``keep`` admits the task itself (and raises, changing
        nothing, where ``admit`` would).
        """
        key = task.key
        stored, old, prior, slot = admitted if admitted is not None else self.admit(task)
        state = task.state
        leasing = slot is not None
        self._index(key, stored, task)
        plan = self.plan
        if old is None:
            if task.seq > self.seq:
                self.seq = task.seq
            self.totals["submitted"] += 1
            plan.events.append(
                ("task.queued", {"task_id": task.spec.task_id, "priority": task.spec.priority})
            )
        elif prior in LEASED_TASK_STATES:
            if state in LEASED_TASK_STATES:
                if task.progress is not None and task.progress is not old.progress:
                    self._progress_event(task, task.progress, now)
                return plan  # delivered (assigned -> running), or a progress note
            self._end_lease(key, old)
        if leasing:
            self._start_lease(key, task, slot, now)
        elif state is _PENDING:
            self._enqueue(task)
            if prior is _FAILED:
                self.totals["retried"] += 1
                plan.events.append(
                    ("task.retried", {"task_id": task.spec.task_id, "attempt": task.attempts + 1})
                )
            elif old is not None:
                if reason == TIMED_OUT:
                    self.totals["timed_out"] += 1
                plan.events.append(
                    (
                        "task.requeued",
                        {"task_id": task.spec.task_id, "agent_id": old.agent_id, "reason": reason},
                    )
                )
        elif state is _FAILED:
            self.totals["failed"] += 1
            self._deadlines.retry_later(task)
            plan.events.append(
                (
                    "task.failed",
                    {
                        "task_id": task.spec.task_id,
                        "agent_id": old.agent_id if old else None,
                        "attempt": task.attempts,
                        "error": task.error,
                        "retry_in_s": self.retry_delay_s(task),
                    },
                )
            )
        else:
            self._end(key, task, reason)
        return plan

    def _progress_event(self, task: Task, progress: TaskProgress, now: float) -> None:
        """``task.progress``, at most once per ``progress_event_interval_s`` per task.

        Every report is stored with the task; only the events are thinned, so an agent
        that reports in a tight loop cannot push everything else out of the event ring.
        The next event says how many reports it stands for.
        """
        key = task.key
        last_at, skipped = self._progress_events.get(key, (None, 0))
        if last_at is not None and now - last_at < self._settings.progress_event_interval_s:
            self._progress_events[key] = (last_at, skipped + 1)
            self._progress_held.add(key)
            return
        self.plan.events.append(("task.progress", self._sent_progress(key, task, progress, now)))

    def held_progress_events(self, now: float) -> list[tuple[str, dict[str, Any]]]:
        """The ``task.progress`` events held back whose interval has run out.

        Without these the last report of a burst would never reach the feed (only a
        later report would send it), and a reader of the feed would be left with a
        stale message. The Scheduler's tick asks; an empty set costs one check.
        """
        if not self._progress_held:
            return []
        interval_s = self._settings.progress_event_interval_s
        due: list[tuple[str, dict[str, Any]]] = []
        for key in list(self._progress_held):
            last_at, _ = self._progress_events[key]
            if now - last_at < interval_s:
                continue
            task = self.tasks[key]
            assert task.progress is not None  # held only after a report was kept
            last_at, skipped = self._progress_events[key]
            self._progress_events[key] = (last_at, skipped - 1)  # this one is sent now
            due.append(("task.progress", self._sent_progress(key, task, task.progress, now)))
        return due

    def _sent_progress(
        self, key: str, task: Task, progress: TaskProgress, now: float
    ) -> dict[str, Any]:
        """The event's data for ``progress``, noted as sent at ``now``."""
        _, skipped = self._progress_events.get(key, (None, 0))
        self._progress_events[key] = (now, 0)
        self._progress_held.discard(key)
        data: dict[str, Any] = {
            "task_id": task.spec.task_id,
            "agent_id": task.agent_id,
            "attempt": task.attempts,
            "message": progress.message,
            "percent": progress.percent,
        }
        if skipped:
            data["reports_not_sent"] = skipped
        return data

    def _index(self, key: str, old: Task | None, task: Task) -> None:
        """Keep ``task`` in place of ``old`` (its record, or the one it replaces), counted."""
        if old is not None:
            self._by_state[old.state] -= 1
            if old.state is _PENDING:
                self._pending_by_priority[old.spec.priority] -= 1
                submitter = old.spec.submitter
                if submitter is not None:
                    self._pending_by_submitter[submitter] -= 1
                    if not self._pending_by_submitter[submitter]:
                        del self._pending_by_submitter[submitter]
        self._by_state[task.state] += 1
        if task.state is _PENDING:
            self._pending_by_priority[task.spec.priority] += 1
            if task.spec.submitter is not None:
                self._pending_by_submitter[task.spec.submitter] += 1
        self.tasks[key] = task

    def _start_lease(self, key: str, leased: Task, slot: AgentSlot, now: float) -> None:
        agent_id = slot.agent_id
        held = self._leases[agent_id]
        held.add(key)
        self.matcher.set_load(slot, len(held), assigned=True)
        self._deadlines.expire_later(leased)
        self.totals["assigned"] += 1
        self.plan.events.append(
            (
                "task.assigned",
                {
                    "task_id": leased.spec.task_id,
                    "agent_id": agent_id,
                    "attempt": leased.attempts,
                    "queue_wait_s": round(now - leased.queued_at, 6),
                },
            )
        )
        self.plan.tells.append((slot, "assign", self.assignment(leased, slot)))

    def _end_lease(self, key: str, task: Task) -> None:
        """Undo what holding ``task`` gave its agent: slot, locks, the agent's copy."""
        self._progress_events.pop(key, None)
        self._progress_held.discard(key)
        agent_id = task.agent_id
        if agent_id is None:
            return
        held = self._leases.get(agent_id)
        if held is not None:
            held.discard(key)
            if not held:
                del self._leases[agent_id]
        slot = self.matcher.agent(agent_id)
        if slot is not None:
            self.matcher.set_load(slot, len(self._leases.get(agent_id, ())))
            self.plan.tells.append((slot, "release", key))
        if task.spec.resources:
            self.plan.releases.append(lock_owner(task))

    def _end(self, key: str, done: Task, reason: str | None) -> None:
        if key in self._parked:
            for resource in self._parked.pop(key):
                self._parked_by_resource[resource].discard(key)
        state = done.state
        self.totals[str(state)] += 1
        if state is _DEAD:
            self.totals["failed"] += 1
            if reason == TIMED_OUT:
                self.totals["timed_out"] += 1
        self._finished.append((done.finished_at or 0.0, key))
        data: dict[str, Any] = {
            "task_id": done.spec.task_id,
            "agent_id": done.agent_id,
            "attempts": done.attempts,
        }
        if state is _COMPLETED:
            if done.assigned_at is not None:
                data["run_s"] = round(max(0.0, (done.finished_at or 0.0) - done.assigned_at), 6)
        elif done.error:
            data["error"] = done.error
        self.plan.events.append((_END_EVENTS[state], data))

    def _is_queued(self, key: str, seq: int) -> bool:
        task = self.tasks.get(key)
        return (
            task is not None
            and task.state is _PENDING
            and task.seq == seq
            and key not in self._parked
        )

    def _enqueue(self, task: Task) -> None:
        self.matcher.push_task(task.key, task.seq, task.spec.priority, requirement_of(task.spec))

    # ------------------------------------------------------------- reading

    def list_tasks(self, state: TaskState | None, agent_id: str | None, limit: int) -> list[Task]:
        out = []
        for task in self.tasks.values():
            if state is not None and task.state is not state:
                continue
            if agent_id is not None and task.agent_id != agent_id:
                continue
            out.append(task)
        out.sort(key=lambda t: t.seq)
        return out[-limit:] if limit else out

    def pending(self, limit: int) -> list[Task]:
        pending = [t for t in self.tasks.values() if t.state is _PENDING]
        pending.sort(key=lambda t: (-t.spec.priority, t.seq))
        return pending[:limit]

    def tasks_of(self, agent_id: str) -> list[Task]:
        return [self.tasks[k] for k in sorted(self._leases.get(agent_id, ()))]

    def stats(self) -> dict[str, Any]:
        """Counts for /stats and /health; O(1) in the number of tasks."""
        totals = self.totals
        return {
            "tasks_by_state": {str(s): self._by_state[s] for s in TaskState},
            "pending_by_priority": {
                str(p): n for p, n in sorted(self._pending_by_priority.items(), reverse=True) if n
            },
            "parked_tasks": len(self._parked),
            "total_tasks_submitted": totals["submitted"],
            "total_tasks_assigned": totals["assigned"],
            "total_tasks_completed": totals["completed"],
            "total_tasks_failed": totals["failed"],
            "total_tasks_retried": totals["retried"],
            "total_tasks_dead": totals["dead"],
            "total_tasks_cancelled": totals["cancelled"],
            "total_tasks_timed_out": totals["timed_out"],
        }
