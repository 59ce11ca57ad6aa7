"""HealthMonitor: turns missed heartbeats into state changes.

It reads the published Directory (no asks), so a check costs one pass over the
agents' snapshots, and it only *suggests*: the agent's own actor re-judges with its
own last heartbeat before changing state, so a heartbeat racing the check wins.
Checks run at most every ``check_interval_s``, however often the ticker calls.
"""

from __future__ import annotations

import pykka

from orch.actors.directory import Directory
from orch.clock import Clock
from orch.config import Settings
from orch.model import AgentState

MONITORED_STATES = frozenset(
    {AgentState.IDLE, AgentState.BUSY, AgentState.UNHEALTHY, AgentState.STOPPING}
)


class HealthMonitor(pykka.ThreadingActor):
    """Finds agents whose heartbeats are overdue and asks them to re-judge themselves."""

    use_daemon_thread = True

    def __init__(
        self,
        directory: Directory,
        clock: Clock,
        settings: Settings,
        check_interval_s: float = 0.5,
    ) -> None:
        super().__init__()
        self._directory = directory
        self._clock = clock
        self._settings = settings
        self._check_interval_s = check_interval_s
        self._last_check = float("-inf")
        self.checks = 0

    def tick(self, force: bool = False) -> int:
        """Check every remote agent's heartbeat age; returns how many were flagged."""
        now = self._clock.monotonic()
        if not force and now - self._last_check < self._check_interval_s:
            return 0
        self._last_check = now
        self.checks += 1
        unhealthy_after = self._settings.unhealthy_after_missed
        lost_after = self._settings.lost_after_missed
        flagged = 0
        for entry in self._directory.entries():
            record = entry.record
            if record.in_process or entry.actor is None or record.state not in MONITORED_STATES:
                continue
            missed = (now - record.last_heartbeat) / record.config.heartbeat_interval_s
            newly_unhealthy = (
                missed >= unhealthy_after
                and record.state is not (AgentState.UNHEALTHY)
                and record.state is not AgentState.STOPPING
            )
            if newly_unhealthy or missed >= lost_after:
                flagged += 1
                try:
                    entry.actor.check_liveness.defer()
                except pykka.ActorDeadError:
                    continue
        return flagged
