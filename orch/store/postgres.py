"""The PostgreSQL store: acknowledged means committed on the server, and concurrent
writers share a commit.

The same promises as the SQLite store (``orch/store/sqlite.py``) over a database
server that several orchestrator nodes may share: one writer thread owns the
connection, every write is a small job on its queue, and the writer puts whatever
queued meanwhile into one transaction (group commit). A batch of upserts, the common
case, is sent as one statement (a multi-row upsert per table), which autocommit makes
a transaction of its own: one round trip per group of writes.

The server may go away (a restart, a failover of a managed database, a network
cut). The writer then keeps every write it holds, reconnects, and commits them once
the server is back; a write still not committed ``write_wait_s`` after it was queued
fails with ``StoreError`` (503 ``store_unavailable`` over HTTP, and the actors
rebuild from the store), and ``check`` fails at once while the server is known to be
unreachable, so ``/health`` says so. A commit whose answer was lost with the
connection is sent again: every write is an upsert or a delete, so applying one twice
leaves what applying it once does. Nothing acknowledged is lost, because nothing is
acknowledged before the server answered its COMMIT.

One failed write does not sink the others grouped with it: a write the server
refuses for its own values (a data or constraint error) is failed alone and the rest
committed; anything else (a lock not granted in time, a full disk) fails the batch.

The schema and its migrations live in ``orch/store/postgres_schema.py``.
"""

from __future__ import annotations

import bisect
import contextlib
import itertools
import queue
import threading
import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

import psycopg

from orch.errors import BackupError, StoreError
from orch.model import TERMINAL_TASK_STATES, AgentRecord, LockGrant, Task, TaskState
from orch.store import codec
from orch.store.base import BackupSummary, CommitListeners, StoreStats
from orch.store.postgres_schema import SCHEMA_VERSION, connect, describe, migrate, redact
from orch.store.writes import Statement, Write

#: Most writes one transaction takes, so a flood cannot hold row locks for long.
MAX_BATCH_WRITES = 512
#: Rows ``prune_tasks`` deletes per transaction, so pruning never stalls writers.
PRUNE_BATCH_ROWS = 500
#: Upper bounds (seconds) of the commit-duration histogram ``stats`` reports.
COMMIT_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)
#: How long ``check``'s probe may wait for its commit: the health check must answer.
CHECK_WAIT_S = 2.0
#: libpq's connect_timeout (whole seconds): one attempt to reach the server.
CONNECT_TIMEOUT_S = 2
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

Value = TypeVar("Value")

_STOP = object()  # queued by close(): the writer finishes what is ahead of it, then exits
_WRITER_LIVENESS_CHECK_S = 1.0

_PUT_TASK = (
    "INSERT INTO tasks (key, seq, state, updated_at, data) VALUES (%s, %s, %s, %s, %s)"
    " ON CONFLICT (key) DO UPDATE SET seq = excluded.seq, state = excluded.state,"
    " updated_at = excluded.updated_at, data = excluded.data"
)
_PUT_AGENT = (
    "INSERT INTO agents (agent_id, data) VALUES (%s, %s)"
    " ON CONFLICT (agent_id) DO UPDATE SET data = excluded.data"
)
_PUT_CREDENTIAL = (
    "INSERT INTO credentials (agent_id, token_hash) VALUES (%s, %s)"
    " ON CONFLICT (agent_id) DO UPDATE SET token_hash = excluded.token_hash"
)


def _split_values(sql: str) -> tuple[str, str, str, int]:
    """``INSERT ... VALUES (%s, %s) ON ...`` -> (head, ``(%s, %s)``, tail, columns)."""
    head, _, rest = sql.partition(" VALUES ")
    row = rest[: rest.index(")") + 1]
    return f"{head} VALUES ", row, rest[len(row) :], row.count("%s")


#: Upserts a batch may merge into one multi-row statement; each keyed by its first value.
_MERGEABLE = {sql: _split_values(sql) for sql in (_PUT_TASK, _PUT_AGENT, _PUT_CREDENTIAL)}


class _ConnectionLost(Exception):
    """The session ended under a transaction: its outcome is for the writer to retry."""


class _QueuedWrite(Write):
    """A ``Write`` that knows until when it may wait for the server to come back."""

    __slots__ = ("deadline",)

    def __init__(self, statements: list[Statement], *, counted: bool, wait_s: float) -> None:
        super().__init__(statements, counted=counted)
        self.deadline = time.monotonic() + wait_s


class PendingPostgresWrite:
    """A queued write; ``wait`` blocks until it committed (or failed)."""

    __slots__ = ("_store", "_write")

    def __init__(self, store: PostgresStore, write: _QueuedWrite) -> None:
        self._store = store
        self._write = write

    def wait(self) -> None:
        self._store._await(self._write)

    def done(self) -> bool:
        return self._write.done.is_set()

    def failed(self) -> bool:
        return self._write.done.is_set() and self._write.error is not None


class PostgresStore:
    """``Store`` in a PostgreSQL database, with group commit; see the module doc.

    ``url`` is a libpq URI (``postgresql://user:password@host:5432/dbname``).
    ``write_wait_s`` bounds how long a write waits for an unreachable server before it
    fails; ``lock_timeout_s`` how long a statement waits for a row or table lock held
    elsewhere. ``fail_writes`` (a reason string) makes every write fail without
    touching the database, as with the other stores.
    """

    def __init__(
        self, url: str, *, write_wait_s: float = 10.0, lock_timeout_s: float = 5.0
    ) -> None:
        """Connect, bring the schema to ``SCHEMA_VERSION`` and start the writer.

        Raises ``StoreError`` if the server cannot be reached or holds a newer schema.
        """
        if write_wait_s <= 0:
            raise ValueError(f"write_wait_s must be positive, got {write_wait_s!r}")
        self.url = url
        self.where = redact(url)
        self.write_wait_s = write_wait_s
        self.fail_writes: str | None = None
        self._options = {
            "connect_timeout": CONNECT_TIMEOUT_S,
            "options": f"-c lock_timeout={max(1, round(lock_timeout_s * 1000))}",
            "application_name": "june-orchestrator",
            # A server that vanished without closing the socket is noticed, not waited on.
            "keepalives": 1,
            "keepalives_idle": 5,
            "keepalives_interval": 2,
            "keepalives_count": 3,
        }
        self._listeners = CommitListeners()
        self.writes = 0
        self.commits = 0
        self.failed_writes = 0
        self._commit_counts = [0] * (len(COMMIT_BUCKETS_S) + 1)
        self._commit_seconds = 0.0
        try:
            self._conn: psycopg.Connection[Any] | None = connect(url, **self._options)
        except psycopg.Error as exc:
            raise StoreError(f"cannot open store {self.where}: {describe(exc)}") from exc
        try:
            migrate(self._conn, url)
        except psycopg.Error as exc:
            self._conn.close()
            raise StoreError(f"cannot open store {self.where}: {describe(exc)}") from exc
        except StoreError:
            self._conn.close()
            raise
        self.schema_version = SCHEMA_VERSION
        # Why the server is unreachable, and since when (monotonic); None while it is not.
        self._lost: tuple[str, float] | None = None
        self._conn_lock = threading.Lock()  # held by the writer per transaction, by reads
        self._closing_lock = threading.Lock()  # makes "not closed, so enqueue" atomic
        self._closed = False
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._held = 0  # writes the writer holds while the server is unreachable
        self._writer = threading.Thread(
            target=self._run_writer, name="orch-store-writer", daemon=True
        )
        self._writer.start()

    # ------------------------------------------------------------------ agents

    def put_agent(self, record: AgentRecord) -> None:
        """Store ``record`` under its id, replacing any earlier version."""
        self.put_agent_nowait(record).wait()

    def put_agent_nowait(self, record: AgentRecord) -> PendingPostgresWrite:
        """Queue the write of ``record``; the handle's ``wait`` returns once it is durable."""
        data = self._encode("agent", codec.encode_agent, record)
        return self._queue_write([(_PUT_AGENT, (record.agent_id, data))])

    def register_agent_nowait(self, record: AgentRecord, token_hash: str) -> PendingPostgresWrite:
        """Queue a new agent's record and credential as one write; see ``Store``."""
        data = self._encode("agent", codec.encode_agent, record)
        return self._queue_write(
            [
                (_PUT_CREDENTIAL, (record.agent_id, token_hash)),
                (_PUT_AGENT, (record.agent_id, data)),
            ]
        )

    def delete_agent(self, agent_id: str) -> None:
        """Forget an agent and its credential together (a missing one is no error)."""
        self._submit_all(
            [
                ("DELETE FROM agents WHERE agent_id = %s", (agent_id,)),
                ("DELETE FROM credentials WHERE agent_id = %s", (agent_id,)),
            ]
        )

    def load_agents(self) -> list[AgentRecord]:
        """Every stored agent, in the order they were first stored."""
        rows = self._read("SELECT agent_id, data FROM agents ORDER BY position")
        return self._decode_rows("agents", rows, codec.decode_agent)

    def put_credential(self, agent_id: str, token_hash: str) -> None:
        """Store the hash of an agent's token, replacing any earlier one."""
        self._submit_all([(_PUT_CREDENTIAL, (agent_id, token_hash))])

    def load_credentials(self) -> dict[str, str]:
        """Token hashes by agent id."""
        rows = self._read("SELECT agent_id, token_hash FROM credentials ORDER BY position")
        return dict(rows)

    # ------------------------------------------------------------------- tasks

    def put_task(self, task: Task) -> None:
        """Store ``task`` under its key, replacing any earlier version.

        ``updated_at`` (what retention pruning goes by) is when the task finished,
        or the time of this write for a task still under way.
        """
        self.put_task_nowait(task).wait()

    def put_task_nowait(self, task: Task) -> PendingPostgresWrite:
        """Queue the write of ``task``; the handle's ``wait`` returns once it is durable."""
        data = self._encode("task", codec.encode_task, task)
        updated_at = task.finished_at if task.finished_at is not None else time.time()
        return self._queue_write(
            [(_PUT_TASK, (task.key, task.seq, task.state.value, updated_at, data))]
        )

    def delete_task(self, key: str) -> None:
        """Forget a task (a missing one is no error)."""
        self._submit_all([("DELETE FROM tasks WHERE key = %s", (key,))])

    def load_tasks(self) -> list[Task]:
        """Every stored task in submission order (``seq``)."""
        rows = self._read("SELECT key, data FROM tasks ORDER BY seq, position")
        return self._decode_rows("tasks", rows, codec.decode_task)

    def prune_tasks(
        self, older_than_wall: float, states: Iterable[str] = TERMINAL_TASK_STATES
    ) -> int:
        """Delete tasks in ``states`` that last changed before ``older_than_wall``.

        Only terminal states may be named (``ValueError`` otherwise). Deletes in
        batches of ``PRUNE_BATCH_ROWS``, each its own turn at the writer.
        """
        chosen = sorted({TaskState(state) for state in states})
        live = [str(state) for state in chosen if state not in TERMINAL_TASK_STATES]
        if live:
            raise ValueError(f"only finished tasks can be pruned, not {', '.join(live)} ones")
        if not chosen:
            return 0
        sql = (
            "DELETE FROM tasks WHERE key IN (SELECT key FROM tasks"
            f" WHERE state = ANY(%s) AND updated_at < %s LIMIT {PRUNE_BATCH_ROWS})"
        )
        params = ([state.value for state in chosen], older_than_wall)
        removed = 0
        while True:
            deleted = self._submit_all([(sql, params)])
            removed += deleted
            if deleted < PRUNE_BATCH_ROWS:
                return removed

    # ------------------------------------------------------------------- locks

    def put_grant(self, grant: LockGrant) -> None:
        """Store a grant and raise the resource's fencing counter to its token, atomically.

        The counter never goes down, so tokens keep increasing across restarts even
        when an older grant is stored again.
        """
        data = self._encode("lock grant", codec.encode_grant, grant)
        token = grant.fencing_token
        self._submit_all(
            [
                (
                    "INSERT INTO grants (resource, agent_id, task_key, data)"
                    " VALUES (%s, %s, %s, %s) ON CONFLICT (resource, agent_id, task_key)"
                    " DO UPDATE SET data = excluded.data",
                    (grant.resource, grant.agent_id, grant.task_key or "", data),
                ),
                (
                    # Tokens start at 1; like MemoryStore, a token of 0 records no counter.
                    "INSERT INTO fencing (resource, counter) SELECT %s, %s WHERE %s > 0"
                    " ON CONFLICT (resource)"
                    " DO UPDATE SET counter = GREATEST(fencing.counter, excluded.counter)",
                    (grant.resource, token, token),
                ),
            ]
        )

    def delete_grant(self, grant: LockGrant) -> None:
        """Forget a grant; the fencing counter stays where it is."""
        self._submit_all(
            [
                (
                    "DELETE FROM grants WHERE resource = %s AND agent_id = %s AND task_key = %s",
                    (grant.resource, grant.agent_id, grant.task_key or ""),
                )
            ]
        )

    def load_grants(self) -> list[LockGrant]:
        """Every stored grant, in the order they were first stored."""
        rows = self._read("SELECT resource, data FROM grants ORDER BY position")
        return self._decode_rows("grants", rows, codec.decode_grant)

    def load_fencing_counters(self) -> dict[str, int]:
        """The highest fencing token ever stored, by resource."""
        return dict(self._read("SELECT resource, counter FROM fencing"))

    # ----------------------------------------------------------------- config

    def put_config_defaults(self, defaults: Mapping[str, Any]) -> None:
        """Replace the stored configuration defaults, whole."""
        data = self._encode("configuration", codec.encode, dict(defaults))
        self._submit_all(
            [
                (
                    "INSERT INTO config_defaults (id, data) VALUES (1, %s)"
                    " ON CONFLICT (id) DO UPDATE SET data = excluded.data",
                    (data,),
                )
            ]
        )

    def load_config_defaults(self) -> dict[str, Any]:
        """The stored configuration defaults (empty if none were ever stored)."""
        rows = self._read("SELECT 'defaults', data FROM config_defaults WHERE id = 1")
        found = self._decode_rows("config_defaults", rows, _decode_mapping)
        return found[0] if found else {}

    # ------------------------------------------------------------------ intake

    def put_reservation(self, todo_id: str, data: Mapping[str, Any]) -> None:
        """Store (or replace) the Intake's record of one TODO-service reservation."""
        encoded = self._encode("reservation", codec.encode, dict(data))
        self._submit_all(
            [
                (
                    "INSERT INTO intake_reservations (todo_id, data) VALUES (%s, %s)"
                    " ON CONFLICT (todo_id) DO UPDATE SET data = excluded.data",
                    (todo_id, encoded),
                )
            ]
        )

    def delete_reservation(self, todo_id: str) -> None:
        """Forget a reservation (a missing one is no error)."""
        self._submit_all([("DELETE FROM intake_reservations WHERE todo_id = %s", (todo_id,))])

    def load_reservations(self) -> dict[str, dict[str, Any]]:
        """Every stored reservation by TODO task id."""
        rows = self._read("SELECT todo_id, data FROM intake_reservations")
        return {todo_id: codec.decode(data.encode()) for todo_id, data in rows}

    # --------------------------------------------------------------- lifecycle

    def check(self) -> None:
        """Raise ``StoreError`` unless a write can commit right now.

        Fails at once while the server is known to be unreachable; otherwise proves
        it with a real (one-row) write through the writer, waiting ``CHECK_WAIT_S``
        at most.
        """
        if self.fail_writes is not None:
            raise StoreError(f"store failing: {self.fail_writes}")
        if self._closed:
            raise StoreError("store is closed")
        if not self._writer.is_alive():
            raise StoreError("store writer thread has stopped")
        lost = self._lost
        if lost is not None:
            raise StoreError(self._unreachable(lost))
        probe = (
            "INSERT INTO store_probe (id, checked_at) VALUES (1, %s)"
            " ON CONFLICT (id) DO UPDATE SET checked_at = excluded.checked_at"
        )
        write = _QueuedWrite(
            [(probe, (time.time(),))], counted=False, wait_s=min(CHECK_WAIT_S, self.write_wait_s)
        )
        self._enqueue(write)
        self._await(write)

    def add_commit_listener(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` on the writer thread after each transaction; see ``Store``."""
        self._listeners.add(callback)

    def remove_commit_listener(self, callback: Callable[[], None]) -> None:
        """Stop calling ``callback``; see ``Store``."""
        self._listeners.remove(callback)

    def backup(self, dest: str) -> BackupSummary:
        """Refused: a database server is backed up with its own tools; see ``Store``."""
        raise BackupError(
            f"the store is the PostgreSQL database {self.where}: back it up with"
            " pg_dump (README, 'PostgreSQL store'), not june-orchestrator backup"
        )

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
        """Commit what is queued, stop the writer and close the connection. Idempotent.

        With the server unreachable, queued writes wait for it as long as they may
        (``write_wait_s``) and then fail. Later writes and reads raise
        ``StoreError("store is closed")``.
        """
        with self._closing_lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(_STOP)
        self._writer.join()
        with self._conn_lock:
            if self._conn is not None:
                with contextlib.suppress(psycopg.Error):
                    self._conn.close()
                self._conn = None

    # ---------------------------------------------------------------- internals

    def _encode(self, what: str, encode: Callable[[Value], bytes], value: Value) -> str:
        # Encoding runs in the caller's thread, so a value JSON cannot hold fails
        # that caller alone, before anything reaches the database.
        try:
            return encode(value).decode()
        except (TypeError, ValueError, OverflowError) as exc:
            raise StoreError(f"store write failed: the {what} cannot be stored: {exc}") from exc

    def _queue_write(self, statements: list[Statement]) -> PendingPostgresWrite:
        if self.fail_writes is not None:
            self.failed_writes += 1
            raise StoreError(f"store write failed: {self.fail_writes}")
        write = _QueuedWrite(statements, counted=True, wait_s=self.write_wait_s)
        self._enqueue(write)
        return PendingPostgresWrite(self, write)

    def _submit_all(self, statements: list[Statement]) -> int:
        """Run ``statements`` as one write; return the last one's row count once durable."""
        pending = self._queue_write(statements)
        return self._await(pending._write)

    def _enqueue(self, write: _QueuedWrite) -> None:
        with self._closing_lock:
            if self._closed:
                raise StoreError("store is closed")
            self._queue.put(write)

    def _await(self, write: Write) -> int:
        # The writer never dies by design; should it anyway, fail instead of hanging.
        while not write.done.wait(_WRITER_LIVENESS_CHECK_S):
            if not self._writer.is_alive() and not write.done.is_set():
                raise StoreError("store write failed: the store writer thread has stopped")
        if write.error is not None:
            raise StoreError(f"store write failed: {write.error}")
        return write.rowcount

    def _unreachable(self, lost: tuple[str, float]) -> str:
        reason, since = lost
        return (
            f"store unavailable: PostgreSQL at {self.where} unreachable for"
            f" {time.monotonic() - since:.1f}s ({reason})"
        )

    # ------------------------------------------------------------------ writer

    def _run_writer(self) -> None:
        """The writer thread: take whatever is queued, commit it as one transaction."""
        held: list[_QueuedWrite] = []  # writes kept across a lost connection, in order
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

    def _take_queued(self, into: list[_QueuedWrite], limit: int | None) -> bool:
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

    def _reconnect(self, held: list[_QueuedWrite]) -> bool:
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
            conn = connect(self.url, **self._options)
        except psycopg.Error as exc:
            self._lost = (describe(exc), self._lost[1] if self._lost else time.monotonic())
            return False
        with self._conn_lock:
            if self._conn is not None and not self._conn.closed:
                conn.close()  # a read connected first; keep its connection
            else:
                self._conn = conn
        self._lost = None
        return True

    def _commit(self, batch: list[_QueuedWrite]) -> list[_QueuedWrite]:
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

    def _attempt(self, pending: list[_QueuedWrite]) -> tuple[Write | None, str | None]:
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

    # ------------------------------------------------------------------- reads

    def _read(self, sql: str) -> list[Any]:
        """Rows of ``sql``; waits for an unreachable server as a write does, then fails."""
        deadline = time.monotonic() + self.write_wait_s
        while True:
            with self._conn_lock:
                if self._closed:
                    raise StoreError("store is closed")
                conn = self._conn
                try:
                    if conn is None or conn.closed:
                        conn = self._conn = connect(self.url, **self._options)
                    return conn.execute(sql).fetchall()  # type: ignore[arg-type]  # fixed SQL
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
                            f"store read failed: PostgreSQL at {self.where}"
                            f" unreachable ({describe(exc)})"
                        ) from exc
            time.sleep(RECONNECT_PAUSE_S[0])

    def _decode_rows(
        self, table: str, rows: list[Any], decode: Callable[[str], Value]
    ) -> list[Value]:
        records = []
        for key, data in rows:
            try:
                records.append(decode(data))
            except (KeyError, TypeError, ValueError) as exc:  # msgspec.DecodeError included
                raise StoreError(
                    f"store read failed: {table} row {key!r} in {self.where} is not"
                    f" a valid record ({type(exc).__name__}: {exc})"
                ) from exc
        return records


def _culprit_error(exc: psycopg.Error) -> bool:
    """True if ``exc`` was caused by one write's values (a client-side one included)."""
    sqlstate = getattr(exc, "sqlstate", None)
    if sqlstate is None:
        # Refused by psycopg before the server saw it: a value it cannot send.
        return isinstance(exc, psycopg.DataError | psycopg.ProgrammingError)
    return sqlstate.startswith(_CULPRIT_CLASSES)


def _merged(pending: list[_QueuedWrite]) -> Statement | None:
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


def _decode_mapping(raw: str) -> dict[str, Any]:
    found = codec.decode(raw)
    if not isinstance(found, dict):
        raise TypeError(f"expected an object, found {type(found).__name__}")
    return found
