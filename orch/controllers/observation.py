"""``ObservationController``: statistics, the numbered event feed and health.

None of these changes anything. ``stats`` asks the actors that own the counts, all at
once; ``health`` reads the background dependency checks' last results, so it
answers at once even when a dependency hangs; ``events`` reads the event ring and
works on a stopped Orchestrator too.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from orch.clock import Clock
from orch.config import Settings
from orch.controllers.base import Actors
from orch.dependencies import DependencyChecks
from orch.events import Events
from orch.model import AgentState, validate_id, validate_int
from orch.validation import validate_wait

#: The longest an events long-poll may wait, in seconds (the HTTP layer's is shorter).
MAX_EVENTS_WAIT_S = 60.0


class ObservationController:
    """The read-only side of the embedded API: ``stats``, ``events`` and ``health``."""

    def __init__(
        self,
        actors: Actors,
        settings: Settings,
        events: Events,
        dependencies: DependencyChecks,
        clock: Clock,
    ) -> None:
        self._actors = actors
        self._calls = actors.calls
        self._settings = settings
        self._events = events
        self._dependencies = dependencies
        self._clock = clock

    def stats(self) -> dict[str, Any]:
        """Counts of agents, tasks and locks (the seed's keys and more)."""
        actors = self._actors
        task_stats, lock_stats, restarting = self._calls.ask_all(
            [actors.scheduler.stats(), actors.broker.stats(), actors.supervisor.restarting()]
        )
        counts, restarts, total = actors.directory.counts()
        by_state = Counter({str(s): n for s, n in counts.items()})
        by_task_state = task_stats["tasks_by_state"]
        return {
            "total_agents": total,
            "active_agents": by_state["idle"] + by_state["busy"],
            "idle_agents": by_state["idle"],
            "busy_agents": by_state["busy"],
            "agents_by_state": {str(s): by_state[str(s)] for s in AgentState},
            "pending_tasks": by_task_state["pending"],
            "assigned_tasks": by_task_state["assigned"] + by_task_state["running"],
            "total_tasks_completed": task_stats["total_tasks_completed"],
            "total_tasks_failed": task_stats["total_tasks_failed"],
            "tasks": task_stats,
            "locks": lock_stats,
            "restarts": restarts,
            "restarting_agents": restarting,
            "intake": self._intake_status(),
            "uptime_s": round(self._clock.time() - actors.started_at, 3),
        }

    def _intake_status(self) -> dict[str, Any] | None:
        # Its published view, not an ask: the Intake may be stuck calling a hung service.
        view = self._actors.intake_view
        return None if view is None else view.status()

    def events(
        self,
        after: int = 0,
        *,
        limit: int = 1000,
        wait_s: float = 0.0,
        epoch: str | None = None,
    ) -> dict[str, Any]:
        """Events numbered after ``after``, waiting up to ``wait_s`` for the first (long-poll).

        ``next`` is the ``after`` to pass next time, and ``epoch`` (the numbering's name)
        the ``epoch``; the ring keeps the last 10,000 events, so a reader that falls
        further behind sees a gap in ``seq``. Numbering restarts with the server: an
        ``epoch`` of an earlier process is answered at once from the start, with
        ``reset: true``; an ``after`` beyond the newest event is answered at once with
        no events, ``ahead: true`` and ``next`` the newest seq (``Events.page``).
        """
        after = validate_int("after", after, 0, 2**63 - 1)
        limit = validate_int("limit", limit, 1, 1000)
        wait_s = validate_wait("wait_s", wait_s, MAX_EVENTS_WAIT_S)
        if epoch is not None:
            epoch = validate_id("epoch", epoch)
        return self._events.page(after, limit, wait_s, epoch)

    def health(self) -> dict[str, Any]:
        """``healthy``, ``degraded`` (a service we use is unreachable) or ``unhealthy``
        (the store failing or an actor dead), with one check per dependency.

        Dependency checks run in the background; this only reads their last results,
        so it answers at once even when a dependency hangs.
        """
        actors = self._actors
        actors.check_running()  # stopped, every actor is dead: that is not news about health
        dead = [r.actor_class.__name__ for r in actors.refs if not r.is_alive()]
        checks: dict[str, Any] = {"actors": {"status": "failing" if dead else "ok", "dead": dead}}
        checks.update({name: r.to_dict() for name, r in self._dependencies.results().items()})
        status = "unhealthy" if dead else self._dependencies.status()
        counts, _, total = actors.directory.counts()
        out: dict[str, Any] = {
            "status": status,
            "checks": checks,
            "total_agents": total,
            "active_agents": counts.get(AgentState.IDLE, 0) + counts.get(AgentState.BUSY, 0),
        }
        if not dead:
            task_stats = self._calls.ask(actors.scheduler.stats())
            out["pending_tasks"] = task_stats["tasks_by_state"]["pending"]
        return out
