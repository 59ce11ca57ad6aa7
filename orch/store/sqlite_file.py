"""The SQLite file itself: its schema, its migrations, and opening it.

Shared by the store (``orch/store/sqlite.py``), which opens the file to serve it, and
the backup (``orch/store/backup.py``), which reads it from another process and must
refuse what the server would refuse, in the same words.

The schema version is ``PRAGMA user_version``: the number of ``MIGRATIONS`` applied.
Opening a file applies the ones it lacks, in one transaction with the version bump,
so an interrupted upgrade leaves the old schema whole; a file from a newer version
of the orchestrator is refused before anything in it is changed.
"""

from __future__ import annotations

import sqlite3

from orch.errors import StoreError

#: Forward migrations: entry ``n`` takes the schema from version ``n`` to ``n + 1``.
#: Append only; a released entry never changes. The version is ``PRAGMA user_version``.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        "CREATE TABLE agents (agent_id TEXT PRIMARY KEY, data TEXT NOT NULL)",
        "CREATE TABLE credentials (agent_id TEXT PRIMARY KEY, token_hash TEXT NOT NULL)",
        "CREATE TABLE tasks ("
        " key TEXT PRIMARY KEY, seq INTEGER NOT NULL, state TEXT NOT NULL,"
        " updated_at REAL NOT NULL, data TEXT NOT NULL)",
        # Retention pruning looks for old tasks in terminal states.
        "CREATE INDEX tasks_by_state_and_age ON tasks (state, updated_at)",
        # task_key '' stands for "no task": real task keys are never empty, and NULL
        # would not be unique in a primary key.
        "CREATE TABLE grants ("
        " resource TEXT NOT NULL, agent_id TEXT NOT NULL, task_key TEXT NOT NULL,"
        " data TEXT NOT NULL, PRIMARY KEY (resource, agent_id, task_key))",
        "CREATE TABLE fencing (resource TEXT PRIMARY KEY, counter INTEGER NOT NULL)",
        "CREATE TABLE config_defaults ( id INTEGER PRIMARY KEY CHECK (id = 1), data TEXT NOT NULL)",
        # check() writes here to prove that a write can still commit.
        "CREATE TABLE store_probe ("
        " id INTEGER PRIMARY KEY CHECK (id = 1), checked_at REAL NOT NULL)",
    ),
    # 1 -> 2: TODO-service reservations the Intake holds (issue: intake).
    ("CREATE TABLE intake_reservations (todo_id TEXT PRIMARY KEY, data TEXT NOT NULL)",),
    # 2 -> 3: the first answers to writes that carried an Idempotency-Key (issue 19).
    (
        "CREATE TABLE idempotent_answers ("
        " scope TEXT NOT NULL, key TEXT NOT NULL, fingerprint TEXT NOT NULL,"
        " status INTEGER NOT NULL, headers TEXT NOT NULL, body BLOB NOT NULL,"
        " created_at REAL NOT NULL, expires_at REAL NOT NULL, PRIMARY KEY (scope, key))",
        # Expiry deletes the oldest answers first.
        "CREATE INDEX idempotent_answers_by_expiry ON idempotent_answers (expires_at)",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)


def describe(exc: BaseException) -> str:
    """The cause as an operator reads it: ``database is locked (SQLITE_BUSY)``."""
    text = str(exc) or type(exc).__name__
    name = getattr(exc, "sqlite_errorname", None)
    return f"{text} ({name})" if name else text


def connect(path: str, synchronous: str, busy_timeout_s: float) -> sqlite3.Connection:
    """A connection to ``path`` at the current schema, in WAL mode at ``synchronous``.

    Raises ``StoreError`` if the file cannot be opened or holds a newer schema.
    """
    try:
        conn = sqlite3.connect(
            path, timeout=busy_timeout_s, isolation_level=None, check_same_thread=False
        )
    except (sqlite3.Error, OSError) as exc:
        raise StoreError(f"cannot open store {path!r}: {describe(exc)}") from exc
    try:
        refuse_newer(conn, path)  # before WAL: do not change a file we cannot read
        if path != ":memory:":
            conn.execute("PRAGMA journal_mode = WAL")
        conn.execute(f"PRAGMA synchronous = {synchronous}")
        _migrate(conn, path)
    except StoreError:
        conn.close()
        raise
    except (sqlite3.Error, OSError) as exc:
        conn.close()
        raise StoreError(f"cannot open store {path!r}: {describe(exc)}") from exc
    return conn


def refuse_newer(conn: sqlite3.Connection, path: str) -> int:
    found: int = conn.execute("PRAGMA user_version").fetchone()[0]
    if found > SCHEMA_VERSION:
        raise StoreError(
            f"the database {path!r} was written by a newer version of the orchestrator"
            f" (schema version {found}; this version knows up to {SCHEMA_VERSION});"
            " upgrade the orchestrator or point ORCH_DB at another file"
        )
    return found


def _migrate(conn: sqlite3.Connection, path: str) -> None:
    """Apply the migrations the file lacks, in one transaction with the version bump."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        # Read again under the write lock: another process may have migrated meanwhile.
        found = refuse_newer(conn, path)
        for version in range(found, SCHEMA_VERSION):
            for statement in MIGRATIONS[version]:
                conn.execute(statement)
        if found != SCHEMA_VERSION:
            conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
