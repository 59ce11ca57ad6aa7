"""The PostgreSQL store's writer: one thread, one connection, group commit, and a
server that goes away and comes back.

Every write is a small job on the writer's queue; the writer puts whatever queued
meanwhile into one transaction (group commit). A batch of upserts, the common case,
is sent as one statement (a multi-row upsert per table), which autocommit makes a
transaction of its own: one round trip per group of writes.

The server may go away (a restart, a failover of a managed database, a network
cut). The writer then keeps every write it holds, reconnects, and commits them once
the server is back; a write still not committed by its deadline (``wait_s`` after it
was queued) fails. A commit whose answer was lost with the connection is sent again:
every write is an upsert or a delete, so applying one twice leaves what applying it
once does. Nothing acknowledged is lost, because nothing is acknowledged before the
server answered its COMMIT.

One failed write does not sink the others grouped with it: a write the server
refuses for its own values (a data or constraint error) is failed alone and the rest
committed; anything else (a lock not granted in time, a full disk) fails the batch.

Reads go through a connection of their own (``PostgresReader``), so that a point
read while serving never waits behind a commit.
"""

from __future__ import annotations

import bisect
import contextlib
import itertools
import queue
import threading
import time
from typing import Any

import psycopg

from orch.errors import StoreError
from orch.store.base import CommitListeners, StoreStats
from orch.store.postgres_schema import connect, describe
from orch.store.writes import Statement, Write

#: Most writes one transaction takes, so a flood cannot hold row locks for long.
MAX_BATCH_WRITES = 512
#: Upper bounds (seconds) of the commit-duration histogram ``stats`` reports.
COMMIT_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
#: Pauses between attempts to reconnect: from the first to the last, doubling.
RECONNECT_PAUSE_S = (0.05, 0.5)
#: SQLSTATE classes of errors caused by one write's own values: data exception,
#: integrity constraint violation, syntax error or access rule violation. Any other
#: error (a lock not granted, resources, an operator's intervention) is nobody's fault
#: in particular and fails the whole transaction.
_CULPRIT_CLASSES = ("22", "23", "42")
#: SQLSTATE classes that mean the session is gone: connection exception, operator
#: intervention (the server shutting down), system error.
_LOST_CLASSES = ("08", "57P", "58")

_STOP = object()  # queued by close(): the writer finishes what is ahead of it, then exits
_WRITER_LIVENESS_CHECK_S = 1.0

PUT_TASK = (
    "INSERT INTO tasks (key, seq, state, updated_at, data) VALUES (%s, %s, %s, %s, %s)"
    " ON CONFLICT (key) DO UPDATE SET seq = excluded.seq, state = excluded.state,"
    " updated_at = excluded.updated_at, data = excluded.data"
)
PUT_AGENT = (
    "INSERT INTO agents (agent_id, data) VALUES (%s, %s)"
    " ON CONFLICT (agent_id) DO UPDATE SET data = excluded.data"
)
PUT_CREDENTIAL = (
    "INSERT INTO credentials (agent_id, token_hash) VALUES (%s, %s)"
    " ON CONFLICT (agent_id) DO UPDATE SET token_hash = excluded.token_hash"
)


def _split_values(sql: str) -> tuple[str, str, str, int]:
    """``INSERT ... VALUES (%s, %s) ON ...`` -> (head, ``(%s, %s)``, tail, columns)."""
    head, _, rest = sql.partition(" VALUES ")
    row = rest[: rest.index(")") + 1]
    return f"{head} VALUES ", row, rest[len(row) :], row.count("%s")


#: Upserts a batch may merge into one multi-row statement; each keyed by its first value.
_MERGEABLE = {sql: _split_values(sql) for sql in (PUT_TASK, PUT_AGENT, PUT_CREDENTIAL)}


class _ConnectionLost(Exception):
    """The session ended under a transaction: its outcome is for the writer to retry."""


class QueuedWrite(Write):
    """A ``Write`` that knows until when it may wait for the server to come back."""

    __slots__ = ("deadline",)

    def __init__(self, statements: list[Statement], *, counted: bool, wait_s: float) -> None:
        super().__init__(statements, counted=counted)
        self.deadline = time.monotonic() + wait_s


class PostgresWriter:
    """The thread that owns the store's connection and commits its writes in groups.

    Takes over ``conn`` (open, schema migrated) and reconnects with ``options`` to
    ``url`` when it is lost. ``where`` names the server in messages (no password).
    """

    def __init__(
        self,
        conn: psycopg.Connection[Any],
        url: str,
        options: dict[str, Any],
        where: str,
        listeners: CommitListeners,
    ) -> None:
        self._conn: psycopg.Connection[Any] | None = conn
        self._url = url
        self._options = options
        self._where = where
        self._listeners = listeners
        self.writes = 0
        self.commits = 0
        self.failed_writes = 0
        self._commit_counts = [0] * (len(COMMIT_BUCKETS_S) + 1)
        self._commit_seconds = 0.0
        # Why the server is unreachable, and since when (monotonic); None while it is not.
        self._lost: tuple[str, float] | None = None
        self._conn_lock = threading.Lock()  # held by the writer per transaction, by close
        self._closing_lock = threading.Lock()  # makes "not closed, so enqueue" atomic
        self._closed = False
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._held = 0  # writes the writer holds while the server is unreachable
        self._thread = threading.Thread(target=self._run, name="orch-store-writer", daemon=True)
        self._thread.start()

    # ------------------------------------------------------------- for the store

    @property
    def closed(self) -> bool:
        return self._closed

    def alive(self) -> bool:
        return self._thread.is_alive()

    def unreachable(self) -> str | None:
        """Why the server is known to be unreachable right now, or None."""
        lost = self._lost
        return None if lost is None else self._unreachable(lost)

    def submit(self, write: QueuedWrite) -> None:
        """Queue ``write``; ``StoreError`` if the writer was closed."""
        with self._closing_lock:
            if self._closed:
                raise StoreError("store is closed")
            self._queue.put(write)

    def refused(self) -> None:
        """Count a write refused before it was queued."""
        self.failed_writes += 1

    def wait(self, write: Write) -> int:
        """Block until ``write`` ended; its row count, or ``StoreError`` if it failed."""
        # The writer never dies by design; should it anyway, fail instead of hanging.
        while not write.done.wait(_WRITER_LIVENESS_CHECK_S):
            if not self._thread.is_alive() and not write.done.is_set():
                raise StoreError("store write failed: the store writer thread has stopped")
        if write.error is not None:
            raise StoreError(f"store write failed: {write.error}")
        return write.rowcount

    def stats(self) -> StoreStats:
        """Counters for ``/metrics``: writes, commits (so group size), failures, commit
        durations and the writes waiting (queued, or held while the server is away)."""
        counts = list(self._commit_counts)  # one reading, so buckets and count agree
        cumulative = list(zip(COMMIT_BUCKETS_S, itertools.accumulate(counts), strict=False))
        return {
            "writes": self.writes,
            "commits": self.commits,
            "failed_writes": self.failed_writes,
            "queued_writes": self._queue.qsize() + self._held,
            "commit_seconds": {
                "buckets": cumulative,
                "count": sum(counts),
                "sum": self._commit_seconds,
            },
        }

    def close(self) -> None:
        """End every queued write, stop the thread and close the connection. Idempotent."""
        with self._closing_lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(_STOP)
        self._thread.join()
        with self._conn_lock:
            if self._conn is not None:
                with contextlib.suppress(psycopg.Error):
                    self._conn.close()
                self._conn = None

    def _unreachable(self, lost: tuple[str, float]) -> str:
        reason, since = lost
        return (
            f"store unavailable: PostgreSQL at {self._where} unreachable for"
            f" {time.monotonic() - since:.1f}s ({reason})"
        )

    # ------------------------------------------------------------------ the thread

    def _run(self) -> None:
        """The writer thread: take whatever is queued, commit it as one transaction."""
        held: list[QueuedWrite] = []  # writes kept across a lost connection, in order
        stopping = False
        while True:
            if not held:
                try:
                    # While the server is away, try it again now and then even with
                    # nothing to write, so that check() sees it back.
                    first = self._queue.get(timeout=None if self._lost is None else 0.5)
                except queue.Empty:
                    self._connect_again()
                    continue
                if first is _STOP:
                    return
                held = [first]
            stopping = self._take_queued(held, MAX_BATCH_WRITES) or stopping
            batch, held = held[:MAX_BATCH_WRITES], held[MAX_BATCH_WRITES:]
            started = time.perf_counter()
            try:
                kept = self._commit(batch)
            except Exception as exc:  # a bug here must neither kill the writer nor hang callers
                kept = []
                for write in batch:
                    if not write.done.is_set():
                        self._fail(write, describe(exc))
            took = time.perf_counter() - started
            self._commit_counts[bisect.bisect_left(COMMIT_BUCKETS_S, took)] += 1
            self._commit_seconds += took
            self._listeners.notify()
            if kept:
                # The server went away under them: wait for it, holding everything
                # queued meanwhile too, each write until its own deadline.
                held = kept + held
                stopping = self._reconnect(held) or stopping
                self._listeners.notify()
            self._held = len(held)
            if stopping and not held:
                return

    def _take_queued(self, into: list[QueuedWrite], limit: int | None) -> bool:
        """Move queued writes into ``into`` (up to ``limit`` held); True if close() asked."""
        while limit is None or len(into) < limit:
            try:
                item = self._queue.get_nowait()
            except queue.Empty:
                return False
            if item is _STOP:
                return True
            into.append(item)
        return False

    def _reconnect(self, held: list[QueuedWrite]) -> bool:
        """Connect again, failing each held write whose deadline passes first.

        Returns whether close() asked to stop meanwhile; ``held`` is what is left
        to commit (empty if every write ran out of time).
        """
        stopping = False
        pause = RECONNECT_PAUSE_S[0]
        while held:
            self._held = len(held)
            if self._connect_again():
                return stopping
            stopping = self._take_queued(held, None) or stopping
            now = time.monotonic()
            timed_out = [write for write in held if write.deadline <= now]
            if timed_out:
                reason = self._unreachable(self._lost) if self._lost else "server unreachable"
                for write in timed_out:
                    self._fail(write, reason)
                held[:] = [write for write in held if not write.done.is_set()]
                self._listeners.notify()
            if held:
                nearest = min(write.deadline for write in held)
                time.sleep(max(0.0, min(pause, nearest - time.monotonic())))
                pause = min(pause * 2, RECONNECT_PAUSE_S[1])
        return stopping

    def _connect_again(self) -> bool:
        """One attempt to reach the server; True (and no longer lost) if it answered."""
        try:
            conn = connect(self._url, **self._options)
        except psycopg.Error as exc:
            self._lost = (describe(exc), self._lost[1] if self._lost else time.monotonic())
            return False
        with self._conn_lock:
            self._conn = conn
        self._lost = None
        return True

    def _commit(self, batch: list[QueuedWrite]) -> list[QueuedWrite]:
        """Commit ``batch`` in one transaction; a write that fails is dropped from it alone.

        Returns the writes left uncommitted because the connection was lost (all of
        ``pending`` then: the server may or may not have committed them, and they
        are sent again once it is back).
        """
        pending = batch
        while pending:
            try:
                with self._conn_lock:
                    culprit, error = self._attempt(pending)
            except _ConnectionLost:
                return pending
            if error is None:
                self.commits += 1
                self.writes += sum(write.counted for write in pending)
                for write in pending:
                    write.finish()
                return []
            if culprit is None:
                for write in pending:
                    self._fail(write, error)
                return []
            self._fail(culprit, error)
            pending = [write for write in pending if write is not culprit]
        return []

    def _fail(self, write: Write, error: str) -> None:
        self.failed_writes += write.counted
        write.finish(error)

    def _attempt(self, pending: list[QueuedWrite]) -> tuple[Write | None, str | None]:
        """One transaction over ``pending``: ``(None, None)`` if it committed, else who
        failed (``None`` if no write in particular) and why; rolled back on failure.

        Raises ``_ConnectionLost`` if the session ended before the outcome was known.
        """
        conn = self._conn
        if conn is None or conn.closed:
            self._lost = ("not connected", time.monotonic())
            raise _ConnectionLost
        merged = _merged(pending)
        try:
            if merged is not None:
                conn.execute(*merged)  # autocommit: a transaction of its own
                for write in pending:
                    write.rowcount = 1
                return None, None
            # Anything else (deletes, grants, pruning: rarer) in one transaction.
            # Pipeline mode (one round trip for it all) was measured and gave nothing
            # distinguishable from noise (bench/README.md), so it is not used.
            with conn.transaction():
                cursors = [
                    (write, conn.execute(sql, params))
                    for write in pending
                    for sql, params in write.statements
                ]
            for write, cursor in cursors:
                write.rowcount = cursor.rowcount
            return None, None
        except psycopg.Error as exc:
            self._raise_if_lost(conn, exc)
            if not _culprit_error(exc):
                return None, describe(exc)
        # One write's own values sank it: find which, statement by statement.
        current: Write | None = None
        try:
            with conn.transaction():
                for current in pending:
                    current.apply(conn)
                current = None
        except psycopg.Error as exc:
            self._raise_if_lost(conn, exc)
            return (current if _culprit_error(exc) else None), describe(exc)
        return None, None

    def _raise_if_lost(self, conn: psycopg.Connection[Any], exc: psycopg.Error) -> None:
        sqlstate = getattr(exc, "sqlstate", None) or ""
        if conn.closed or conn.broken or sqlstate.startswith(_LOST_CLASSES):
            self._lost = (describe(exc), time.monotonic())
            with contextlib.suppress(psycopg.Error):
                conn.close()
            raise _ConnectionLost from exc


def _culprit_error(exc: psycopg.Error) -> bool:
    """True if ``exc`` was caused by one write's values (a client-side one included)."""
    sqlstate = getattr(exc, "sqlstate", None)
    if sqlstate is None:
        # Refused by psycopg before the server saw it: a value it cannot send.
        return isinstance(exc, psycopg.DataError | psycopg.ProgrammingError)
    return sqlstate.startswith(_CULPRIT_CLASSES)


def _merged(pending: list[QueuedWrite]) -> Statement | None:
    """The batch as one statement (a multi-row upsert per table, joined by a WITH), or
    None if it holds anything but mergeable upserts.

    Why: in a busy server every wait on the socket gives up the GIL and must win it
    back, which costs far more than the server's work; one statement in autocommit is
    one send and one answer, a transaction of its own, atomic and durable like any
    other (bench/README.md). Data-modifying WITH clauses all run, in one snapshot, so
    upserts into different tables commute as they do one by one. PostgreSQL refuses
    a statement that upserts one row twice, so a key written twice in the batch is
    sent once, with its last values, in the place of its first (so "in the order
    first stored" holds).
    """
    groups: dict[str, dict[Any, tuple[Any, ...]]] = {}
    for write in pending:
        for sql, params in write.statements:
            if sql not in _MERGEABLE:
                return None
            groups.setdefault(sql, {})[params[0]] = params
    parts: list[str] = []
    values: list[Any] = []
    for sql, rows in groups.items():
        head, row, tail, _ = _MERGEABLE[sql]
        parts.append(f"{head}{', '.join([row] * len(rows))}{tail}")
        values.extend(value for params in rows.values() for value in params)
    *first, last = parts
    joined = ", ".join(f"merged_{n} AS ({part})" for n, part in enumerate(first))
    return (f"WITH {joined} {last}" if first else last), tuple(values)


class PostgresReader:
    """The store's reads, on a connection of their own (MVCC: never behind a commit).

    Loads run at start-up and when actors rebuild; point reads (idempotent answers)
    while serving requests, from any thread, one at a time on the connection. A lost
    connection is opened again, for at most ``wait_s`` per read, as a write waits.
    """

    def __init__(self, url: str, options: dict[str, Any], where: str) -> None:
        self._url = url
        self._options = options
        self._where = where
        self._conn: psycopg.Connection[Any] | None = None
        self._lock = threading.Lock()
        self._closed = False

    def rows(self, sql: str, params: tuple[Any, ...], wait_s: float) -> list[Any]:
        """Rows of ``sql``; waits for an unreachable server up to ``wait_s``, then fails."""
        deadline = time.monotonic() + wait_s
        while True:
            with self._lock:
                if self._closed:
                    raise StoreError("store is closed")
                conn = self._conn
                try:
                    if conn is None or conn.closed:
                        conn = self._conn = connect(self._url, **self._options)
                    return conn.execute(sql, params).fetchall()  # type: ignore[arg-type]
                except psycopg.Error as exc:
                    sqlstate = getattr(exc, "sqlstate", None) or ""
                    lost = conn is None or conn.closed or conn.broken
                    if not (lost or sqlstate.startswith(_LOST_CLASSES)):
                        raise StoreError(f"store read failed: {describe(exc)}") from exc
                    if conn is not None:
                        with contextlib.suppress(psycopg.Error):
                            conn.close()
                    if time.monotonic() >= deadline:
                        raise StoreError(
                            f"store read failed: PostgreSQL at {self._where}"
                            f" unreachable ({describe(exc)})"
                        ) from exc
            time.sleep(RECONNECT_PAUSE_S[0])

    def close(self) -> None:
        """Close the connection; later reads raise ``StoreError("store is closed")``."""
        with self._lock:
            self._closed = True
            if self._conn is not None:
                with contextlib.suppress(psycopg.Error):
                    self._conn.close()
                self._conn = None
