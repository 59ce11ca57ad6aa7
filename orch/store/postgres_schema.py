"""The PostgreSQL database itself: its schema, its migrations, and opening a connection.

The schema version is the one row of ``orch_schema``: the number of ``MIGRATIONS``
applied. Several servers may start against one database at once (every node of a
cluster does), so migrations are applied under a transaction-scoped advisory lock,
one node at a time, in one transaction with the version they reach: an interrupted
upgrade leaves the old schema whole, and a node that waited for the lock finds the
work done. A database whose schema is newer than this code is refused, naming both
versions, before anything in it is changed.

Records are the JSON of ``orch.store.codec`` in TEXT columns, as in the SQLite file,
not JSONB: JSONB would reorder keys and refuses ``\\u0000`` in strings, which a
record may hold. ``position`` (an identity column an upsert never changes) keeps
"in the order each was first stored", as SQLite's rowid does.
"""

from __future__ import annotations

from typing import Any

import psycopg

from orch.errors import StoreError

#: Forward migrations: entry ``n`` takes the schema from version ``n`` to ``n + 1``.
#: Append only; a released entry never changes.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        "CREATE TABLE agents (position BIGINT GENERATED ALWAYS AS IDENTITY,"
        " agent_id TEXT PRIMARY KEY, data TEXT NOT NULL)",
        "CREATE TABLE credentials (position BIGINT GENERATED ALWAYS AS IDENTITY,"
        " agent_id TEXT PRIMARY KEY, token_hash TEXT NOT NULL)",
        "CREATE TABLE tasks (position BIGINT GENERATED ALWAYS AS IDENTITY,"
        " key TEXT PRIMARY KEY, seq BIGINT NOT NULL, state TEXT NOT NULL,"
        " updated_at DOUBLE PRECISION NOT NULL, data TEXT NOT NULL)",
        "CREATE INDEX tasks_by_seq ON tasks (seq, position)",
        # Retention pruning looks for old tasks in terminal states.
        "CREATE INDEX tasks_by_state_and_age ON tasks (state, updated_at)",
        # task_key '' stands for "no task", as in the SQLite file.
        "CREATE TABLE grants (position BIGINT GENERATED ALWAYS AS IDENTITY,"
        " resource TEXT NOT NULL, agent_id TEXT NOT NULL, task_key TEXT NOT NULL,"
        " data TEXT NOT NULL, PRIMARY KEY (resource, agent_id, task_key))",
        "CREATE TABLE fencing (resource TEXT PRIMARY KEY, counter BIGINT NOT NULL)",
        "CREATE TABLE config_defaults (id INTEGER PRIMARY KEY CHECK (id = 1), data TEXT NOT NULL)",
        "CREATE TABLE intake_reservations (todo_id TEXT PRIMARY KEY, data TEXT NOT NULL)",
        # check() writes here to prove that a write can still commit.
        "CREATE TABLE store_probe (id INTEGER PRIMARY KEY CHECK (id = 1),"
        " checked_at DOUBLE PRECISION NOT NULL)",
        # The first answers to writes that carried an Idempotency-Key.
        "CREATE TABLE idempotent_answers ("
        " scope TEXT NOT NULL, key TEXT NOT NULL, fingerprint TEXT NOT NULL,"
        " status INTEGER NOT NULL, headers TEXT NOT NULL, body BYTEA NOT NULL,"
        " created_at DOUBLE PRECISION NOT NULL, expires_at DOUBLE PRECISION NOT NULL,"
        " PRIMARY KEY (scope, key))",
        # Expiry deletes the oldest answers first.
        "CREATE INDEX idempotent_answers_by_expiry ON idempotent_answers (expires_at)",
    ),
    (
        # Leadership of a cluster (orch/store/postgres_lease.py): one row, the holder,
        # its epoch (one more per takeover), the URL it serves on, when its lease ends
        # (the server's clock, so nodes' clocks need not agree) and its session's pid.
        "CREATE TABLE orch_leader (id INTEGER PRIMARY KEY CHECK (id = 1), holder TEXT,"
        " epoch BIGINT NOT NULL, url TEXT, expires_at TIMESTAMPTZ, holder_pid INTEGER)",
        "INSERT INTO orch_leader (id, epoch) VALUES (1, 0)",
        # The fenced commit: a session that says which epoch it writes for
        # (``-c orch.epoch=N``) may change nothing once the lease row holds another.
        # FOR SHARE makes a takeover (an UPDATE of the row) wait for a commit under
        # way, and a commit that waited see the new epoch: no write of a deposed
        # leader commits after its successor read the store.
        "CREATE FUNCTION orch_fence() RETURNS trigger LANGUAGE plpgsql AS $$"
        " DECLARE wanted TEXT := current_setting('orch.epoch', true); held BIGINT;"
        " BEGIN"
        "  IF wanted IS NULL OR wanted = '' THEN RETURN NULL; END IF;"
        "  SELECT epoch INTO held FROM orch_leader WHERE id = 1 FOR SHARE;"
        "  IF held IS DISTINCT FROM wanted::BIGINT THEN"
        "   RAISE EXCEPTION 'not the leader: this node writes for epoch %, the lease holds %',"
        "    wanted, held USING ERRCODE = 'OR001';"
        "  END IF;"
        "  RETURN NULL;"
        " END $$",
        *(
            f"CREATE TRIGGER {table}_fenced BEFORE INSERT OR UPDATE OR DELETE ON {table}"
            " FOR EACH STATEMENT EXECUTE FUNCTION orch_fence()"
            for table in (
                "agents",
                "credentials",
                "tasks",
                "grants",
                "fencing",
                "config_defaults",
                "intake_reservations",
                "idempotent_answers",
            )
        ),
    ),
)
#: SQLSTATE of a write refused by the fence: the lease moved to another node.
FENCED_SQLSTATE = "OR001"
SCHEMA_VERSION = len(MIGRATIONS)

#: The advisory lock key migrations hold (``pg_advisory_xact_lock``): any fixed
#: 64-bit number no other application on the database uses; this one spells "orchmigr".
MIGRATION_LOCK_KEY = 0x6F7263686D696772

_VERSION_TABLE = (
    "CREATE TABLE IF NOT EXISTS orch_schema"
    " (id INTEGER PRIMARY KEY CHECK (id = 1), version INTEGER NOT NULL)"
)


def describe(exc: BaseException) -> str:
    """The cause as an operator reads it: the server's message and SQLSTATE if any."""
    text = (str(exc) or type(exc).__name__).strip().splitlines()[0]
    sqlstate = getattr(exc, "sqlstate", None)
    return f"{text} (SQLSTATE {sqlstate})" if sqlstate else text


def redact(url: str) -> str:
    """``url`` without its password, for messages and logs."""
    try:
        info = psycopg.conninfo.conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "<unparsable PostgreSQL URL>"
    host, port, dbname = info.get("host", ""), info.get("port", ""), info.get("dbname", "")
    user = info.get("user")
    where = f"{host}:{port}" if port else str(host)
    return f"postgresql://{user + '@' if user else ''}{where}/{dbname}"


def connect(url: str, **options: Any) -> psycopg.Connection[Any]:
    """An autocommit connection to ``url``; ``psycopg.OperationalError`` if unreachable."""
    return psycopg.connect(url, autocommit=True, **options)


def stored_version(conn: psycopg.Connection[Any]) -> int:
    """The schema version ``conn``'s database holds; 0 for a database never opened."""
    exists = conn.execute("SELECT to_regclass('orch_schema') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return 0
    row = conn.execute("SELECT version FROM orch_schema WHERE id = 1").fetchone()
    return int(row[0]) if row else 0


def refuse_newer(found: int, url: str) -> None:
    if found > SCHEMA_VERSION:
        raise StoreError(
            f"the database {redact(url)} was written by a newer version of the orchestrator"
            f" (schema version {found}; this version knows up to {SCHEMA_VERSION});"
            " upgrade the orchestrator or point ORCH_DB at another database"
        )


def migrate(conn: psycopg.Connection[Any], url: str) -> int:
    """Bring ``conn``'s database to ``SCHEMA_VERSION``; return the version it held.

    Refuses a newer schema first, without taking the lock or changing anything.
    """
    refuse_newer(stored_version(conn), url)
    with conn.transaction():
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_KEY,))
        # Read again under the lock: another node may have migrated meanwhile.
        conn.execute(_VERSION_TABLE)
        found = stored_version(conn)
        refuse_newer(found, url)
        for version in range(found, SCHEMA_VERSION):
            for statement in MIGRATIONS[version]:
                conn.execute(statement)  # type: ignore[arg-type]  # fixed SQL, no input
        if found != SCHEMA_VERSION:
            conn.execute(
                "INSERT INTO orch_schema (id, version) VALUES (1, %s)"
                " ON CONFLICT (id) DO UPDATE SET version = excluded.version",
                (SCHEMA_VERSION,),
            )
    return found
