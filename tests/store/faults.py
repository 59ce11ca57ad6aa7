"""Real failures of a SQLite store, for tests that need its commits to fail.

A lock held by another connection is what a stuck process does to the file: the
store accepts a write (the actor has applied it), then its commit fails with
SQLITE_BUSY, every commit does, reads go on (WAL), and the store recovers on its own
once the lock is let go. The same path as a full disk: nothing in particular was
wrong with any write, so the whole transaction fails.
"""

from __future__ import annotations

import sqlite3
from typing import Any

#: How long a store under test waits for a lock held elsewhere before failing the
#: write: short, so that real commit failures take milliseconds.
SQLITE_BUSY_TIMEOUT_S = 0.02


class LockedElsewhere:
    """Another connection holds the write lock of the file at ``path`` while ``on``.

    Open the store with ``busy_timeout_s=SQLITE_BUSY_TIMEOUT_S``, or each failing
    commit waits the store's full busy timeout first. Also a context manager (on
    inside it).
    """

    def __init__(self, path: str) -> None:
        self._path = path
        self._holder: sqlite3.Connection | None = None

    @property
    def on(self) -> bool:
        return self._holder is not None

    @on.setter
    def on(self, value: bool) -> None:
        if value and self._holder is None:
            holder = sqlite3.connect(self._path, isolation_level=None)
            holder.execute("BEGIN IMMEDIATE")  # waits for a commit under way, then holds
            self._holder = holder
        elif not value and self._holder is not None:
            holder, self._holder = self._holder, None
            try:
                holder.execute("ROLLBACK")
            finally:
                holder.close()

    def __enter__(self) -> None:
        self.on = True

    def __exit__(self, *exc_info: Any) -> None:
        self.on = False


class PostgresLockedElsewhere:
    """Another session holds every table of a PostgreSQL store locked while in the context.

    What a stuck migration or an operator's ``LOCK TABLE`` does: the store accepts a
    write, its commit waits ``lock_timeout`` and fails, every commit does, reads go
    on (EXCLUSIVE mode lets them), and the store recovers once the lock is let go.
    Open the store with ``lock_timeout_s=POSTGRES_LOCK_TIMEOUT_S``.
    """

    TABLES = (
        "agents",
        "credentials",
        "tasks",
        "grants",
        "fencing",
        "config_defaults",
        "intake_reservations",
        "store_probe",
        "idempotent_answers",
    )

    def __init__(self, url: str) -> None:
        self._url = url
        self._holder: Any = None

    def __enter__(self) -> None:
        import psycopg

        holder = psycopg.connect(self._url)  # a transaction open until __exit__
        holder.execute(f"LOCK TABLE {', '.join(self.TABLES)} IN EXCLUSIVE MODE")
        self._holder = holder

    def __exit__(self, *exc_info: Any) -> None:
        holder, self._holder = self._holder, None
        try:
            holder.rollback()
        finally:
            holder.close()


#: How long a PostgreSQL store under test waits for a lock held elsewhere.
POSTGRES_LOCK_TIMEOUT_S = 0.02
