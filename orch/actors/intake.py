"""Intake: pulls work from the June TODO MCP service for agents with idle capacity.

Each poll asks, per agent type with free slots, for at most that many tasks; reserves
each one for the agent it will go to, and assigns it to that agent as task
``"todo:<id>"`` with the TODO task's fields as ``payload``. The outcome goes back to
the service: a completion is reported with the result's ``notes`` (or the result as
JSON); a task that ends ``dead`` is marked ``blocked`` with its last error (or, with
``ORCH_TODO_DEAD_TASKS=cooldown``, held for a cool-down that doubles with each death
and then given back), so it never comes straight back; one that is ``cancelled``, or
whose lease is lost (agent lost, stopped, timed out), is given back (unlocked) so any
consumer can take it again; a task retried on another agent is re-reserved for it.

Every reservation is stored before the service is asked and updated after, so a
restart neither forgets a reservation nor makes one twice: reservations whose
outcome is unknown are given back, finished ones are reported.

Outcomes are delivered one task at a time, each with its own retries and backoff, and
never in the way of polling: one task the service keeps refusing (the real service
answers an unlock of an id it no longer has with a 500) is retried a bounded number
of times (``ORCH_TODO_OUTCOME_MAX_FAILURES``) and then given up with a warning; while
the service is unreachable nothing is given up. When polls fail they back off
exponentially with jitter and one warning is logged per outage; the rest of the
orchestrator does not notice. What it holds and how it is doing is published to an
``IntakeView`` that ``/stats`` and ``/health`` read without asking.
"""

from __future__ import annotations

import json
import logging
import random
from collections import defaultdict, deque
from typing import TYPE_CHECKING, Any

import pykka

from orch.actors.directory import Directory
from orch.actors.intake_view import IntakeSnapshot, IntakeView
from orch.clock import Clock
from orch.config import OFF_SWITCHES, Settings
from orch.errors import NotFound, OrchestratorError
from orch.events import Events
from orch.integrations.todo import (
    ReservationRefused,
    TodoClient,
    TodoRequestFailed,
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
BLOCKING = "blocking"  # dead here; the service must mark it blocked
COOLING = "cooling"  # dead here; held until ``cool_until`` (wall clock), then released
RETURNED = "returned"  # given back after dying: kept only to grow its next cool-down
#: States in which something must still be told to the service.
OUTCOMES = {COMPLETING: "complete", RELEASING: "unlock", BLOCKING: "block"}
#: Abandoned outcomes kept for ``/stats``.
ABANDONED_KEPT = 20


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
        view: IntakeView | None = None,
    ) -> None:
        super().__init__()
        self._client = client
        self._store = store
        self._clock = clock
        self._events = events
        self._directory = directory
        self._settings = settings
        self._view = view or IntakeView(client.base_url, clock, settings.todo_poll_s)
        self._scheduler: SchedulerProxy | None = None
        self._reservations: dict[str, dict[str, Any]] = {}
        # The same ids by state, in the order they got there (dicts as ordered sets):
        # a tick looks only at the states it acts on, not at every reservation.
        self._by_state: defaultdict[str, dict[str, None]] = defaultdict(dict)
        self._dirty = True  # something changed since the view was last published
        self._next_poll = 0.0
        self._failures = 0
        self._last_poll_ok: tuple[float, float] | None = None  # (monotonic, wall)
        # When each outcome that failed may be tried again (monotonic; not stored: a
        # restart tries every outcome at once).
        self._retry_at: dict[str, float] = {}
        self._abandoned: deque[dict[str, Any]] = deque(maxlen=ABANDONED_KEPT)
        self._blocked_total = 0
        self._rng = random.Random()

    # ------------------------------------------------------------- lifecycle

    def on_start(self) -> None:
        for todo_id, reservation in self._store.load_reservations().items():
            self._hold(todo_id, reservation)
        self._publish()

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
        self._publish()
        return len(self._reservations)

    # ------------------------------------------------------------------ time

    def tick(self) -> None:
        """Deliver the outcomes that are due, then poll when due; neither waits on the other."""
        now = self._clock.monotonic()
        self._end_cool_downs()
        self._deliver_due(now)
        if now >= self._next_poll:
            self._forget_long_returned()
            self._poll_now(now)
        self._publish()

    def _poll_now(self, now: float) -> None:
        try:
            contacted = self._poll()
        except TodoServiceError as exc:  # unreachable, or an answer we cannot use
            self._outage(now, exc)
            return
        if self._failures and contacted:
            logger.info("TODO service reachable again after %d failed polls", self._failures)
            self._failures = 0
        if not self._failures:  # asked with success, or nobody had room to ask for
            self._last_poll_ok = (now, self._clock.time())
            self._dirty = True
        self._next_poll = now + self._settings.todo_poll_s

    def _outage(self, now: float, exc: Exception) -> None:
        self._failures += 1
        self._dirty = True
        self._events.signal("intake.error")
        if self._failures == 1:
            logger.warning(
                "TODO service unavailable, backing off: %s; %s", exc, OFF_SWITCHES["todo_service"]
            )
        self._next_poll = now + self._backoff_s(self._failures)

    def _backoff_s(self, failures: int) -> float:
        """Doubling from the poll interval, capped, with jitter (half to all of it)."""
        backoff_s = min(MAX_BACKOFF_S, self._settings.todo_poll_s * 2 ** (failures - 1))
        return backoff_s * self._rng.uniform(0.5, 1.0)

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
        self._deliver_due(self._clock.monotonic())
        self._publish()

    # ----------------------------------------------------------- observation

    def status(self) -> dict[str, Any]:
        """The ``intake`` entry of ``/stats`` (also readable without an ask: the view)."""
        return self._view.status()

    def _publish(self) -> None:
        """Give readers a new snapshot, if anything they see has changed."""
        if not self._dirty:
            return
        self._dirty = False
        undelivered = []
        for state, outcome in OUTCOMES.items():
            for todo_id in self._by_state[state]:
                reservation = self._reservations[todo_id]
                if reservation.get("tries"):
                    undelivered.append(
                        {
                            "task_id": reservation["task_id"],
                            "outcome": outcome,
                            "failures": reservation["tries"],
                            "last_error": reservation.get("last_error"),
                        }
                    )
        cooling = [
            {
                "task_id": reservation["task_id"],
                "deaths": reservation["deaths"],
                "until": reservation["cool_until"],
            }
            for reservation in map(self._reservations.get, self._by_state[COOLING])
            if reservation is not None
        ]
        ok = self._last_poll_ok
        self._view.publish(
            IntakeSnapshot(
                # Returned tasks are no longer ours: only remembered.
                reservations={
                    state: len(ids)
                    for state, ids in self._by_state.items()
                    if ids and state != RETURNED
                },
                failed_polls=self._failures,
                last_poll_ok_at=None if ok is None else ok[0],
                last_poll_ok_wall=None if ok is None else ok[1],
                undelivered=tuple(undelivered),
                abandoned=tuple(self._abandoned),
                dead_tasks={
                    "policy": self._settings.todo_dead_tasks,
                    "blocked": self._blocked_total,
                    "cooling": cooling,
                },
            )
        )

    # ------------------------------------------------------------- polling

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
            if self._failures:
                # Nobody has room, but the last polls failed: learn whether the
                # service is back, or the intake would look down until an agent frees up.
                self._client.health()
                return True
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
        known = self._reservations.get(todo_id)
        if known is not None and known["state"] != RETURNED:
            return False  # already ours: never reserve twice
        task_id = TASK_PREFIX + todo_id
        try:
            spec = TaskSpec.build(
                task_id=task_id, payload=dict(todo_task), agent_type=agent_type, max_attempts=3
            )
        except OrchestratorError as exc:
            logger.warning("TODO task %r cannot be run here: %s", raw_id, exc)
            return False
        reservation: dict[str, Any] = {
            "state": RESERVING,
            "raw_id": raw_id,
            "agent_id": agent_id,
            "task_id": task_id,
        }
        if known is not None:  # it died here before: its next cool-down grows
            reservation["deaths"] = known.get("deaths", 0)
        self._put(todo_id, reservation)
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

    # ------------------------------------------------------- settling a task

    def _settle_from_task(self, todo_id: str) -> None:
        task_id = self._reservations[todo_id]["task_id"]
        try:
            task = self._scheduler.get(task_id).get(timeout=self._settings.ask_timeout_s)
        except NotFound:
            self._set(todo_id, state=RELEASING)
            return
        if task.state is TaskState.COMPLETED:
            notes = result_notes(task.result)
            self._set(todo_id, state=COMPLETING, agent_id=task.agent_id or "", notes=notes)
        elif task.state is TaskState.DEAD:
            self._settle_dead(todo_id, task.error or "the task failed with no attempts left")
        elif task.terminal:
            self._set(todo_id, state=RELEASING)

    def _settle_dead(self, todo_id: str, error: str) -> None:
        """A dead task must not come straight back: block it, or cool it down first."""
        if self._settings.todo_dead_tasks == "block":
            self._set(todo_id, state=BLOCKING, notes=error)
            return
        deaths = self._reservations[todo_id].get("deaths", 0) + 1
        cool_down_s = min(
            self._settings.todo_cooldown_max_s,
            self._settings.todo_cooldown_s * 2 ** (deaths - 1),
        )
        cool_until = self._clock.time() + cool_down_s
        self._set(todo_id, state=COOLING, deaths=deaths, cool_until=cool_until, last_error=error)
        task_id = self._reservations[todo_id]["task_id"]
        self._events.emit(
            "intake.cooling", task_id=task_id, deaths=deaths, cool_down_s=cool_down_s, error=error
        )
        logger.info(
            "%s is dead (%s); given back to the TODO service in %.0fs (death %d)",
            task_id,
            error,
            cool_down_s,
            deaths,
        )

    def _end_cool_downs(self) -> None:
        """Give back the dead tasks whose cool-down is over."""
        now = self._clock.time()
        for todo_id in list(self._by_state[COOLING]):
            if self._reservations[todo_id]["cool_until"] <= now:
                self._set(todo_id, state=RELEASING)

    def _forget_long_returned(self) -> None:
        """A task given back that stayed away a whole longest cool-down starts over."""
        oldest = self._clock.time() - self._settings.todo_cooldown_max_s
        for todo_id in list(self._by_state[RETURNED]):
            if self._reservations[todo_id]["returned_at"] <= oldest:
                self._forget(todo_id)

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

    # ------------------------------------------------------ delivering outcomes

    def _deliver_due(self, now: float) -> None:
        """Try each outcome whose turn it is, once; stop early if the service is unreachable."""
        due = [
            todo_id
            for state in OUTCOMES
            for todo_id in self._by_state[state]
            if self._retry_at.get(todo_id, 0.0) <= now
        ]
        for todo_id in due:
            reservation = self._reservations.get(todo_id)
            if reservation is None or reservation["state"] not in OUTCOMES:
                continue  # settled meanwhile
            if not self._deliver(todo_id, reservation, now):
                return  # unreachable: the others wait for the next round, uncounted

    def _deliver(self, todo_id: str, reservation: dict[str, Any], now: float) -> bool:
        """One attempt at one outcome; False if the service could not be reached."""
        state, raw_id, task_id = reservation["state"], reservation["raw_id"], reservation["task_id"]
        try:
            if state == COMPLETING:
                self._client.complete_task(
                    raw_id, reservation["agent_id"], reservation.get("notes")
                )
            elif state == RELEASING:
                self._client.unlock_task(raw_id, reservation["agent_id"])
            else:
                self._client.block_task(raw_id, reservation.get("notes") or "dead")
        except TodoUnavailable as exc:
            self._delivery_failed(todo_id, exc, now, answered=False)
            return False
        except TodoServiceError as exc:  # a refusal, a 500: about this task only
            self._delivery_failed(todo_id, exc, now, answered=True)
            return True
        self._retry_at.pop(todo_id, None)
        if state == COMPLETING:
            self._events.emit("intake.completed", task_id=task_id)
        elif state == RELEASING:
            self._events.emit("intake.released", task_id=task_id)
        else:
            self._blocked_total += 1
            self._events.emit("intake.blocked", task_id=task_id, error=reservation.get("notes"))
            logger.info("%s is dead; marked blocked in the TODO service", task_id)
        if state == RELEASING and reservation.get("deaths"):
            # Keep how often it died, so the next cool-down is longer.
            returned = {
                "state": RETURNED,
                "raw_id": raw_id,
                "task_id": task_id,
                "agent_id": reservation["agent_id"],
                "deaths": reservation["deaths"],
                "returned_at": self._clock.time(),
            }
            self._put(todo_id, returned)
        else:
            self._forget(todo_id)
        return True

    def _delivery_failed(self, todo_id: str, exc: Exception, now: float, *, answered: bool) -> None:
        reservation = self._reservations[todo_id]
        outcome = OUTCOMES[reservation["state"]]
        tries = reservation.get("tries", 0) + 1
        refusals = reservation.get("refusals", 0) + (1 if answered else 0)
        if refusals >= self._settings.todo_outcome_max_failures:
            self._abandon(todo_id, outcome, str(exc), tries)
            return
        self._set(todo_id, tries=tries, refusals=refusals, last_error=str(exc))
        self._retry_at[todo_id] = now + self._backoff_s(tries)
        log = logger.info if answered and not isinstance(exc, TodoRequestFailed) else logger.debug
        log(
            "%s of %s failed (%d so far), will retry: %s",
            outcome,
            reservation["task_id"],
            tries,
            exc,
        )

    def _abandon(self, todo_id: str, outcome: str, error: str, tries: int) -> None:
        """The service keeps refusing this one: stop trying, and say so."""
        task_id = self._reservations[todo_id]["task_id"]
        logger.warning(
            "giving up on the %s of %s after %d failed attempts: %s", outcome, task_id, tries, error
        )
        self._events.emit(
            "intake.outcome_abandoned",
            task_id=task_id,
            outcome=outcome,
            error=error,
            failures=tries,
        )
        self._abandoned.append(
            {"task_id": task_id, "outcome": outcome, "error": error, "at": self._clock.time()}
        )
        self._dirty = True
        self._retry_at.pop(todo_id, None)
        self._forget(todo_id)

    def _set(self, todo_id: str, **changes: Any) -> None:
        updated = {**self._reservations[todo_id], **changes}
        if "state" in changes and changes["state"] != self._reservations[todo_id]["state"]:
            # A new outcome starts its own count.
            for key in ("tries", "refusals", "last_error"):
                if key not in changes:
                    updated.pop(key, None)
            self._retry_at.pop(todo_id, None)
        self._put(todo_id, updated)

    def _put(self, todo_id: str, reservation: dict[str, Any]) -> None:
        """Store the reservation, then hold it: stored first, so a restart knows it."""
        self._store.put_reservation(todo_id, reservation)
        self._hold(todo_id, reservation)

    def _hold(self, todo_id: str, reservation: dict[str, Any]) -> None:
        previous = self._reservations.get(todo_id)
        if previous is not None:
            self._by_state[previous["state"]].pop(todo_id, None)
        self._reservations[todo_id] = reservation
        self._by_state[reservation["state"]][todo_id] = None
        self._dirty = True

    def _forget(self, todo_id: str) -> None:
        self._store.delete_reservation(todo_id)
        previous = self._reservations.pop(todo_id, None)
        if previous is not None:
            self._by_state[previous["state"]].pop(todo_id, None)
        self._retry_at.pop(todo_id, None)
        self._dirty = True


def result_notes(result: Any) -> str | None:
    """What the TODO service's ``notes`` get for a result: its ``notes``, else the result.

    Text stays text; anything else is sent as JSON (never Python's repr), so whoever
    reads the notes can parse them.
    """
    if isinstance(result, dict) and "notes" in result:
        result = result["notes"]
    if result is None or isinstance(result, str):
        return result
    return json.dumps(result, ensure_ascii=False, default=str)
