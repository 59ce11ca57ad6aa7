"""Lifecycle events: one seam every actor reports through.

Actors call ``Events.emit`` instead of reaching into each other or into metrics; the
bounded ring behind it feeds ``GET /events`` and tests, and listeners (metrics, logs)
hang off the same seam, as Mopidy's ``CoreListener`` does.
"""

from __future__ import annotations

import collections
import logging
import secrets
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from orch.clock import Clock

logger = logging.getLogger("orch.events")

Listener = Callable[["Event"], None]
SignalListener = Callable[[str, dict[str, Any]], None]


@dataclass(frozen=True, slots=True)
class Event:
    """Something that happened, numbered in the order it was recorded."""

    seq: int
    type: str
    at: float
    data: dict[str, Any]

    def to_dict(self) -> dict[str, Any]:
        return {"seq": self.seq, "type": self.type, "at": self.at, **self.data}


class Events:
    """A bounded, numbered ring of events with blocking reads for long-polls."""

    def __init__(self, clock: Clock, capacity: int = 10_000) -> None:
        self._clock = clock
        self._ring: collections.deque[Event] = collections.deque(maxlen=capacity)
        self._cond = threading.Condition()
        self._seq = 0
        # Names this numbering: it restarts at 1 with the process, so a reader's
        # ``after`` alone cannot tell a restarted server from one it is ahead of.
        self.epoch = secrets.token_hex(8)
        self._closed = False
        self._waiting = 0
        self._listeners: list[Listener] = []
        self._signal_listeners: list[SignalListener] = []

    def subscribe(self, listener: Listener) -> None:
        """Call ``listener`` for every future event (in the emitting actor's thread)."""
        self._listeners.append(listener)

    def subscribe_signals(self, listener: SignalListener) -> None:
        """Call ``listener(signal_type, data)`` for every future ``signal``."""
        self._signal_listeners.append(listener)

    def signal(self, signal_type: str, **data: Any) -> None:
        """Tell the listeners (metrics) of something too frequent for the ring.

        A heartbeat, an HTTP request, a lock wait: thousands a second, and not news a
        reader of ``GET /events`` wants. They go through the same seam as events, so
        nothing outside the listeners touches a metric, but they are neither numbered
        nor kept. Runs in the caller's thread; listeners' errors are logged, not raised.
        """
        for listener in self._signal_listeners:
            try:
                listener(signal_type, data)
            except Exception:
                logger.exception("signal listener failed on %s", signal_type)

    def emit(self, event_type: str, **data: Any) -> Event:
        """Record an event and wake long-pollers; listeners' errors are logged, not raised."""
        return self.emit_data(event_type, data)

    def emit_data(self, event_type: str, data: dict[str, Any]) -> Event:
        """``emit`` with the data as a dict it may keep (a plan's events are built so)."""
        with self._cond:
            self._seq += 1
            event = Event(self._seq, event_type, self._clock.time(), data)
            self._ring.append(event)
            self._cond.notify_all()
        for listener in self._listeners:
            try:
                listener(event)
            except Exception:
                logger.exception("event listener failed on %s", event_type)
        return event

    def close(self) -> None:
        """Wake every long-poll and stop waiting from now on (shutdown)."""
        with self._cond:
            self._closed = True
            self._cond.notify_all()

    @property
    def last_seq(self) -> int:
        return self._seq

    @property
    def waiting(self) -> int:
        """Readers parked in ``since`` right now, waiting for an event."""
        return self._waiting

    def since(self, after: int, limit: int = 1000, wait_s: float = 0.0) -> list[Event]:
        """Events with ``seq > after``, waiting up to ``wait_s`` for the first one."""
        with self._cond:
            if wait_s > 0 and self._seq <= after:
                self._waiting += 1
                try:
                    self._cond.wait_for(lambda: self._seq > after or self._closed, timeout=wait_s)
                finally:
                    self._waiting -= 1
            out = [e for e in self._ring if e.seq > after]
        return out[:limit]

    def page(
        self, after: int, limit: int = 1000, wait_s: float = 0.0, epoch: str | None = None
    ) -> dict[str, Any]:
        """``{events, next, epoch}`` for ``GET /events``; ``reset`` or ``ahead`` when apt.

        Numbering restarts at 1 with the server, so every answer names its numbering
        (``epoch``) and a follower passes it back. Another ``epoch`` means the server
        restarted: ``reset: true``, the events from the ring's start and ``next`` in
        the new numbering, so the follower carries on from there. An ``after`` beyond
        the newest event in this numbering (or with no ``epoch`` to tell) is a reader
        ahead of the server: ``ahead: true``, no events, and ``next`` the newest seq;
        replaying the ring would show it events it asked to skip, and waiting for the
        numbering to catch up would leave it hanging in silence. Both answer at once.
        ``seq`` only grows, so the test needs no lock.
        """
        if epoch is not None and epoch != self.epoch:
            found = self.since(0, limit)
            return {
                "events": [e.to_dict() for e in found],
                "next": found[-1].seq if found else 0,
                "epoch": self.epoch,
                "reset": True,
            }
        newest = self.last_seq
        if after > newest:
            return {"events": [], "next": newest, "epoch": self.epoch, "ahead": True}
        found = self.since(after, limit, wait_s)
        return {
            "events": [e.to_dict() for e in found],
            "next": found[-1].seq if found else after,
            "epoch": self.epoch,
        }
