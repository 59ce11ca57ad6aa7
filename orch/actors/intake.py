"""Intake: pulls work from the June TODO MCP service for agents with idle capacity.

Each poll asks, per agent type with free slots, for at most that many tasks; reserves
each one for the agent it will go to, and assigns it to that agent as task
``"todo:<id>"`` with the TODO task's fields as ``payload``. The outcome goes back to
the service: a completion is reported with the result's ``notes``; a task that ends
``dead`` or ``cancelled``, or whose lease is lost (agent lost, stopped, timed out),
is given back (unlocked) so any consumer can take it again; a task retried on
another agent is re-reserved for that agent.

Every reservation is stored before the service is asked and updated after, so a
restart neither forgets a reservation nor makes one twice: reservations whose
outcome is unknown are given back, finished ones are reported. When the service is
down, polls back off exponentially with jitter and one warning is logged per outage;
the rest of the orchestrator does not notice.
"""

from __future__ import annotations

import logging
import random
from collections import defaultdict
from typing import TYPE_CHECKING, Any

import pykka

from orch.actors.directory import Directory
from orch.clock import Clock
from orch.config import Settings
from orch.errors import NotFound, OrchestratorError
from orch.events import Events
from orch.integrations.todo import (
    ReservationRefused,
    TodoClient,
    TodoServiceError,
    TodoUnavailable,
)
from orch.model import AgentState, TaskSpec, TaskState
from orch.store.base import Durable, Store

if TYPE_CHECKING:
    from orch.actors.proxies import SchedulerProxy

logger = logging.getLogger("orch.intake")

TASK_PREFIX = "todo:"
MAX_BACKOFF_S = 60.0

# Reservation states: what must still happen for it (stored with each reservation).
RESERVING = "reserving"  # asked the service; the answer may not have arrived
RESERVED = "reserved"  # ours; the task is with its agent
COMPLETING = "completing"  # done here; the service must hear it
RELEASING = "releasing"  # not ours to keep; the service must get it back


def todo_task_id(task_id: Any) -> str | None:
    """The TODO id inside an orchestrator task id, or None for other tasks."""
    if isinstance(task_id, str) and task_id.startswith(TASK_PREFIX):
        return task_id[len(TASK_PREFIX) :]
    return None


class Intake(pykka.ThreadingActor):
    """The TODO service's consumer; its public methods are its messages."""

    use_daemon_thread = True

    def __init__(
        self,
        client: TodoClient,
        store: Store,
        clock: Clock,
        events: Events,
        directory: Directory,
        settings: Settings,
    ) -> None:
        super().__init__()
        self._client = client
        self._store = store
        self._clock = clock
        self._events = events
        self._directory = directory
        self._settings = settings
        self._scheduler: SchedulerProxy | None = None
        self._reservations: dict[str, dict[str, Any]] = {}
        self._next_poll = 0.0
        self._failures = 0
        self._rng = random.Random()

    # ------------------------------------------------------------- lifecycle

    def on_start(self) -> None:
        self._reservations = self._store.load_reservations()

    def on_stop(self) -> None:
        self._client.close()

    def set_scheduler(self, scheduler: SchedulerProxy) -> None:
        self._scheduler = scheduler

    def recover(self) -> int:
        """Settle reservations left by the last run against the recovered tasks."""
        for todo_id, reservation in list(self._reservations.items()):
            if reservation["state"] == RESERVING:
                self._set(todo_id, state=RELEASING)  # unknown outcome: give it back
            elif reservation["state"] == RESERVED:
                self._settle_from_task(todo_id)
        return len(self._reservations)

    # ------------------------------------------------------------------ time

    def tick(self) -> None:
        """Poll when due, and retry what the service still has to hear."""
        now = self._clock.monotonic()
        if now < self._next_poll:
            return
        try:
            contacted = self._flush_outcomes()
            contacted = self._poll() or contacted
        except TodoUnavailable as exc:
            self._outage(now, exc)
            return
        if self._failures and contacted:
            logger.info("TODO service reachable again after %d failed polls", self._failures)
            self._failures = 0
        self._next_poll = now + self._settings.todo_poll_s

    def _outage(self, now: float, exc: Exception) -> None:
        self._failures += 1
        self._events.signal("intake.error")
        if self._failures == 1:
            logger.warning("TODO service unavailable, backing off: %s", exc)
        backoff_s = min(MAX_BACKOFF_S, self._settings.todo_poll_s * 2 ** (self._failures - 1))
        self._next_poll = now + backoff_s * self._rng.uniform(0.5, 1.0)

    # ----------------------------------------------------------- task events

    def task_event(self, event_type: str, task_id: str, agent_id: str | None) -> None:
        """A ``todo:`` task moved in the Scheduler (told by the event listener)."""
        todo_id = todo_task_id(task_id)
        reservation = self._reservations.get(todo_id or "")
        if todo_id is None or reservation is None or reservation["state"] != RESERVED:
            return
        if event_type in ("task.completed", "task.dead", "task.cancelled"):
            self._settle_from_task(todo_id)
        elif event_type == "task.requeued":
            # Its agent is gone and the reservation names it: give the task back.
            self._cancel(task_id, "its agent lost the task; given back to the TODO service")
        elif event_type == "task.assigned" and agent_id and agent_id != reservation["agent_id"]:
            self._move(todo_id, agent_id)
        self._try_flush()

    # ----------------------------------------------------------- observation

    def status(self) -> dict[str, Any]:
        by_state: defaultdict[str, int] = defaultdict(int)
        for reservation in self._reservations.values():
            by_state[reservation["state"]] += 1
        return {
            "url": self._client.base_url,
            "reservations": dict(by_state),
            "failed_polls": self._failures,
        }

    # ------------------------------------------------------------- internals

    def _poll(self) -> bool:
        """Ask for work for every agent type with free slots; True if the service was asked."""
        capacity: defaultdict[str, dict[str, int]] = defaultdict(dict)
        for entry in self._directory.entries():
            record = entry.record
            if entry.actor is None or record.state not in (AgentState.IDLE, AgentState.BUSY):
                continue
            if record.free_slots > 0:
                capacity[record.agent_type][record.agent_id] = record.free_slots
        if not capacity:
            return False
        self._events.signal("intake.polled")
        for agent_type, free in sorted(capacity.items()):
            tasks = self._client.list_available_tasks(agent_type, sum(free.values()))
            for todo_task in tasks:
                agent_id = max(free, key=lambda a: (free[a], a), default=None)
                if agent_id is None or free[agent_id] <= 0:
                    break
                if self._take(todo_task, agent_type, agent_id):
                    free[agent_id] -= 1
        return True

    def _take(self, todo_task: dict[str, Any], agent_type: str, agent_id: str) -> bool:
        raw_id = todo_task["id"]
        todo_id = str(raw_id)
        if todo_id in self._reservations:
            return False  # already ours: never reserve twice
        task_id = TASK_PREFIX + todo_id
        try:
            spec = TaskSpec.build(
                task_id=task_id, payload=dict(todo_task), agent_type=agent_type, max_attempts=3
            )
        except OrchestratorError as exc:
            logger.warning("TODO task %r cannot be run here: %s", raw_id, exc)
            return False
        self._store.put_reservation(
            todo_id,
            {"state": RESERVING, "raw_id": raw_id, "agent_id": agent_id, "task_id": task_id},
        )
        self._reservations[todo_id] = {
            "state": RESERVING,
            "raw_id": raw_id,
            "agent_id": agent_id,
            "task_id": task_id,
        }
        try:
            reserved = self._client.reserve_task(raw_id, agent_id)
        except ReservationRefused as exc:
            logger.debug("TODO task %s went to another consumer: %s", todo_id, exc)
            self._forget(todo_id)
            return False
        except TodoUnavailable:
            self._set(todo_id, state=RELEASING)
            raise
        except TodoServiceError as exc:
            logger.warning("reserving TODO task %s failed: %s", todo_id, exc)
            self._set(todo_id, state=RELEASING)
            return False
        if reserved:
            spec = TaskSpec.build(
                task_id=task_id,
                payload={**todo_task, **reserved},
                agent_type=agent_type,
                max_attempts=3,
            )
        self._set(todo_id, state=RESERVED)
        try:
            answer = self._scheduler.submit(spec, agent_id, False).get(
                timeout=self._settings.ask_timeout_s
            )
            if isinstance(answer, Durable):
                answer.result()
        except (OrchestratorError, pykka.Timeout) as exc:
            logger.info("TODO task %s could not be assigned to %s: %s", todo_id, agent_id, exc)
            self._set(todo_id, state=RELEASING)
            return False
        self._events.emit("intake.reserved", task_id=task_id, agent_id=agent_id)
        return True

    def _settle_from_task(self, todo_id: str) -> None:
        task_id = self._reservations[todo_id]["task_id"]
        try:
            task = self._scheduler.get(task_id).get(timeout=self._settings.ask_timeout_s)
        except NotFound:
            self._set(todo_id, state=RELEASING)
            return
        if task.state is TaskState.COMPLETED:
            notes = task.result.get("notes") if isinstance(task.result, dict) else None
            if notes is None and task.result is not None:
                notes = str(task.result)
            self._set(todo_id, state=COMPLETING, agent_id=task.agent_id or "", notes=notes)
        elif task.terminal:
            self._set(todo_id, state=RELEASING)

    def _cancel(self, task_id: str, reason: str) -> None:
        try:
            answer = self._scheduler.cancel(task_id).get(timeout=self._settings.ask_timeout_s)
            if isinstance(answer, Durable):
                answer.result()
        except OrchestratorError as exc:
            logger.info("could not cancel %s (%s): %s", task_id, reason, exc)
            return
        logger.info("%s: %s", task_id, reason)

    def _move(self, todo_id: str, agent_id: str) -> None:
        """The task was retried on another agent: the reservation follows it."""
        reservation = self._reservations[todo_id]
        try:
            self._client.unlock_task(reservation["raw_id"], reservation["agent_id"])
            self._client.reserve_task(reservation["raw_id"], agent_id)
        except TodoServiceError as exc:
            logger.info("TODO task %s could not follow to %s: %s", todo_id, agent_id, exc)
            self._cancel(reservation["task_id"], "its reservation could not move")
            return
        self._set(todo_id, agent_id=agent_id)

    def _try_flush(self) -> None:
        try:
            self._flush_outcomes()
        except TodoUnavailable as exc:
            self._outage(self._clock.monotonic(), exc)

    def _flush_outcomes(self) -> bool:
        """Tell the service what it has still to hear; stop at the first outage.

        Returns True if the service was contacted.
        """
        contacted = False
        for todo_id, reservation in list(self._reservations.items()):
            state = reservation["state"]
            try:
                if state == COMPLETING:
                    self._client.complete_task(
                        reservation["raw_id"], reservation["agent_id"], reservation.get("notes")
                    )
                    self._events.emit("intake.completed", task_id=reservation["task_id"])
                elif state == RELEASING:
                    self._client.unlock_task(reservation["raw_id"], reservation["agent_id"])
                    self._events.emit("intake.released", task_id=reservation["task_id"])
                else:
                    continue
                contacted = True
            except TodoUnavailable:
                raise
            except TodoServiceError as exc:
                # The service will not take it (already unlocked, completed elsewhere):
                # nothing more we can do for this one.
                logger.warning("TODO service refused %s of %s: %s", state, todo_id, exc)
                contacted = True
            self._forget(todo_id)
        return contacted

    def _set(self, todo_id: str, **changes: Any) -> None:
        updated = {**self._reservations[todo_id], **changes}
        self._store.put_reservation(todo_id, updated)
        self._reservations[todo_id] = updated

    def _forget(self, todo_id: str) -> None:
        self._store.delete_reservation(todo_id)
        self._reservations.pop(todo_id, None)
