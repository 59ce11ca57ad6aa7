"""The PostgreSQL store: acknowledged means committed on the server, and concurrent
writers share a commit.

The same promises as the SQLite store (``orch/store/sqlite.py``) over a database
server that several orchestrator nodes may share. This module turns records into
rows and rows back into records; the writer thread that owns the connection, groups
writes into commits and outlives a lost server is ``orch/store/postgres_writer.py``,
and the schema and its migrations are ``orch/store/postgres_schema.py``.

The server may go away. Each write then waits for it at most ``write_wait_s`` from
the moment it was made, and fails with ``StoreError`` after that (503
``store_unavailable`` over HTTP, and the actors rebuild from the store); ``check``
fails at once while the server is known to be unreachable, so ``/health`` says so.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping
from typing import Any, TypeVar

import psycopg

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
from orch.store.base import BackupSummary, CommitListeners, StoreStats
from orch.store.postgres_schema import SCHEMA_VERSION, connect, describe, migrate, redact
from orch.store.postgres_writer import (
    PUT_AGENT,
    PUT_CREDENTIAL,
    PUT_TASK,
    PostgresReader,
    PostgresWriter,
    QueuedWrite,
)
from orch.store.writes import Statement

#: Rows ``prune_tasks`` deletes per transaction, so pruning never stalls writers.
PRUNE_BATCH_ROWS = 500
#: How long ``check``'s probe may wait for its commit: the health check must answer.
CHECK_WAIT_S = 2.0
#: libpq's connect_timeout (whole seconds): one attempt to reach the server.
CONNECT_TIMEOUT_S = 2

#: A fenced (cluster) writer's session that sits in a transaction longer than this is
#: ended by the server: a leader frozen mid-transaction would otherwise hold the
#: lease row's share lock, and with it every takeover, for as long as it is frozen.
#: The writer never idles inside a transaction of its own accord.
FENCED_IDLE_MS = 2000

Value = TypeVar("Value")


class PendingPostgresWrite:
    """A queued write; ``wait`` blocks until it committed (or failed)."""

    __slots__ = ("_write", "_writer")

    def __init__(self, writer: PostgresWriter, write: QueuedWrite) -> None:
        self._writer = writer
        self._write = write

    def wait(self) -> None:
        self._writer.wait(self._write)

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
        self,
        url: str,
        *,
        write_wait_s: float = 10.0,
        lock_timeout_s: float = 5.0,
        epoch: int | None = None,
    ) -> None:
        """Connect, bring the schema to ``SCHEMA_VERSION`` and start the writer.

        With ``epoch`` (a cluster's leader, ``orch/store/postgres_lease.py``) every
        write is fenced: refused, in its own transaction, once the lease holds
        another epoch. Raises ``StoreError`` if the server cannot be reached or holds
        a newer schema.
        """
        if write_wait_s <= 0:
            raise ValueError(f"write_wait_s must be positive, got {write_wait_s!r}")
        self.url = url
        self.where = redact(url)
        self.write_wait_s = write_wait_s
        self.fail_writes: str | None = None
        self.epoch = epoch
        self._options = {
            "connect_timeout": CONNECT_TIMEOUT_S,
            "options": f"-c lock_timeout={max(1, round(lock_timeout_s * 1000))}"
            + (
                ""
                if epoch is None
                else f" -c orch.epoch={int(epoch)}"
                f" -c idle_in_transaction_session_timeout={FENCED_IDLE_MS}"
            ),
            "application_name": "june-orchestrator",
            # A server that vanished without closing the socket is noticed, not waited on.
            "keepalives": 1,
            "keepalives_idle": 5,
            "keepalives_interval": 2,
            "keepalives_count": 3,
        }
        self._listeners = CommitListeners()
        try:
            conn = connect(url, **self._options)
        except psycopg.Error as exc:
            raise StoreError(f"cannot open store {self.where}: {describe(exc)}") from exc
        try:
            migrate(conn, url)
        except psycopg.Error as exc:
            conn.close()
            raise StoreError(f"cannot open store {self.where}: {describe(exc)}") from exc
        except StoreError:
            conn.close()
            raise
        self.schema_version = SCHEMA_VERSION
        self._writer = PostgresWriter(conn, url, self._options, self.where, self._listeners)
        self._reader = PostgresReader(url, self._options, self.where)

    # ------------------------------------------------------------------ agents

    def put_agent(self, record: AgentRecord) -> None:
        """Store ``record`` under its id, replacing any earlier version."""
        self.put_agent_nowait(record).wait()

    def put_agent_nowait(self, record: AgentRecord) -> PendingPostgresWrite:
        """Queue the write of ``record``; the handle's ``wait`` returns once it is durable."""
        data = self._encode("agent", codec.encode_agent, record)
        return self._queue_write([(PUT_AGENT, (record.agent_id, data))])

    def register_agent_nowait(self, record: AgentRecord, token_hash: str) -> PendingPostgresWrite:
        """Queue a new agent's record and credential as one write; see ``Store``."""
        data = self._encode("agent", codec.encode_agent, record)
        return self._queue_write(
            [
                (PUT_CREDENTIAL, (record.agent_id, token_hash)),
                (PUT_AGENT, (record.agent_id, data)),
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
        self._submit_all([(PUT_CREDENTIAL, (agent_id, token_hash))])

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
            [(PUT_TASK, (task.key, task.seq, task.state.value, updated_at, data))]
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

    # ------------------------------------------------------ idempotent answers

    def put_idempotent_answer(self, answer: IdempotentAnswer) -> None:
        """Store the answer under its scope and key, replacing any earlier one."""
        headers = self._encode("answer's headers", codec.encode, [list(h) for h in answer.headers])
        self._submit_all(
            [
                (
                    "INSERT INTO idempotent_answers (scope, key, fingerprint, status, headers,"
                    " body, created_at, expires_at) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)"
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
            ]
        )

    def load_idempotent_answer(self, scope: str, key: str) -> IdempotentAnswer | None:
        """The answer stored under ``(scope, key)`` (its primary key), or None."""
        rows = self._read(
            "SELECT fingerprint, status, headers, body, created_at, expires_at"
            " FROM idempotent_answers WHERE scope = %s AND key = %s",
            (scope, key),
        )
        if not rows:
            return None
        fingerprint, status, headers, body, created_at, expires_at = rows[0]
        try:
            pairs = tuple((str(name), str(value)) for name, value in codec.decode(headers))
        except (TypeError, ValueError) as exc:  # msgspec.DecodeError included
            raise StoreError(
                f"store read failed: idempotent answer {key!r} in {self.where} is not"
                f" a valid record ({type(exc).__name__}: {exc})"
            ) from exc
        return IdempotentAnswer(
            scope, key, fingerprint, status, pairs, bytes(body), created_at, expires_at
        )

    def prune_idempotent_answers(self, expired_before_wall: float) -> int:
        """Delete answers that expired before the cutoff, ``PRUNE_BATCH_ROWS`` a turn."""
        sql = (
            "DELETE FROM idempotent_answers WHERE (scope, key) IN (SELECT scope, key FROM"
            f" idempotent_answers WHERE expires_at < %s LIMIT {PRUNE_BATCH_ROWS})"
        )
        removed = 0
        while True:
            deleted = self._submit_all([(sql, (expired_before_wall,))])
            removed += deleted
            if deleted < PRUNE_BATCH_ROWS:
                return removed

    # --------------------------------------------------------------- lifecycle

    def check(self) -> None:
        """Raise ``StoreError`` unless a write can commit right now.

        Fails at once while the server is known to be unreachable; otherwise proves
        it with a real (one-row) write through the writer, waiting ``CHECK_WAIT_S``
        at most.
        """
        if self.fail_writes is not None:
            raise StoreError(f"store failing: {self.fail_writes}")
        if self._writer.closed:
            raise StoreError("store is closed")
        if not self._writer.alive():
            raise StoreError("store writer thread has stopped")
        unreachable = self._writer.unreachable()
        if unreachable is not None:
            raise StoreError(unreachable)
        probe = (
            "INSERT INTO store_probe (id, checked_at) VALUES (1, %s)"
            " ON CONFLICT (id) DO UPDATE SET checked_at = excluded.checked_at"
        )
        write = QueuedWrite(
            [(probe, (time.time(),))], counted=False, wait_s=min(CHECK_WAIT_S, self.write_wait_s)
        )
        self._writer.submit(write)
        self._writer.wait(write)

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
        return self._writer.stats()

    def close(self) -> None:
        """Commit what is queued, stop the writer and close the connection. Idempotent.

        With the server unreachable, queued writes wait for it as long as they may
        (``write_wait_s``) and then fail. Later writes and reads raise
        ``StoreError("store is closed")``.
        """
        self._writer.close()
        self._reader.close()

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
            self._writer.refused()
            raise StoreError(f"store write failed: {self.fail_writes}")
        write = QueuedWrite(statements, counted=True, wait_s=self.write_wait_s)
        self._writer.submit(write)
        return PendingPostgresWrite(self._writer, write)

    def _submit_all(self, statements: list[Statement]) -> int:
        """Run ``statements`` as one write; return the last one's row count once durable."""
        pending = self._queue_write(statements)
        return self._writer.wait(pending._write)

    def _read(self, sql: str, params: tuple[Any, ...] = ()) -> list[Any]:
        """Rows of ``sql``; waits for an unreachable server as a write does, then fails."""
        return self._reader.rows(sql, params, self.write_wait_s)

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


def _decode_mapping(raw: str) -> dict[str, Any]:
    found = codec.decode(raw)
    if not isinstance(found, dict):
        raise TypeError(f"expected an object, found {type(found).__name__}")
    return found
