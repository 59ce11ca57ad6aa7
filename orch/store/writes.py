"""A queued write and its completion, shared by the stores that commit in groups.

A caller builds a ``Write`` (the statements that commit together), queues it to its
store's writer thread and waits on ``done``; the writer runs many in one transaction
and finishes each, with the error that sank it if any (``orch/store/sqlite.py``,
``orch/store/postgres.py``).
"""

from __future__ import annotations

import threading
from typing import Any

Statement = tuple[str, tuple[Any, ...]]


class Done:
    """``threading.Event`` for one setter, on a single lock held until set.

    Why: every acknowledged write is waited for, and an Event is Python code over a
    Condition that allocates a lock per wait. With 32 callers cycling tasks through
    the facade (A/B, same minute) this took the SQLite store from 2,214-2,687 to
    2,826-3,351 cycles/s (bench/README.md). Only the writer thread sets it.
    """

    __slots__ = ("_lock", "_set")

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lock.acquire()
        self._set = False

    def set(self) -> None:
        if not self._set:
            self._set = True
            self._lock.release()

    def is_set(self) -> bool:
        return self._set

    def wait(self, timeout: float | None = None) -> bool:
        if self._set:
            return True
        if self._lock.acquire(timeout=-1 if timeout is None else timeout):
            self._lock.release()  # the next waiter's turn
            return True
        return self._set


class Write:
    """One caller's write: statements that commit together, and how it ended."""

    __slots__ = ("counted", "done", "error", "rowcount", "statements")

    def __init__(self, statements: list[Statement], *, counted: bool) -> None:
        self.statements = statements
        self.counted = counted  # False for check()'s probe, which is not a caller's write
        self.done = Done()
        self.error: str | None = None
        self.rowcount = 0

    def apply(self, conn: Any) -> None:
        """Run the statements on ``conn`` (a DB-API connection with ``execute``)."""
        for sql, params in self.statements:
            self.rowcount = conn.execute(sql, params).rowcount

    def finish(self, error: str | None = None) -> None:
        self.error = error
        # The rows are not needed once it ended; a handle may be kept long after
        # (an agent's last start, until its next stored change).
        self.statements = []
        self.done.set()
