"""The one time source.

Deadlines (heartbeats, leases, retries, restarts) are kept on the monotonic clock so
that wall-clock jumps neither expire nor prolong them; wall time is only for what a
person reads (``expires_at``, ``created_at``). Both functions are looked up on the
``time`` module at call time, so freezegun's patching reaches them; tests that want
full control inject a ``ManualClock`` instead.
"""

from __future__ import annotations

import threading
import time
from typing import Protocol


class Clock(Protocol):
    """What actors need to know about time."""

    def time(self) -> float:
        """Wall-clock seconds since the epoch (for display and storage)."""
        ...

    def monotonic(self) -> float:
        """Seconds on a clock that never goes backwards (for deadlines)."""
        ...


class SystemClock:
    """The real clocks, resolved at call time so freezegun can patch them."""

    def time(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()


class ManualClock:
    """A clock that moves only when a test tells it to."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self._lock = threading.Lock()
        self._wall = start
        self._mono = 1000.0

    def time(self) -> float:
        with self._lock:
            return self._wall

    def monotonic(self) -> float:
        with self._lock:
            return self._mono

    def advance(self, seconds: float) -> None:
        """Move both clocks forward, as real time passing does."""
        if seconds < 0:
            raise ValueError("time passing cannot be negative; use jump_wall for that")
        with self._lock:
            self._wall += seconds
            self._mono += seconds

    def jump_wall(self, seconds: float) -> None:
        """Move only the wall clock (an NTP step or an operator's `date -s`)."""
        with self._lock:
            self._wall += seconds


def wall_at(clock: Clock, monotonic_deadline: float) -> float:
    """Translate a monotonic deadline to wall time for display."""
    return clock.time() + (monotonic_deadline - clock.monotonic())
