"""``IntakeView``: the Intake's state as it last published it, read without an ask.

``/stats`` and ``/health`` must answer at once even while the Intake waits on a hung
TODO service, so they never ask it: the Intake publishes an immutable snapshot after
each tick and each task event, and readers take whichever is current (replacing one
attribute is atomic). Whether the intake is ``degraded`` is decided at read time,
against the clock, so an Intake stuck in a call shows as stale even though it cannot
publish anything.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from typing import Any

from orch.clock import Clock

#: Polls that may go by without a successful one before the intake is ``degraded``.
STALE_AFTER_POLLS = 3
#: Outcomes named in a problem line at most (the rest are counted).
NAMED_OUTCOMES = 5


@dataclass(frozen=True, slots=True)
class IntakeSnapshot:
    """What the Intake holds and how its last attempts went; only the Intake builds one."""

    #: Reservations by state (``reserved``, ``completing``, ``releasing``, ...).
    reservations: dict[str, int] = field(default_factory=dict)
    #: Polls failed in a row (0 once one succeeds).
    failed_polls: int = 0
    #: The last poll that succeeded (or had no one to ask for), on the monotonic clock.
    last_poll_ok_at: float | None = None
    #: The same moment on the wall clock, for people.
    last_poll_ok_wall: float | None = None
    #: Outcomes whose last delivery failed: task_id, outcome, failures, last_error.
    undelivered: tuple[dict[str, Any], ...] = ()
    #: Outcomes given up on, newest last (a bounded list): task_id, outcome, error, at.
    abandoned: tuple[dict[str, Any], ...] = ()
    #: How dead tasks are handled and what became of them (policy, blocked, cooling).
    dead_tasks: dict[str, Any] = field(default_factory=dict)


class IntakeView:
    """The snapshot readers see, and the ``/health`` check built on it."""

    def __init__(self, url: str, clock: Clock, poll_s: float) -> None:
        self.url = url
        self._clock = clock
        self._stale_after_s = STALE_AFTER_POLLS * poll_s
        # Until the first poll, the intake counts from when it was set up.
        self._started_at = clock.monotonic()
        self._snapshot = IntakeSnapshot()

    def publish(self, snapshot: IntakeSnapshot) -> None:
        """Replace the snapshot (the Intake's thread only)."""
        self._snapshot = snapshot

    def problems(self) -> list[str]:
        """Why the intake is ``degraded``, one line each; empty when it is not."""
        snapshot = self._snapshot
        problems = []
        since = snapshot.last_poll_ok_at
        quiet_s = self._clock.monotonic() - (self._started_at if since is None else since)
        if quiet_s > self._stale_after_s:
            problems.append(f"no successful poll of the TODO service for {quiet_s:.0f}s")
        if snapshot.undelivered:
            named = ", ".join(
                f"{o['task_id']} ({o['outcome']})" for o in snapshot.undelivered[:NAMED_OUTCOMES]
            )
            more = len(snapshot.undelivered) - NAMED_OUTCOMES
            problems.append(
                f"{len(snapshot.undelivered)} outcome(s) not delivered yet: {named}"
                + (f" and {more} more" if more > 0 else "")
            )
        return problems

    def status(self) -> dict[str, Any]:
        """The ``intake`` entry of ``/stats``."""
        problems = self.problems()
        out: dict[str, Any] = {
            "url": self.url,
            "status": "degraded" if problems else "ok",
            "problems": problems,
        }
        out.update(asdict(self._snapshot))
        del out["last_poll_ok_at"]  # monotonic: meaningless outside this process
        out["last_successful_poll_at"] = out.pop("last_poll_ok_wall")
        out["undelivered"] = list(out["undelivered"])
        out["abandoned"] = list(out["abandoned"])
        return out

    def check(self) -> None:
        """A ``DependencyChecks`` check: raise, naming the problems, when degraded."""
        problems = self.problems()
        if problems:
            raise RuntimeError("; ".join(problems))
