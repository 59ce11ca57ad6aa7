"""``TasksController``: submitting tasks, the outcomes agents report, and task reads.

Every change is one Scheduler message, run through the Scheduler's gate when it is
idle (no thread hand-off on submit and complete). A task that has ended is answered
from the Scheduler's published ``TaskView`` without an ask.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable, Mapping
from typing import Any, Protocol

import pykka

from orch.controllers.base import Actors
from orch.errors import Invalid, TaskCancelled, TaskFailed, Timeout
from orch.model import (
    Task,
    TaskId,
    TaskSpec,
    TaskState,
    task_key,
    validate_id,
    validate_int,
    validate_task_id,
)
from orch.store.base import PendingWrite
from orch.validation import MAX_PAYLOAD_BYTES, json_copy, parse_enum, validate_bool

#: The longest error message kept of a failure report.
MAX_ERROR_CHARS = 4096


class _TaskReads(Protocol):
    def task(self, task_id: TaskId) -> dict[str, Any]: ...

    def wait_for_task(self, task_id: TaskId, timeout: float | None = None) -> Task: ...


class TaskHandle:
    """A submitted task: its id, its current status and, eventually, its result."""

    def __init__(self, tasks: _TaskReads, task_id: TaskId) -> None:
        # ``tasks`` is the TasksController, or anything with its reads (an Orchestrator).
        self._tasks = tasks
        self.task_id = task_id

    @property
    def status(self) -> str:
        """The task's state now (``pending``, ``assigned``, ... ``completed``)."""
        return self._tasks.task(self.task_id)["status"]

    def result(self, timeout: float | None = None) -> Any:
        """Wait for the task to end and return its result.

        Raises ``TaskFailed`` if it ended ``dead``, ``TaskCancelled`` if cancelled,
        ``orch.errors.Timeout`` if it has not ended within ``timeout`` seconds.
        """
        task = self._tasks.wait_for_task(self.task_id, timeout)
        if task.state is TaskState.COMPLETED:
            return task.result
        if task.state is TaskState.CANCELLED:
            raise TaskCancelled(f"task {self.task_id!r} was cancelled", task_id=self.task_id)
        raise TaskFailed(
            f"task {self.task_id!r} failed after {task.attempts} attempt(s): {task.error}",
            task_id=self.task_id,
            error=task.error,
        )

    def __repr__(self) -> str:
        return f"TaskHandle({self.task_id!r})"


class TasksController:
    """The tasks' side of the embedded API (``Orchestrator.submit`` and kin)."""

    def __init__(self, actors: Actors) -> None:
        self._actors = actors
        self._calls = actors.calls

    def submit(
        self,
        payload: Mapping[str, Any] | None = None,
        *,
        task_id: TaskId | None = None,
        priority: int = 0,
        capabilities: Iterable[str] = (),
        agent_type: str | None = None,
        resources: Iterable[str] = (),
        max_attempts: int = 3,
        timeout_s: float | None = None,
        force: bool = False,
    ) -> TaskHandle:
        """Queue a task for the best eligible agent; returns a ``TaskHandle``."""
        task = self._submit(
            payload,
            task_id=task_id,
            priority=priority,
            capabilities=capabilities,
            agent_type=agent_type,
            resources=resources,
            max_attempts=max_attempts,
            timeout_s=timeout_s,
            force=force,
            agent_id=None,
        )
        return TaskHandle(self, task.spec.task_id)

    def assign_task(
        self,
        payload: Mapping[str, Any] | None = None,
        *,
        task_id: TaskId | None = None,
        agent_id: str | None = None,
        priority: int = 0,
        agent_type: str | None = None,
        capabilities: Iterable[str] = (),
        resources: Iterable[str] = (),
        max_attempts: int = 3,
        timeout_s: float | None = None,
        force: bool = False,
        submitter: str | None = None,
        answer_writes: list[PendingWrite] | None = None,
    ) -> dict[str, Any]:
        """Assign to a named agent, or queue: ``{task_id, status, agent_id}``.

        ``status`` is ``assigned`` when an agent holds it now, else ``queued``. A
        ``submitter`` (the REST API passes the client's address) may have at most
        ``max_queued_tasks_per_submitter`` tasks queued; beyond, ``TooManyRequests``.

        ``answer_writes``: only for a transport that holds the answer itself until it
        is stored (``Calls.settle``); left out, the answer is stored when it returns.
        """
        if agent_id is not None:
            self._actors.entry(agent_id)
        task = self._submit(
            payload,
            task_id=task_id,
            priority=priority,
            capabilities=capabilities,
            agent_type=agent_type,
            resources=resources,
            max_attempts=max_attempts,
            timeout_s=timeout_s,
            force=force,
            agent_id=agent_id,
            submitter=submitter,
            answer_writes=answer_writes,
        )
        status = "assigned" if task.state in (TaskState.ASSIGNED, TaskState.RUNNING) else "queued"
        return {"task_id": task.spec.task_id, "status": status, "agent_id": task.agent_id}

    def _submit(
        self,
        payload: Any,
        *,
        agent_id: str | None,
        force: bool,
        answer_writes: list[PendingWrite] | None = None,
        **fields: Any,
    ) -> Task:
        validate_bool("force", force)
        if fields["task_id"] is None:
            fields["task_id"] = f"task-{secrets.token_hex(8)}"
        if payload is not None and not isinstance(payload, Mapping):
            raise Invalid("payload", "must be an object (a dict)")
        spec = TaskSpec.build(
            payload=json_copy("payload", dict(payload or {}), MAX_PAYLOAD_BYTES), **fields
        )
        return self._actors.scheduler_call(
            "submit", spec, agent_id, force, answer_writes=answer_writes
        )

    def wait_for_task(self, task_id: TaskId, timeout: float | None = None) -> Task:
        """Block until the task ends; ``Timeout`` if it does not within ``timeout``."""
        task_id = validate_task_id(task_id)
        self._actors.check_running()
        ended = self._actors.task_view.get(task_key(task_id))
        if ended is not None and ended.terminal:
            return ended  # no ask needed to learn that (``TaskView``)
        future: pykka.ThreadingFuture[Task] = pykka.ThreadingFuture()
        self._calls.ask(self._actors.scheduler.watch(task_id, future))
        try:
            return future.get(timeout=timeout)
        except pykka.Timeout:
            raise Timeout(f"task {task_id!r} has not ended after {timeout}s") from None

    def complete_task(
        self,
        agent_id: str,
        task_id: TaskId,
        result: Any = None,
        *,
        answer_writes: list[PendingWrite] | None = None,
    ) -> dict[str, Any]:
        """The agent holding the task reports success: ``{task_id, status: "completed"}``.

        ``answer_writes``: only for a transport that holds the answer itself until it
        is stored (``Calls.settle``); left out, the answer is stored when it returns.
        """
        validate_id("agent_id", agent_id)
        task_id = validate_task_id(task_id)
        result = json_copy("result", result, MAX_PAYLOAD_BYTES)
        task: Task = self._actors.scheduler_call(
            "complete", agent_id, task_id, result, answer_writes=answer_writes
        )
        return {"task_id": task.spec.task_id, "status": str(task.state)}

    def fail_task(
        self,
        agent_id: str,
        task_id: TaskId,
        error: str,
        retryable: bool = True,
        *,
        answer_writes: list[PendingWrite] | None = None,
    ) -> dict[str, Any]:
        """The agent holding the task reports failure; retried by policy unless not retryable.

        ``answer_writes``: only for a transport that holds the answer itself until it
        is stored (``Calls.settle``); left out, the answer is stored when it returns.
        """
        validate_id("agent_id", agent_id)
        task_id = validate_task_id(task_id)
        if not isinstance(error, str) or not error:
            raise Invalid("error", "must be a non-empty string")
        validate_bool("retryable", retryable)
        task: Task = self._actors.scheduler_call(
            "fail",
            agent_id,
            task_id,
            error[:MAX_ERROR_CHARS],
            retryable,
            answer_writes=answer_writes,
        )
        return {"task_id": task.spec.task_id, "status": str(task.state), "attempts": task.attempts}

    def report_progress(
        self, agent_id: str, task_id: TaskId, message: str, percent: float | None = None
    ) -> dict[str, Any]:
        """The agent holding the task says how far it is: ``{task_id, status, progress}``.

        ``message`` is at most 1 KiB of UTF-8, ``percent`` (optional) 0-100. The latest
        report is kept with the task (``task(...)["progress"]``); ``task.progress``
        events are thinned per task (``ORCH_PROGRESS_EVENT_INTERVAL_S``). An agent that
        does not hold the task is ``Forbidden``.
        """
        validate_id("agent_id", agent_id)
        task_id = validate_task_id(task_id)
        task: Task = self._actors.scheduler_call(
            "report_progress", agent_id, task_id, message, percent
        )
        progress = task.progress.to_dict() if task.progress is not None else None
        return {"task_id": task.spec.task_id, "status": str(task.state), "progress": progress}

    def cancel_task(self, task_id: TaskId) -> dict[str, Any]:
        """Cancel a task that has not ended."""
        task: Task = self._actors.scheduler_call("cancel", validate_task_id(task_id))
        return {"task_id": task.spec.task_id, "status": str(task.state)}

    def task(self, task_id: TaskId) -> dict[str, Any]:
        """One task as plain data."""
        return self._actors.scheduler_call("get", validate_task_id(task_id)).to_dict()

    def tasks(
        self, *, state: str | None = None, agent_id: str | None = None, limit: int = 100
    ) -> list[dict[str, Any]]:
        """Tasks, oldest first, optionally filtered by state or agent."""
        wanted = None if state is None else parse_enum(TaskState, "state", state)
        if agent_id is not None:
            validate_id("agent_id", agent_id)
        limit = validate_int("limit", limit, 1, 100_000)
        found = self._calls.ask(self._actors.scheduler.list_tasks(wanted, agent_id, limit))
        return [t.to_dict() for t in found]

    def pending_tasks(self, limit: int = 100) -> dict[str, Any]:
        """``{pending_tasks, count}`` in the order they would be assigned."""
        limit = validate_int("limit", limit, 1, 100_000)
        found = self._calls.ask(self._actors.scheduler.pending(limit))
        return {"pending_tasks": [t.to_dict() for t in found], "count": len(found)}
