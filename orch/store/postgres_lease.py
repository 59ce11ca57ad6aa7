"""Leadership of a cluster: a lease row in the shared database, and a session lock.

Every server started on one PostgreSQL database is a node; one of them, the leader,
runs the actors and answers writes. The lease is the one row of ``orch_leader``: the
holder, its epoch (one more per takeover), the URL it serves on, when the lease ends
(by the database server's clock, so the nodes' clocks need not agree) and the pid of
the holder's session.

A standby takes the lease over when it expired, or at once when the holder's session
has ended (its process died: the kernel closed its socket, the server ended its
backend): each node holds ``pg_try_advisory_lock`` on the connection it renews the
lease on, so a standby that obtains the lock while the lease row names a session that
no longer exists knows the holder is gone without waiting for the expiry.

The epoch is what fences a deposed leader: its store's writer connection says which
epoch it writes for (``-c orch.epoch=N``) and a trigger refuses any change once the
row holds another (``orch/store/postgres_schema.py``), in the same transaction, so a
leader that lost its lease (frozen, cut off) can never acknowledge a write.
"""

from __future__ import annotations

import contextlib
import threading
from dataclasses import dataclass
from typing import Any

import psycopg

from orch.errors import StoreError
from orch.store.postgres_schema import connect, describe, migrate, redact

#: The advisory lock every node tries to hold (any fixed 64-bit key; "orchlead").
LEADER_LOCK_KEY = 0x6F7263686C656164

_TAKE_OVER = (
    "UPDATE orch_leader SET holder = %(holder)s, url = %(url)s, epoch = epoch + 1,"
    " expires_at = clock_timestamp() + make_interval(secs => %(ttl)s),"
    " holder_pid = pg_backend_pid()"
    " WHERE id = 1 AND (holder IS NULL OR expires_at < clock_timestamp()"
    " OR (%(locked)s AND NOT EXISTS"
    "  (SELECT 1 FROM pg_stat_activity WHERE pid = orch_leader.holder_pid)))"
    " RETURNING epoch"
)
_RENEW = (
    "UPDATE orch_leader SET expires_at = clock_timestamp() + make_interval(secs => %(ttl)s),"
    " holder_pid = pg_backend_pid()"
    " WHERE id = 1 AND holder = %(holder)s AND epoch = %(epoch)s RETURNING epoch"
)
_RESIGN = (
    "UPDATE orch_leader SET holder = NULL, expires_at = NULL, holder_pid = NULL"
    " WHERE id = 1 AND holder = %(holder)s AND epoch = %(epoch)s"
)


@dataclass(frozen=True)
class Leader:
    """Who holds the lease as the database last said."""

    holder: str | None
    epoch: int
    url: str | None
    expired: bool


class LeaderLease:
    """One node's hold on the lease, on a connection of its own (not the store's).

    ``holder`` names this node (unique per process), ``url`` is where others reach it
    (``ORCH_ADVERTISE_URL``), ``ttl_s`` how long a lease lasts unrenewed. Methods are
    called from one thread (the node's); ``StoreError`` when the server cannot answer.
    """

    def __init__(self, db_url: str, holder: str, url: str, ttl_s: float) -> None:
        if ttl_s <= 0:
            raise ValueError(f"ttl_s must be positive, got {ttl_s!r}")
        self.holder = holder
        self.url = url
        self.ttl_s = ttl_s
        self.epoch: int | None = None  # ours while we lead
        self._db_url = db_url
        self._where = redact(db_url)
        self._conn: psycopg.Connection[Any] | None = None
        self._locked = False
        self._lock = threading.Lock()

    # ------------------------------------------------------------------ queries

    def try_lead(self) -> int | None:
        """Take the lease if it is free, expired or its holder's session is gone.

        Returns our new epoch, or None (another node leads).
        """
        with self._lock:
            conn = self._connection()
            try:
                self._hold_lock(conn)
                row = conn.execute(
                    _TAKE_OVER,
                    {
                        "holder": self.holder,
                        "url": self.url,
                        "ttl": self.ttl_s,
                        "locked": self._locked,
                    },
                ).fetchone()
                if row is None:
                    self._drop_lock(conn)  # leave it to whoever leads
                    return None
                self.epoch = int(row[0])
                return self.epoch
            except psycopg.Error as exc:
                raise self._lost(exc) from exc

    def renew(self) -> bool:
        """Extend our lease; False if it is not ours any more (someone took it over)."""
        with self._lock:
            if self.epoch is None:
                return False
            conn = self._connection()
            try:
                self._hold_lock(conn)
                row = conn.execute(
                    _RENEW, {"holder": self.holder, "epoch": self.epoch, "ttl": self.ttl_s}
                ).fetchone()
            except psycopg.Error as exc:
                raise self._lost(exc) from exc
            if row is None:
                self.epoch = None
                self._drop_lock(conn)
                return False
            return True

    def resign(self) -> None:
        """Give the lease up (stepping down or shutting down), so a standby need not wait."""
        with self._lock:
            epoch, self.epoch = self.epoch, None
            if epoch is None or self._conn is None:
                return
            with contextlib.suppress(psycopg.Error):
                self._conn.execute(_RESIGN, {"holder": self.holder, "epoch": epoch})
                self._drop_lock(self._conn)

    def leader(self) -> Leader:
        """The lease as the database holds it now."""
        with self._lock:
            conn = self._connection()
            try:
                row = conn.execute(
                    "SELECT holder, epoch, url,"
                    " expires_at IS NULL OR expires_at < clock_timestamp()"
                    " FROM orch_leader WHERE id = 1"
                ).fetchone()
            except psycopg.Error as exc:
                raise self._lost(exc) from exc
        assert row is not None  # the migration inserts it
        return Leader(row[0], int(row[1]), row[2], bool(row[3]))

    def close(self) -> None:
        """Resign if leading and close the connection (which frees the advisory lock)."""
        self.resign()
        with self._lock:
            if self._conn is not None:
                with contextlib.suppress(psycopg.Error):
                    self._conn.close()
                self._conn = None
                self._locked = False

    # ------------------------------------------------------------------ helpers

    def _connection(self) -> psycopg.Connection[Any]:
        if self._conn is None or self._conn.closed or self._conn.broken:
            self._locked = False
            try:
                conn = connect(
                    self._db_url,
                    connect_timeout=2,
                    application_name="june-orchestrator-lease",
                    # Never wait long on the lease row (a frozen leader's share lock is
                    # ended by its idle-in-transaction timeout): fail, look again.
                    options="-c lock_timeout=1000 -c statement_timeout=5000",
                    keepalives=1,
                    keepalives_idle=2,
                    keepalives_interval=1,
                    keepalives_count=2,
                )
            except psycopg.Error as exc:
                raise StoreError(f"cannot open store {self._where}: {describe(exc)}") from exc
            try:
                # The lease's table may be newer than the store's schema on this
                # database: bring it up (or refuse a newer one) before reading it.
                migrate(conn, self._db_url)
            except (psycopg.Error, StoreError) as exc:
                conn.close()
                if isinstance(exc, StoreError):
                    raise
                raise StoreError(f"cannot open store {self._where}: {describe(exc)}") from exc
            self._conn = conn
        return self._conn

    def _hold_lock(self, conn: psycopg.Connection[Any]) -> None:
        if not self._locked:
            row = conn.execute("SELECT pg_try_advisory_lock(%s)", (LEADER_LOCK_KEY,)).fetchone()
            self._locked = bool(row and row[0])

    def _drop_lock(self, conn: psycopg.Connection[Any]) -> None:
        if self._locked:
            with contextlib.suppress(psycopg.Error):
                conn.execute("SELECT pg_advisory_unlock(%s)", (LEADER_LOCK_KEY,))
            self._locked = False

    def _lost(self, exc: psycopg.Error) -> StoreError:
        if self._conn is not None:
            with contextlib.suppress(psycopg.Error):
                self._conn.close()
        self._conn = None
        self._locked = False
        return StoreError(
            f"store unavailable: PostgreSQL at {self._where} unreachable ({describe(exc)})"
        )
