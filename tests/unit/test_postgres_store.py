"""PostgresStore: what only a database server has, beside the contract every store keeps.

The contract (``tests/store/test_contract.py``) runs against this store too; here are
the schema and its migrations (one node at a time, a newer schema refused), group
commit and its merged statements, one write's bad values failing it alone, and the
server going away and coming back under load: writes wait a bounded time, ``check``
fails while it is away, and every acknowledged write is there afterwards.

Every test runs against a real PostgreSQL server (tests/pg/server.py).
"""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

import psycopg
import pytest

from orch.config import Settings
from orch.errors import BackupError, StoreError
from orch.store import open_store
from orch.store import postgres_schema as schema
from orch.store.postgres import PostgresStore
from tests.conftest import wait_until
from tests.pg.server import PrivateServer
from tests.store.records import fill, make_agent, make_task, snapshot


@pytest.fixture
def pg_store(pg_url: str) -> Iterator[PostgresStore]:
    # Tests hold locks elsewhere to stall the writer: give them all the time they need.
    store = PostgresStore(pg_url, lock_timeout_s=60.0)
    try:
        yield store
    finally:
        store.close()


def wait_until_blocked(holder: psycopg.Connection) -> None:
    """Wait until another session waits on a lock ``holder`` holds: the writer's commit."""
    wait_until(
        lambda: holder.execute("SELECT count(*) FROM pg_locks WHERE NOT granted").fetchone()[0],
        timeout_s=10,
        message="the store's commit waits on the lock held elsewhere",
    )


def stored_version(url: str) -> int:
    with psycopg.connect(url) as conn:
        return schema.stored_version(conn)


# ---------------------------------------------------------------------- selection


def test_orch_db_with_a_postgresql_uri_selects_this_store(pg_url):
    store = open_store(Settings(db=pg_url, db_write_wait_s=3.0))
    try:
        assert isinstance(store, PostgresStore)
        assert store.write_wait_s == 3.0
    finally:
        store.close()


def test_without_psycopg_choosing_postgresql_is_refused_naming_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "orch.store.postgres", None)  # import fails
    with pytest.raises(StoreError, match=r"pip install 'june-orchestrator\[postgres\]'"):
        open_store(Settings(db="postgresql://orch@db.example/orch"))


def test_the_write_wait_is_read_from_the_environment():
    assert Settings.from_env({"ORCH_DB_WRITE_WAIT_S": "2.5"}).db_write_wait_s == 2.5
    assert Settings().db_write_wait_s == 10.0


def test_a_database_password_is_never_shown():
    shown = Settings(db="postgresql://orch:s3cret@db:5432/orch").describe()["db"]
    assert "s3cret" not in shown and shown == "postgresql://orch:***@db:5432/orch"


def test_an_unreachable_server_is_refused_at_start_naming_it_without_its_password():
    from tests.pg.server import free_port

    port = free_port()  # nothing listens there
    with pytest.raises(StoreError) as caught:
        PostgresStore(f"postgresql://orch:s3cret@127.0.0.1:{port}/orch")
    message = str(caught.value)
    assert f"cannot open store postgresql://orch@127.0.0.1:{port}/orch:" in message
    assert "s3cret" not in message


def test_a_backup_is_refused_naming_pg_dump(pg_store, tmp_path):
    with pytest.raises(BackupError, match="pg_dump"):
        pg_store.backup(str(tmp_path / "copy.db"))


# ------------------------------------------------------------------- migrations


def test_a_new_database_is_brought_to_the_current_schema(pg_url):
    assert stored_version(pg_url) == 0
    store = PostgresStore(pg_url)
    store.close()
    assert stored_version(pg_url) == schema.SCHEMA_VERSION == store.schema_version


def test_forward_migrations_apply_in_order_and_only_once(pg_url, monkeypatch):
    PostgresStore(pg_url).close()
    added = (*schema.MIGRATIONS, ("CREATE TABLE later (id INTEGER PRIMARY KEY)",))
    monkeypatch.setattr(schema, "MIGRATIONS", added)
    monkeypatch.setattr(schema, "SCHEMA_VERSION", len(added))
    with psycopg.connect(pg_url, autocommit=True) as conn:
        assert schema.migrate(conn, pg_url) == len(added) - 1
        assert schema.migrate(conn, pg_url) == len(added)  # nothing left to do
        assert schema.stored_version(conn) == len(added)
        assert conn.execute("SELECT to_regclass('later') IS NOT NULL").fetchone() == (True,)


def test_nodes_starting_together_migrate_one_at_a_time(pg_url):
    # Without the advisory lock, concurrent CREATE TABLEs fail on one another.
    barrier = threading.Barrier(6)

    def open_one(_: int) -> int:
        barrier.wait()
        store = PostgresStore(pg_url)
        store.close()
        return store.schema_version

    with ThreadPoolExecutor(6) as pool:
        assert list(pool.map(open_one, range(6))) == [schema.SCHEMA_VERSION] * 6
    assert stored_version(pg_url) == schema.SCHEMA_VERSION


def test_a_migration_waits_for_another_nodes_migration_lock(pg_url):
    holder = psycopg.connect(pg_url)  # a node in the middle of migrating
    holder.execute("SELECT pg_advisory_xact_lock(%s)", (schema.MIGRATION_LOCK_KEY,))
    opened: list[PostgresStore] = []
    opener = threading.Thread(target=lambda: opened.append(PostgresStore(pg_url)))
    opener.start()
    try:
        wait_until(
            lambda: holder.execute(
                "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            ).fetchone()[0],
            message="the second node waits on the migration lock",
        )
        assert not opened
    finally:
        holder.rollback()
        holder.close()
    opener.join(30)
    assert opened and opened[0].schema_version == schema.SCHEMA_VERSION
    opened[0].close()


def test_a_newer_schema_is_refused_naming_both_versions_and_changing_nothing(pg_url):
    PostgresStore(pg_url).close()
    newer = schema.SCHEMA_VERSION + 3
    with psycopg.connect(pg_url) as conn:
        conn.execute("UPDATE orch_schema SET version = %s", (newer,))
    with pytest.raises(StoreError) as caught:
        PostgresStore(pg_url)
    message = str(caught.value)
    assert f"schema version {newer}" in message
    assert f"knows up to {schema.SCHEMA_VERSION}" in message
    assert "\n" not in message
    assert stored_version(pg_url) == newer


# ----------------------------------------------------------------- group commit


def test_writes_queued_behind_a_commit_share_the_next_one(pg_url, pg_store):
    # Another session holds the tasks table: the first write waits for it while the
    # rest queue up; once it lets go they commit together, not one by one.
    holder = psycopg.connect(pg_url)
    holder.execute("LOCK TABLE tasks IN EXCLUSIVE MODE")
    commits = pg_store.stats()["commits"]
    try:
        pending = [pg_store.put_task_nowait(make_task(f"t{i}", seq=i)) for i in range(50)]
        wait_until(lambda: pg_store.stats()["queued_writes"] >= 49, message="writes queued")
    finally:
        holder.rollback()
        holder.close()
    for write in pending:
        write.wait()
    stats = pg_store.stats()
    assert stats["writes"] == 50
    assert stats["commits"] - commits <= 3
    assert [t.seq for t in pg_store.load_tasks()] == list(range(50))


def test_one_key_written_twice_in_a_batch_keeps_the_last_values_and_first_place(pg_url, pg_store):
    pg_store.put_agent(make_agent("a0"))
    holder = psycopg.connect(pg_url)
    holder.execute("LOCK TABLE agents IN EXCLUSIVE MODE")
    try:
        pending = [pg_store.put_agent_nowait(make_agent("a0", restarts=1))]
        wait_until_blocked(holder)
        pending += [
            pg_store.put_agent_nowait(make_agent("a1", restarts=1)),
            pg_store.put_agent_nowait(make_agent("a2", restarts=0)),
            pg_store.put_agent_nowait(make_agent("a1", restarts=2)),
        ]
    finally:
        holder.rollback()
        holder.close()
    for write in pending:
        write.wait()
    assert [(a.agent_id, a.restarts) for a in pg_store.load_agents()] == [
        ("a0", 1),
        ("a1", 2),
        ("a2", 0),
    ]


def test_a_write_the_server_refuses_fails_alone(pg_url, pg_store):
    # NUL cannot be in a PostgreSQL text value: that agent's write fails, the rest commit.
    holder = psycopg.connect(pg_url)
    holder.execute("LOCK TABLE agents, credentials IN EXCLUSIVE MODE")
    try:
        good = pg_store.put_agent_nowait(make_agent("a1"))
        wait_until_blocked(holder)
        bad = pg_store.register_agent_nowait(make_agent("bad\x00id"), "hash")
        also_good = pg_store.register_agent_nowait(make_agent("a2"), "hash-2")
    finally:
        holder.rollback()
        holder.close()
    good.wait()
    also_good.wait()
    with pytest.raises(StoreError, match="NUL"):
        bad.wait()
    assert [a.agent_id for a in pg_store.load_agents()] == ["a1", "a2"]
    assert pg_store.load_credentials() == {"a2": "hash-2"}


def test_commit_listeners_hear_of_each_commit(pg_store):
    heard = threading.Event()
    pg_store.add_commit_listener(heard.set)
    pg_store.put_task_nowait(make_task("t1", seq=1)).wait()
    assert heard.wait(5)


# ------------------------------------------------- the server goes away and comes back


@pytest.fixture
def server_db(restartable_pg: PrivateServer) -> str:
    from tests.pg.server import Databases

    databases = Databases(restartable_pg.url())
    return databases.url_of(databases.create())


def test_a_write_waits_a_bounded_time_for_a_lost_server_then_fails(restartable_pg, server_db):
    store = PostgresStore(server_db, write_wait_s=1.0)
    try:
        store.put_task(make_task("before", seq=1))
        restartable_pg.stop()
        started = time.monotonic()
        with pytest.raises(StoreError, match="unreachable"):
            store.put_task(make_task("lost", seq=2))
        waited = time.monotonic() - started
        assert 0.9 <= waited < 10.0  # its deadline, plus at most a connect attempt or so
        with pytest.raises(StoreError, match="unreachable"):
            store.check()  # at once: the store knows the server is away
        assert store.stats()["failed_writes"] >= 1

        restartable_pg.start()
        wait_until(lambda: _checks(store), timeout_s=30, message="the store reconnects")
        store.put_task(make_task("after", seq=3))
        assert [t.key for t in store.load_tasks()] == ["before", "after"]
    finally:
        store.close()


def _checks(store: PostgresStore) -> bool:
    try:
        store.check()
    except StoreError:
        return False
    return True


def test_writes_queued_while_the_server_is_away_commit_once_it_is_back(restartable_pg, server_db):
    store = PostgresStore(server_db, write_wait_s=60.0)
    try:
        fill(store)
        before = snapshot(store)
        restartable_pg.stop()
        pending = [store.put_task_nowait(make_task(f"t{i}", seq=10 + i)) for i in range(20)]
        wait_until(lambda: not _checks(store), message="check sees the server gone")
        assert not any(write.done() for write in pending)
        assert store.stats()["queued_writes"] >= 20  # and perhaps a probe of check()
        restartable_pg.start()
        for write in pending:
            write.wait()
        assert snapshot(store)[0] == before[0]
        assert [t.key for t in store.load_tasks()][-20:] == [f"t{i}" for i in range(20)]
        assert store.stats()["queued_writes"] == 0
    finally:
        store.close()


def test_every_acknowledged_write_survives_a_server_restart_under_load(restartable_pg, server_db):
    store = PostgresStore(server_db, write_wait_s=60.0)
    acknowledged: list[set[str]] = [set() for _ in range(8)]
    failed: list[BaseException] = []
    stop = threading.Event()

    def writer(n: int) -> None:
        i = 0
        while not stop.is_set():
            key = f"w{n}-{i}"
            try:
                if i % 2:
                    store.put_task(make_task(key, seq=n * 1_000_000 + i))
                else:
                    store.put_task_nowait(make_task(key, seq=n * 1_000_000 + i)).wait()
            except StoreError as exc:
                failed.append(exc)
                return
            acknowledged[n].add(key)
            i += 1

    threads = [threading.Thread(target=writer, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    try:
        wait_until(lambda: all(len(keys) >= 20 for keys in acknowledged), timeout_s=30)
        restartable_pg.stop()  # fast shutdown: every session is cut, mid-commit or not
        wait_until(lambda: not _checks(store), message="check sees the server gone")
        at_stop = sum(len(keys) for keys in acknowledged)
        restartable_pg.start()
        wait_until(
            lambda: sum(len(keys) for keys in acknowledged) >= at_stop + 200,
            timeout_s=60,
            message="writers go on once the server is back",
        )
    finally:
        stop.set()
        for thread in threads:
            thread.join(60)
        store.close()
    assert not failed
    again = PostgresStore(server_db)
    try:
        stored = {task.key for task in again.load_tasks()}
    finally:
        again.close()
    for keys in acknowledged:
        assert keys <= stored
