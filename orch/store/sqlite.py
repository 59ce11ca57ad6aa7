"""The SQLite store: acknowledged means on disk, and concurrent writers share a commit.

Acknowledged means stored (README, "Guarantees"): every change is stored before the
caller gets its answer, without paying one sync per request. So one writer thread owns
the connection and every write is a small job on its queue: the caller blocks until the transaction
holding its job has committed, and the writer puts everything that queued up meanwhile
into that same transaction (group commit). Under load, many writes share one sync;
alone, a write costs exactly one.

A write that fails raises ``StoreError`` and leaves the database as it was. One bad
write does not sink the others grouped with it: the writer rolls back, fails that
write alone, and commits the rest.

Reads are for start-up only (actors rebuild from them once), so they share the one
connection under a lock rather than paying for a second; that also lets ``:memory:``
databases, which exist per connection, work for tests.

The file's schema and migrations live in ``orch/store/sqlite_file.py``. This module
is longer than the house's ~500 lines because the writer (queue, batches, the
culprit retry, counters) and the table methods share one connection, lock and set
of counters; the seam to cut along when a second store needs group commit is
``_attempt``/``_attempt_merged``/``_rollback`` (SQLite's) against the rest (any
store's).
"""

from __future__ import annotations

import bisect
import contextlib
import itertools
import os
import queue
import sqlite3
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, TypeVar

from orch.errors import BackupError, StoreError
from orch.model import (
    TERMINAL_TASK_STATES,
    AgentRecord,
    IdempotentAnswer,
    LockGrant,
    Task,
    TaskState,
)
from orch.store import codec
from orch.store.backup import backup_connection, backup_database
from orch.store.base import BackupSummary, CommitListeners, StoreStats
from orch.store.sqlite_file import SCHEMA_VERSION, connect, describe

#: ``ORCH_DB_SYNC`` values and the ``PRAGMA synchronous`` level each selects. ``normal``
#: survives a process crash (``kill -9``) but may lose the last commits on power loss.
SYNC_MODES = {"full": "FULL", "normal": "NORMAL"}
#: Most writes one transaction takes, so a flood cannot hold the write lock for long.
MAX_BATCH_WRITES = 512
#: Rows ``prune_tasks`` deletes per transaction, so pruning never stalls writers.
PRUNE_BATCH_ROWS = 500
#: Upper bounds (seconds) of the commit-duration histogram ``stats`` reports.
COMMIT_BUCKETS_S = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5)

Statement = tuple[str, tuple[Any, ...]]
Value = TypeVar("Value")

_STOP = object()  # queued by close(): the writer finishes what is ahead of it, then exits
_WRITER_LIVENESS_CHECK_S = 1.0


class _Done:
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


class _Write:
    """One caller's write: statements that commit together, and how it ended."""

    __slots__ = ("counted", "done", "error", "rowcount", "statements")

    def __init__(self, statements: list[Statement], *, counted: bool) -> None:
        self.statements = statements
        self.counted = counted  # False for check()'s probe, which is not a caller's write
        self.done = _Done()
        self.error: str | None = None
        self.rowcount = 0

    def apply(self, conn: sqlite3.Connection) -> None:
        for sql, params in self.statements:
            self.rowcount = conn.execute(sql, params).rowcount

    def finish(self, error: str | None = None) -> None:
        self.error = error
        # The rows are not needed once it ended; a handle may be kept long after
        # (an agent's last start, until its next stored change).
        self.statements = []
        self.done.set()


_PUT_TASK = (
    "INSERT INTO tasks (key, seq, state, updated_at, data) VALUES (?, ?, ?, ?, ?)"
    " ON CONFLICT (key) DO UPDATE SET seq = excluded.seq, state = excluded.state,"
    " updated_at = excluded.updated_at, data = excluded.data"
)


_PUT_AGENT = (
    "INSERT INTO agents (agent_id, data) VALUES (?, ?)"
    " ON CONFLICT (agent_id) DO UPDATE SET data = excluded.data"
)
_PUT_CREDENTIAL = (
    "INSERT INTO credentials (agent_id, token_hash) VALUES (?, ?)"
    " ON CONFLICT (agent_id) DO UPDATE SET token_hash = excluded.token_hash"
)


def _split_values(sql: str) -> tuple[str, str, str]:
    """``INSERT ... VALUES (?, ?) ON ...`` -> (``INSERT ... VALUES ``, ``(?, ?)``, `` ON ...``)."""
    head, _, rest = sql.partition(" VALUES ")
    row = rest[: rest.index(")") + 1]
    return f"{head} VALUES ", row, rest[len(row) :]


#: Upserts a batch may merge into one multi-row statement (``_attempt_merged``).
_MERGEABLE = {sql: _split_values(sql) for sql in (_PUT_TASK, _PUT_AGENT, _PUT_CREDENTIAL)}


class PendingTaskWrite:
    """A queued write (a task's, or a registration's); ``wait`` blocks until it committed."""

    __slots__ = ("_store", "_write")

    def __init__(self, store: SQLiteStore, write: _Write) -> None:
        self._store = store
        self._write = write

    def wait(self) -> None:
        self._store._await(self._write)

    def done(self) -> bool:
        return self._write.done.is_set()

    def failed(self) -> bool:
        return self._write.done.is_set() and self._write.error is not None


class SQLiteStore:
    """``Store`` in one SQLite file (WAL mode), with group commit; see the module doc.

    ``fail_writes`` (a reason string) makes every write fail without touching the
    database, as with ``MemoryStore``. ``writes`` counts committed writes and
    ``commits`` the transactions that carried them, so ``writes / commits`` is the
    average group size.
    """

    def __init__(self, path: str, *, sync: str = "full", busy_timeout_s: float = 5.0) -> None:
        """Open (creating or migrating) the database at ``path`` and start the writer.

        Raises ``ValueError`` for an unknown ``sync`` and ``StoreError`` if the file
        cannot be opened or was written by a newer version of the orchestrator.
        """
        if sync not in SYNC_MODES:
            raise ValueError(f"ORCH_DB_SYNC must be 'full' or 'normal', got {sync!r}")
        self.path = path
        self.sync = sync
        self.fail_writes: str | None = None
        self._listeners = CommitListeners()
        self.writes = 0
        self.commits = 0
        self.failed_writes = 0
        # Commit durations by COMMIT_BUCKETS_S (the last slot: longer), and their sum.
        self._commit_counts = [0] * (len(COMMIT_BUCKETS_S) + 1)
        self._commit_seconds = 0.0
        self._conn = connect(path, SYNC_MODES[sync], busy_timeout_s)
        self.schema_version = SCHEMA_VERSION
        self._conn_lock = threading.Lock()  # held by the writer per transaction, by reads
        # Point reads while serving (idempotent answers) must not wait behind a commit:
        # a file has a connection of its own for them (WAL lets it read meanwhile);
        # ``:memory:`` exists only in the writer's, so it reads there.
        self._reader: sqlite3.Connection | None = None
        if path != ":memory:":
            try:
                self._reader = sqlite3.connect(
                    path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
                )
            except sqlite3.Error as exc:
                self._conn.close()
                raise StoreError(f"cannot open store {path!r}: {describe(exc)}") from exc
        self._reader_lock = threading.Lock()
        self._closing_lock = threading.Lock()  # makes "not closed, so enqueue" atomic
        self._closed = False
        self._queue: queue.SimpleQueue[Any] = queue.SimpleQueue()
        self._writer = threading.Thread(
            target=self._run_writer, name="orch-store-writer", daemon=True
        )
        self._writer.start()

    # ------------------------------------------------------------------ agents

    def put_agent(self, record: AgentRecord) -> None:
        """Store ``record`` under its id, replacing any earlier version."""
        data = self._encode("agent", codec.encode_agent, record)
        self._submit(_PUT_AGENT, (record.agent_id, data))

    def put_agent_nowait(self, record: AgentRecord) -> PendingTaskWrite:
        """Queue the write of ``record``; the handle's ``wait`` returns once it is durable."""
        data = self._encode("agent", codec.encode_agent, record)
        self._refuse_if_failing()
        write = _Write([(_PUT_AGENT, (record.agent_id, data))], counted=True)
        self._enqueue(write)
        return PendingTaskWrite(self, write)

    def register_agent_nowait(self, record: AgentRecord, token_hash: str) -> PendingTaskWrite:
        """Queue a new agent's record and credential as one write; see ``Store``."""
        data = self._encode("agent", codec.encode_agent, record)
        self._refuse_if_failing()
        write = _Write(
            [
                (_PUT_CREDENTIAL, (record.agent_id, token_hash)),
                (_PUT_AGENT, (record.agent_id, data)),
            ],
            counted=True,
        )
        self._enqueue(write)
        return PendingTaskWrite(self, write)

    def delete_agent(self, agent_id: str) -> None:
        """Forget an agent and its credential together (a missing one is no error)."""
        self._submit_all(
            [
                ("DELETE FROM agents WHERE agent_id = ?", (agent_id,)),
                ("DELETE FROM credentials WHERE agent_id = ?", (agent_id,)),
            ]
        )

    def load_agents(self) -> list[AgentRecord]:
        """Every stored agent, in the order they were first stored."""
        rows = self._read("SELECT agent_id, data FROM agents ORDER BY rowid")
        return self._decode_rows("agents", rows, codec.decode_agent)

    def put_credential(self, agent_id: str, token_hash: str) -> None:
        """Store the hash of an agent's token, replacing any earlier one."""
        self._submit(_PUT_CREDENTIAL, (agent_id, token_hash))

    def load_credentials(self) -> dict[str, str]:
        """Token hashes by agent id."""
        rows = self._read("SELECT agent_id, token_hash FROM credentials ORDER BY rowid")
        return dict(rows)

    # ------------------------------------------------------------------- tasks

    def put_task(self, task: Task) -> None:
        """Store ``task`` under its key, replacing any earlier version.

        ``updated_at`` (what retention pruning goes by) is when the task finished,
        or the time of this write for a task still under way.
        """
        self.put_task_nowait(task).wait()

    def put_task_nowait(self, task: Task) -> PendingTaskWrite:
        """Queue the write of ``task``; the handle's ``wait`` returns once it is durable."""
        data = self._encode("task", codec.encode_task, task)
        updated_at = task.finished_at if task.finished_at is not None else time.time()
        self._refuse_if_failing()
        write = _Write(
            [(_PUT_TASK, (task.key, task.seq, task.state.value, updated_at, data))], counted=True
        )
        self._enqueue(write)
        return PendingTaskWrite(self, write)

    def delete_task(self, key: str) -> None:
        """Forget a task (a missing one is no error)."""
        self._submit("DELETE FROM tasks WHERE key = ?", (key,))

    def load_tasks(self) -> list[Task]:
        """Every stored task in submission order (``seq``)."""
        rows = self._read("SELECT key, data FROM tasks ORDER BY seq, rowid")
        return self._decode_rows("tasks", rows, codec.decode_task)

    def prune_tasks(
        self, older_than_wall: float, states: Iterable[str] = TERMINAL_TASK_STATES
    ) -> int:
        """Delete tasks in ``states`` that last changed before ``older_than_wall``.

        Only terminal states may be named (``ValueError`` otherwise): a pending or
        running task is an acknowledged promise, never garbage. Deletes in batches of
        ``PRUNE_BATCH_ROWS``, each its own turn at the writer, so other writes go
        between them. Returns how many tasks were deleted.
        """
        chosen = sorted({TaskState(state) for state in states})
        live = [str(state) for state in chosen if state not in TERMINAL_TASK_STATES]
        if live:
            raise ValueError(f"only finished tasks can be pruned, not {', '.join(live)} ones")
        if not chosen:
            return 0
        marks = ", ".join("?" * len(chosen))
        sql = (
            "DELETE FROM tasks WHERE key IN (SELECT key FROM tasks"
            f" WHERE state IN ({marks}) AND updated_at < ? LIMIT {PRUNE_BATCH_ROWS})"
        )
        params = (*(state.value for state in chosen), older_than_wall)
        removed = 0
        while True:
            deleted = self._submit(sql, params)
            removed += deleted
            if deleted < PRUNE_BATCH_ROWS:
                return removed

    # ------------------------------------------------------------------- locks

    def put_grant(self, grant: LockGrant) -> None:
        """Store a grant and raise the resource's fencing counter to its token, atomically.

        The counter never goes down, so tokens keep increasing across restarts even
        when an older grant is stored again (a renewal racing a newer grant).
        """
        data = self._encode("lock grant", codec.encode_grant, grant)
        token = grant.fencing_token
        self._submit_all(
            [
                (
                    "INSERT INTO grants (resource, agent_id, task_key, data)"
                    " VALUES (?, ?, ?, ?) ON CONFLICT (resource, agent_id, task_key)"
                    " DO UPDATE SET data = excluded.data",
                    (grant.resource, grant.agent_id, grant.task_key or "", data),
                ),
                (
                    # Tokens start at 1; like MemoryStore, a token of 0 records no counter.
                    "INSERT INTO fencing (resource, counter) SELECT ?, ? WHERE ? > 0"
                    " ON CONFLICT (resource)"
                    " DO UPDATE SET counter = max(counter, excluded.counter)",
                    (grant.resource, token, token),
                ),
            ]
        )

    def delete_grant(self, grant: LockGrant) -> None:
        """Forget a grant; the fencing counter stays where it is."""
        self._submit(
            "DELETE FROM grants WHERE resource = ? AND agent_id = ? AND task_key = ?",
            (grant.resource, grant.agent_id, grant.task_key or ""),
        )

    def load_grants(self) -> list[LockGrant]:
        """Every stored grant, in the order they were first stored."""
        rows = self._read("SELECT resource, data FROM grants ORDER BY rowid")
        return self._decode_rows("grants", rows, codec.decode_grant)

    def load_fencing_counters(self) -> dict[str, int]:
        """The highest fencing token ever stored, by resource."""
        return dict(self._read("SELECT resource, counter FROM fencing ORDER BY rowid"))

    # ------------------------------------------------------------------ config

    def put_config_defaults(self, defaults: Mapping[str, Any]) -> None:
        """Replace the stored configuration defaults."""
        data = self._encode("config defaults", codec.encode, dict(defaults))
        self._submit(
            "INSERT INTO config_defaults (id, data) VALUES (1, ?)"
            " ON CONFLICT (id) DO UPDATE SET data = excluded.data",
            (data,),
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
        self._submit(
            "INSERT INTO intake_reservations (todo_id, data) VALUES (?, ?)"
            " ON CONFLICT (todo_id) DO UPDATE SET data = excluded.data",
            (todo_id, encoded),
        )

    def delete_reservation(self, todo_id: str) -> None:
        """Forget a reservation (a missing one is no error)."""
        self._submit("DELETE FROM intake_reservations WHERE todo_id = ?", (todo_id,))

    def load_reservations(self) -> dict[str, dict[str, Any]]:
        """Every stored reservation by TODO task id."""
        rows = self._read("SELECT todo_id, data FROM intake_reservations")
        return {todo_id: codec.decode(data.encode()) for todo_id, data in rows}

    # ------------------------------------------------------ idempotent answers

    def put_idempotent_answer(self, answer: IdempotentAnswer) -> None:
        """Store the answer under its scope and key, replacing any earlier one."""
        headers = self._encode("answer's headers", codec.encode, [list(h) for h in answer.headers])
        self._submit(
            "INSERT INTO idempotent_answers (scope, key, fingerprint, status, headers, body,"
            " created_at, expires_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
            " ON CONFLICT (scope, key) DO UPDATE SET fingerprint = excluded.fingerprint,"
            " status = excluded.status, headers = excluded.headers, body = excluded.body,"
            " created_at = excluded.created_at, expires_at = excluded.expires_at",
            (
                answer.scope,
                answer.key,
                answer.fingerprint,
                answer.status,
                headers,
                bytes(answer.body),
                answer.created_at,
                answer.expires_at,
            ),
        )

    def load_idempotent_answer(self, scope: str, key: str) -> IdempotentAnswer | None:
        """The answer stored under ``(scope, key)`` (its primary key), or None."""
        rows = self._point_read(
            "SELECT fingerprint, status, headers, body, created_at, expires_at"
            " FROM idempotent_answers WHERE scope = ? AND key = ?",
            (scope, key),
        )
        if not rows:
            return None
        fingerprint, status, headers, body, created_at, expires_at = rows[0]
        try:
            pairs = tuple((str(name), str(value)) for name, value in codec.decode(headers))
        except (TypeError, ValueError) as exc:  # msgspec.DecodeError included
            raise StoreError(
                f"store read failed: idempotent answer {key!r} in {self.path!r} is not"
                f" a valid record ({type(exc).__name__}: {exc})"
            ) from exc
        return IdempotentAnswer(
            scope, key, fingerprint, status, pairs, bytes(body), created_at, expires_at
        )

    def prune_idempotent_answers(self, expired_before_wall: float) -> int:
        """Delete answers that expired before the cutoff, ``PRUNE_BATCH_ROWS`` a turn."""
        sql = (
            "DELETE FROM idempotent_answers WHERE rowid IN (SELECT rowid FROM"
            f" idempotent_answers WHERE expires_at < ? LIMIT {PRUNE_BATCH_ROWS})"
        )
        removed = 0
        while True:
            deleted = self._submit(sql, (expired_before_wall,))
            removed += deleted
            if deleted < PRUNE_BATCH_ROWS:
                return removed

    # --------------------------------------------------------------- lifecycle

    def check(self) -> None:
        """Raise ``StoreError`` unless a write can commit right now.

        Proves it with a real (one-row) write through the writer, which shares a
        commit with whatever else is being written.
        """
        if self.fail_writes is not None:
            raise StoreError(f"store failing: {self.fail_writes}")
        if self._closed:
            raise StoreError("store is closed")
        if not self._writer.is_alive():
            raise StoreError("store writer thread has stopped")
        probe = (
            "INSERT INTO store_probe (id, checked_at) VALUES (1, ?)"
            " ON CONFLICT (id) DO UPDATE SET checked_at = excluded.checked_at"
        )
        self._wait_for(_Write([(probe, (time.time(),))], counted=False))

    def add_commit_listener(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` on the writer thread after each transaction; see ``Store``."""
        self._listeners.add(callback)

    def remove_commit_listener(self, callback: Callable[[], None]) -> None:
        """Stop calling ``callback``; see ``Store``."""
        self._listeners.remove(callback)

    def backup(self, dest: str) -> BackupSummary:
        """SQLite's online backup of this store to the new file ``dest``; see ``Store``.

        A file is read through a connection of its own, exactly as
        ``june-orchestrator backup`` reads it from another process, so the writer
        goes on committing meanwhile. A ``:memory:`` database exists only in this
        store's connection: it is copied from there, holding the writer for as long.
        """
        if self._closed:
            raise BackupError("store is closed")
        if self.path != ":memory:":
            return backup_database(self.path, dest)
        with self._conn_lock:
            if self._closed:
                raise BackupError("store is closed")
            return backup_connection(self._conn, self.path, dest)

    def stats(self) -> StoreStats:
        """Counters for ``/metrics``: writes, commits (so group size), failures, commit
        durations, the queue, and the database's size on disk (file and WAL)."""
        counts = list(self._commit_counts)  # one reading, so buckets and count agree
        cumulative = list(zip(COMMIT_BUCKETS_S, itertools.accumulate(counts), strict=False))
        size = 0
        if self.path != ":memory:":
            for suffix in ("", "-wal"):
                with contextlib.suppress(OSError):
                    size += os.path.getsize(self.path + suffix)
        return {
            "writes": self.writes,
            "commits": self.commits,
            "failed_writes": self.failed_writes,
            "queued_writes": self._queue.qsize(),
            "commit_seconds": {
                "buckets": cumulative,
                "count": sum(counts),
                "sum": self._commit_seconds,
            },
            "bytes": size,
        }

    @contextlib.contextmanager
    def commits_held(self) -> Iterator[None]:
        """Hold back every commit while the context lasts, as a stalled disk would.

        Writes queue and their callers wait; what queued meanwhile commits as one group
        once it ends. Reads wait too (they share the connection). For drills and tests
        of whatever waits on a commit (answers held for their writes, group commit);
        nothing in the orchestrator holds it.
        """
        with self._conn_lock:
            yield

    def trace(self, callback: Callable[[str], None] | None) -> None:
        """Call ``callback`` with every SQL statement the store runs from now on; None stops.

        For reading what a workload costs SQLite statement by statement, as the
        profiles in bench/README.md were read. It runs on the writer's thread, inside
        its transaction: keep it short.
        """
        self._conn.set_trace_callback(callback)

    def close(self) -> None:
        """Commit what is queued, stop the writer and close the database. Idempotent.

        Later writes and reads raise ``StoreError("store is closed")``.
        """
        with self._closing_lock:
            if self._closed:
                return
            self._closed = True
            self._queue.put(_STOP)
        self._writer.join()
        # Nothing is left to lose if closing fails: every write has been answered.
        with self._conn_lock, contextlib.suppress(sqlite3.Error):
            self._conn.close()
        if self._reader is not None:
            with self._reader_lock, contextlib.suppress(sqlite3.Error):
                self._reader.close()

    # ---------------------------------------------------------------- internals

    def _encode(self, what: str, encode: Callable[[Value], bytes], value: Value) -> str:
        # Encoding runs in the caller's thread, so a value JSON cannot hold fails
        # that caller alone, before anything reaches the database.
        try:
            return encode(value).decode()
        except (TypeError, ValueError, OverflowError) as exc:
            raise StoreError(f"store write failed: the {what} cannot be stored: {exc}") from exc

    def _refuse_if_failing(self) -> None:
        if self.fail_writes is not None:
            self.failed_writes += 1
            raise StoreError(f"store write failed: {self.fail_writes}")

    def _submit(self, sql: str, params: tuple[Any, ...]) -> int:
        return self._submit_all([(sql, params)])

    def _submit_all(self, statements: list[Statement]) -> int:
        """Run ``statements`` as one write; return the last one's row count once durable."""
        self._refuse_if_failing()
        return self._wait_for(_Write(statements, counted=True))

    def _wait_for(self, write: _Write) -> int:
        self._enqueue(write)
        return self._await(write)

    def _enqueue(self, write: _Write) -> None:
        with self._closing_lock:
            if self._closed:
                raise StoreError("store is closed")
            self._queue.put(write)

    def _await(self, write: _Write) -> int:
        # The writer never dies by design; should it anyway, fail instead of hanging.
        while not write.done.wait(_WRITER_LIVENESS_CHECK_S):
            if not self._writer.is_alive() and not write.done.is_set():
                raise StoreError("store write failed: the store writer thread has stopped")
        if write.error is not None:
            raise StoreError(f"store write failed: {write.error}")
        return write.rowcount

    def _run_writer(self) -> None:
        """The writer thread: take whatever is queued, commit it as one transaction."""
        while True:
            first = self._queue.get()
            if first is _STOP:
                return
            batch = [first]
            stopping = False
            while len(batch) < MAX_BATCH_WRITES:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is _STOP:
                    stopping = True
                    break
                batch.append(item)
            started = time.perf_counter()
            try:
                self._commit(batch)
            except Exception as exc:  # a bug here must neither kill the writer nor hang callers
                for write in batch:
                    if not write.done.is_set():
                        self._fail(write, describe(exc))
            took = time.perf_counter() - started
            self._commit_counts[bisect.bisect_left(COMMIT_BUCKETS_S, took)] += 1
            self._commit_seconds += took
            self._listeners.notify()
            if stopping:
                return

    def _commit(self, batch: list[_Write]) -> None:
        """Commit ``batch`` in one transaction; a write that fails is dropped from it alone."""
        pending = batch
        while pending:
            with self._conn_lock:
                culprit, error = self._attempt(pending)
            if error is None:
                self.commits += 1
                self.writes += sum(write.counted for write in pending)
                for write in pending:
                    write.finish()
                return
            if culprit is None:
                # BEGIN or COMMIT failed (locked, disk full, I/O): nobody's fault in
                # particular, and nothing was written, so every write in it fails.
                for write in pending:
                    self._fail(write, error)
                return
            self._fail(culprit, error)
            pending = [write for write in pending if write is not culprit]

    def _fail(self, write: _Write, error: str) -> None:
        self.failed_writes += write.counted
        write.finish(error)

    def _attempt(self, pending: list[_Write]) -> tuple[_Write | None, str | None]:
        """One transaction over ``pending``: ``(None, None)`` if it committed, else who
        failed (``None`` if no write in particular) and why; rolled back on failure."""
        if self._attempt_merged(pending):
            return None, None
        conn = self._conn
        if conn.in_transaction:  # a ROLLBACK that failed last time; start clean
            self._rollback()
        try:
            conn.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            return None, describe(exc)
        current: _Write | None = None
        try:
            for current in pending:
                current.apply(conn)
            current = None
            conn.execute("COMMIT")
        except Exception as exc:  # sqlite3.Error, or OverflowError/ValueError binding a value
            self._rollback()
            return current, describe(exc)
        return None, None

    def _attempt_merged(self, pending: list[_Write]) -> bool:
        """Commit a batch of upserts as one multi-row statement per table; False if it
        cannot (other statements, or any error: rolled back, and the caller commits the
        batch statement by statement, which finds the culprit).

        Why: every call into SQLite releases the GIL and must win it back, and in a
        busy server each win cost milliseconds, far more than the statement (profile
        of 3,000 registrations over HTTP: BEGIN 2.4 ms, each INSERT 0.4 ms, COMMIT
        2.4 ms on average, for microseconds of work; bench/README.md). Upserts into
        different tables commute and rows of one statement apply in order, so the
        result is that of running the writes one by one.

        A batch that merges into a single statement (all task writes: the common
        case) runs without BEGIN and COMMIT: in autocommit mode one statement is a
        transaction of its own, atomic and synced like any other, and that is two GIL
        round trips fewer. In the HTTP task cycle (A/B, same minute) commits took
        1.9 ms instead of 3.1 ms on average and cycles ran 12% faster.
        """
        groups: dict[str, list[Any]] = {}
        for write in pending:
            for sql, params in write.statements:
                if sql not in _MERGEABLE:
                    return False
                groups.setdefault(sql, []).extend(params)
        conn = self._conn
        if conn.in_transaction:
            return False
        statements = []
        for sql, params in groups.items():
            head, row, tail = _MERGEABLE[sql]
            rows = len(params) // row.count("?")
            statements.append((f"{head}{', '.join([row] * rows)}{tail}", params))
        try:
            if len(statements) == 1:
                conn.execute(*statements[0])  # a failed statement leaves nothing behind
            else:
                conn.execute("BEGIN IMMEDIATE")
                for statement in statements:
                    conn.execute(*statement)
                conn.execute("COMMIT")
        except Exception:  # the one-by-one path finds and reports what failed
            self._rollback()
            return False
        for write in pending:
            write.rowcount = 1
        return True

    def _rollback(self) -> None:
        try:
            if self._conn.in_transaction:
                self._conn.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # _attempt retries the rollback before its next transaction

    def _read(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        with self._conn_lock:
            if self._closed:
                raise StoreError("store is closed")
            try:
                return self._conn.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise StoreError(f"store read failed: {describe(exc)}") from exc

    def _point_read(self, sql: str, params: tuple[Any, ...]) -> list[Any]:
        """A read on the reader's connection (see ``__init__``), else as ``_read``."""
        if self._reader is None:
            return self._read(sql, params)
        with self._reader_lock:
            if self._closed:
                raise StoreError("store is closed")
            try:
                return self._reader.execute(sql, params).fetchall()
            except sqlite3.Error as exc:
                raise StoreError(f"store read failed: {describe(exc)}") from exc

    def _decode_rows(
        self, table: str, rows: list[Any], decode: Callable[[str], Value]
    ) -> list[Value]:
        records = []
        for key, data in rows:
            try:
                records.append(decode(data))
            except (KeyError, TypeError, ValueError) as exc:  # msgspec.DecodeError included
                raise StoreError(
                    f"store read failed: {table} row {key!r} in {self.path!r} is not"
                    f" a valid record ({type(exc).__name__}: {exc})"
                ) from exc
        return records


def _decode_mapping(raw: str) -> dict[str, Any]:
    found = codec.decode(raw)
    if not isinstance(found, dict):
        raise TypeError(f"expected an object, found {type(found).__name__}")
    return found
