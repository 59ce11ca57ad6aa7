"""``InProcessRunner``: the worker threads of an in-process agent, off its actor's thread.

An in-process agent's ``handle`` is user code: it may block, take seconds or raise
anything, ``BaseException`` included. So it never runs on the AgentActor's thread
(which must answer start, stop and heartbeat promptly) but on threads of its own,
one per slot, each behind a guard that turns whatever escapes into a crash report.
A crash kills the actor on purpose; runs still going on then report their attempt
failed to the Scheduler themselves once ``handle`` returns (``close``).
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
from collections.abc import Callable
from typing import TYPE_CHECKING

import pykka

from orch.agent import Agent
from orch.model import Assignment
from orch.runtime import ActorGate

if TYPE_CHECKING:
    from orch.actors.proxies import AgentProxy, SchedulerProxy

logger = logging.getLogger("orch.agent")


class InProcessRunner:
    """Worker threads that run an in-process agent's ``handle`` off the actor thread."""

    def __init__(
        self,
        factory: Callable[[], Agent],
        actor: AgentProxy,
        slots: int,
        agent_id: str,
        gate: ActorGate | None = None,
    ) -> None:
        self._factory = factory
        self._actor = actor
        self._gate = gate  # results are reported through it, without a hand-off if idle
        self._agent_id = agent_id
        self._queue: queue.SimpleQueue[Assignment | None] = queue.SimpleQueue()
        self._agent: Agent | None = None
        self._agent_ready = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._closed = threading.Event()
        # Attempts inside ``handle`` now (key, attempt), and where runs still going on
        # when the actor crashed report (see ``close``); both under ``_lock``.
        self._lock = threading.Lock()
        self._in_flight: set[tuple[str, int]] = set()
        self._orphans_to: SchedulerProxy | None = None
        self._crash_error = ""
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

    def close(
        self, orphans_to: SchedulerProxy | None = None, error: str = ""
    ) -> frozenset[tuple[str, int]]:
        """Take no more work; returns the attempts whose ``handle`` is still running.

        With ``orphans_to`` (the Scheduler, when the actor crashed) each such run
        reports its attempt failed there once ``handle`` returns; until then the
        Scheduler leaves the task leased, so it never runs twice at the same time.
        """
        with self._lock:
            self._orphans_to, self._crash_error = orphans_to, error
            self._closed.set()
            running = frozenset(self._in_flight)
        for _ in self._threads:
            self._queue.put(None)
        agent = self._agent
        if agent is not None:
            try:
                agent.on_stop()
            except Exception:
                logger.exception("agent %s on_stop failed", self._agent_id)
        return running

    def _instance(self) -> Agent:
        with self._agent_ready:
            if self._agent is None:
                agent = self._factory()
                agent.on_start()
                self._agent = agent
            return self._agent

    def _work(self) -> None:
        while (assignment := self._queue.get()) is not None:
            with self._lock:
                if self._closed.is_set():
                    return
                self._in_flight.add((assignment.key, assignment.attempt))
            try:
                result = self._instance().handle(assignment)
            except BaseException as exc:  # the guard: nothing escapes into Pykka
                own_error: str | None = f"{type(exc).__name__}: {exc}"
                self._log_user_error(assignment, exc)
                report, args = self._actor.task_crashed, (own_error,)
            else:
                own_error = None
                report, args = self._actor.task_done, (result,)
            with self._lock:
                self._in_flight.discard((assignment.key, assignment.attempt))
                orphaned = self._closed.is_set()
            if orphaned:
                self._report_orphan(assignment, own_error)
                return
            try:
                if own_error is None and self._gate is not None:
                    self._gate.tell(
                        self._actor, "task_done", assignment.key, assignment.attempt, *args
                    )
                else:  # a crash report stays a message: raising it must kill the actor
                    report.defer(assignment.key, assignment.attempt, *args)
            except pykka.ActorDeadError:
                return  # the actor died; its crash report already failed this task

    def _log_user_error(self, assignment: Assignment, exc: BaseException) -> None:
        """Log the user's exception once, with their own traceback, at ERROR.

        The first frame is this runner's call of ``handle``; the rest is theirs. The
        actor's crash that follows is logged as a one-line WARNING, never as a
        traceback of the orchestrator's internals (``LoggedFailure``).
        """
        traceback = exc.__traceback__
        if traceback is not None and traceback.tb_next is not None:
            traceback = traceback.tb_next  # from their code on
        logger.error(
            "agent %s: task %s (attempt %d) raised %s: %s",
            self._agent_id,
            assignment.task_id,
            assignment.attempt,
            type(exc).__name__,
            exc,
            exc_info=(type(exc), exc, traceback),
            extra={"agent_id": self._agent_id, "task_id": assignment.task_id},
        )

    def _report_orphan(self, assignment: Assignment, own_error: str | None) -> None:
        """The actor crashed while this ran: fail the attempt with the Scheduler itself."""
        if self._orphans_to is None:
            return  # stopped, not crashed: whoever stopped the agent settled its tasks
        error = own_error or self._crash_error
        with contextlib.suppress(pykka.ActorDeadError):
            self._orphans_to.fail_from_agent.defer(
                self._agent_id, assignment.key, assignment.attempt, error, True
            )
