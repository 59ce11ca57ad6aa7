"""The TaskTable's rules of time: leases, attempts, retry backoff, what is due.

``TaskTiming`` builds a task's successor (a *proposal*: nothing changes until the
table keeps it): leased with a deadline, failed with a backoff, back in the queue
with its attempt counted or not, or dead when no attempt is left. ``Deadlines``
holds the two heaps that say which retry or lease is due next. Like the table, no
clock is read here: ``now`` is monotonic, ``wall`` a timestamp people read.
"""

from __future__ import annotations

import heapq
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from orch.actors.matching import AgentSlot
from orch.actors.records import evolve
from orch.config import Settings
from orch.model import LEASED_TASK_STATES, Task, TaskState, retry_delay_s

#: Reasons a lease ends back in the queue (``task.requeued``'s ``reason``).
TIMED_OUT = "timed out: no result before the task's timeout ran out"
ORPHANED = "its agent did not survive a restart"
ACTOR_GONE = "agent actor is gone"
REFUSED = "agent refused the assignment"
#: The errors a cancelled task ends with: asked for, or replaced by a forced resubmission.
CANCELLED = "cancelled"
REPLACED = "replaced by a forced resubmission"


class TaskTiming:
    """Proposals: each returns the task's successor and changes nothing."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings

    @staticmethod
    def lease_timeout_s(task: Task, slot: AgentSlot) -> float:
        """How long ``slot`` may hold ``task``: its own timeout, else the agent's."""
        return task.spec.timeout_s or slot.task_timeout_s

    def leased(
        self, task: Task, slot: AgentSlot, tokens: Mapping[str, int], now: float, wall: float
    ) -> Task:
        """``task`` leased to ``slot`` holding the task locks ``tokens``; a new attempt.

        In-process agents are handed it as they accept it: ``running`` at once.
        """
        return evolve(
            task,
            state=TaskState.RUNNING if slot.in_process else TaskState.ASSIGNED,
            attempts=task.attempts + 1,
            agent_id=slot.agent_id,
            assigned_at=wall,
            lease_deadline=now + self.lease_timeout_s(task, slot),
            fencing_tokens=tokens,
            retry_at=None,
            progress=None,  # a new attempt has reported nothing yet
        )

    @staticmethod
    def finished(
        task: Task, state: TaskState, wall: float, *, result: Any = None, error: str | None = None
    ) -> Task:
        """``task`` ended ``state`` (completed, dead, cancelled); no error keeps the last."""
        return evolve(
            task,
            state=state,
            result=result,
            error=error if error is not None else task.error,
            finished_at=wall,
            lease_deadline=None,
            retry_at=None,
        )

    def retry_delay_s(self, task: Task) -> float:
        """The backoff after ``task``'s failed attempt (``model.retry_delay_s``)."""
        settings = self._settings
        return retry_delay_s(
            task.attempts, settings.retry_backoff_initial_s, settings.retry_backoff_max_s
        )

    def failed(self, task: Task, error: str, retryable: bool, now: float, wall: float) -> Task:
        """A failed attempt: retried after the backoff while attempts remain, else dead."""
        if not retryable or task.attempts >= task.spec.max_attempts:
            return self.finished(task, TaskState.DEAD, wall, error=error)
        return evolve(
            task,
            state=TaskState.FAILED,
            error=error,
            agent_id=None,
            lease_deadline=None,
            fencing_tokens={},
            retry_at=now + self.retry_delay_s(task),
        )

    def requeued(
        self, task: Task, reason: str, now: float, wall: float, count_attempt: bool
    ) -> Task:
        """A lost lease: back in the queue, or dead if it counts and was the last attempt.

        An attempt that does not count (the agent was stopped, refused, or is gone
        with its actor) is given back, and the task's last error stays.
        """
        if count_attempt and task.attempts >= task.spec.max_attempts:
            return self.finished(task, TaskState.DEAD, wall, error=reason)
        return evolve(
            task,
            state=TaskState.PENDING,
            attempts=task.attempts if count_attempt else task.attempts - 1,
            agent_id=None,
            lease_deadline=None,
            fencing_tokens={},
            error=reason if count_attempt else task.error,
            queued_at=now,
        )

    @staticmethod
    def retried(task: Task, now: float) -> Task:
        """A failed task whose backoff is over, back in the queue."""
        return evolve(task, state=TaskState.PENDING, retry_at=None, queued_at=now)

    def recovered(self, task: Task, now: float) -> Task:
        """A stored task as the table takes it in after a restart or a rebuild.

        Monotonic times do not survive a restart: leases get a fresh timeout, due
        retries are due at once, queue waits restart.
        """
        if task.state in LEASED_TASK_STATES and task.agent_id is not None:
            timeout_s = task.spec.timeout_s or self._settings.task_timeout_s
            return replace(task, lease_deadline=now + timeout_s, queued_at=now)
        if task.state is TaskState.FAILED:
            return replace(task, retry_at=now, queued_at=now)
        return replace(task, queued_at=now)


class Deadlines:
    """Retries and lease expiries in time order, with lazy deletion.

    An entry names the task and the attempt it was made for; when it surfaces it
    counts only if the task is still in that attempt and state, so nothing is ever
    removed from the middle of a heap.
    """

    __slots__ = ("_leases", "_retries")

    def __init__(self) -> None:
        self._retries: list[tuple[float, str, int]] = []
        self._leases: list[tuple[float, str, int]] = []

    def retry_later(self, failed: Task) -> None:
        heapq.heappush(self._retries, (failed.retry_at or 0.0, failed.key, failed.attempts))

    def expire_later(self, leased: Task) -> None:
        heapq.heappush(self._leases, (leased.lease_deadline or 0.0, leased.key, leased.attempts))

    def next_retry(self, tasks: Mapping[str, Task], now: float) -> Task | None:
        """The failed task whose backoff ran out first, if one has by ``now``.

        Its entry stays until the task has moved on (kept ``pending``), so a retry
        whose write failed is due again at the next tick.
        """
        heap = self._retries
        while heap and heap[0][0] <= now:
            _, key, attempts = heap[0]
            task = tasks.get(key)
            if task and task.state is TaskState.FAILED and task.attempts == attempts:
                return task
            heapq.heappop(heap)
        return None

    def next_expired(self, tasks: Mapping[str, Task], now: float) -> Task | None:
        """The leased task whose deadline ran out first, if one has by ``now``."""
        heap = self._leases
        while heap and heap[0][0] <= now:
            _, key, attempts = heap[0]
            task = tasks.get(key)
            if (
                task
                and task.state in LEASED_TASK_STATES
                and task.attempts == attempts
                and task.lease_deadline is not None
                and task.lease_deadline <= now
            ):
                return task
            heapq.heappop(heap)
        return None
