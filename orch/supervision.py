"""Restart intensity and backoff, Erlang/OTP style, as one pure rule.

Two supervisors use it: the Supervisor actor for in-process agents
(``orch/actors/supervisor.py``) and the launcher for agent processes
(``orch/launcher/``). Sharing the rule, and its defaults, means an operator who
knows how one restarts knows how the other does. No clock, no threads: times are
passed in, so tests decide what "now" is.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

#: The defaults both supervisors start from (``Settings`` and the launcher's file).
DEFAULT_MAX_RESTARTS = 5
DEFAULT_RESTART_WINDOW_S = 60.0
DEFAULT_BACKOFF_INITIAL_S = 0.1
DEFAULT_BACKOFF_MAX_S = 10.0


@dataclass(frozen=True, slots=True)
class RestartPolicy:
    """At most ``max_restarts`` restarts within ``restart_window_s``; backoff doubles."""

    max_restarts: int = DEFAULT_MAX_RESTARTS
    restart_window_s: float = DEFAULT_RESTART_WINDOW_S
    backoff_initial_s: float = DEFAULT_BACKOFF_INITIAL_S
    backoff_max_s: float = DEFAULT_BACKOFF_MAX_S


@dataclass(frozen=True, slots=True)
class RestartDecision:
    """What to do after a crash at ``now``.

    ``restart_in_s`` is ``None`` when the intensity is exceeded (give up: the agent is
    ``failed``). ``history`` is the restart times to keep for the next decision: those
    still inside the window, plus ``now`` when restarting.
    """

    restart_in_s: float | None
    history: tuple[float, ...]

    @property
    def gives_up(self) -> bool:
        """True when the child is not to be restarted."""
        return self.restart_in_s is None


def decide_restart(policy: RestartPolicy, history: Iterable[float], now: float) -> RestartDecision:
    """Restart after a backoff, or give up, given the earlier restarts' times.

    The backoff is ``backoff_initial_s * 2**n`` (capped at ``backoff_max_s``) where
    ``n`` is the number of restarts still inside the window: a child that has been
    well for a whole window starts again from the shortest backoff.
    """
    recent = tuple(t for t in history if t > now - policy.restart_window_s)
    if len(recent) >= policy.max_restarts:
        return RestartDecision(None, recent)
    backoff_s = min(policy.backoff_max_s, policy.backoff_initial_s * 2 ** len(recent))
    return RestartDecision(backoff_s, (*recent, now))
