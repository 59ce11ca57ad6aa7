"""When an agent is unhealthy or lost: the rule, apart from the actor that applies it.

An agent proves it is alive by heartbeats; missing ``unhealthy_after`` intervals
takes it out of scheduling, missing ``lost_after`` gives its work and locks back
(README, "How it works"). The rule needs the record, the time and the settings, and
nothing else: no threads, no store, no clock of its own, so its tests give the time.
The AgentActor asks it on every HealthMonitor check and applies the verdict.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from orch.model import AgentRecord, AgentState

#: States whose agent is expected to heartbeat (remote agents only).
WATCHED_STATES = frozenset(
    {AgentState.IDLE, AgentState.BUSY, AgentState.UNHEALTHY, AgentState.STOPPING}
)
#: States an overdue agent is marked unhealthy from (it was taking work).
SCHEDULABLE_STATES = frozenset({AgentState.IDLE, AgentState.BUSY})


class Verdict(enum.Enum):
    """What a liveness check concludes."""

    ALIVE = "alive"  # nothing to do (in time, already unhealthy, or not watched)
    UNHEALTHY = "unhealthy"  # overdue: no new work
    LOST = "lost"  # overdue past the grace: tasks requeued, locks released


@dataclass(frozen=True, slots=True)
class Liveness:
    """A verdict and the heartbeat intervals missed that led to it."""

    verdict: Verdict
    missed_intervals: float


def judge(
    record: AgentRecord, now: float, *, unhealthy_after: float, lost_after: float
) -> Liveness:
    """The verdict on ``record`` at monotonic time ``now``.

    In-process agents are never judged: their actor is their proof of life. An
    agent already unhealthy or stopping can only be found lost, never unhealthy
    again, so a verdict is acted on once.
    """
    if record.in_process or record.state not in WATCHED_STATES:
        return Liveness(Verdict.ALIVE, 0.0)
    missed = (now - record.last_heartbeat) / record.config.heartbeat_interval_s
    if missed >= lost_after:
        return Liveness(Verdict.LOST, missed)
    if missed >= unhealthy_after and record.state in SCHEDULABLE_STATES:
        return Liveness(Verdict.UNHEALTHY, missed)
    return Liveness(Verdict.ALIVE, missed)
