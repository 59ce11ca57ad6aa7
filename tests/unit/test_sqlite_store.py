"""SQLiteStore: what only a database has, beside the contract every store keeps.

The contract (``tests/store/test_contract.py``) runs against this store too; here are
durability across ``kill -9``, group commit and its multi-row statements, real SQLite
failures, the schema and its migrations, sync levels, batched pruning, and the
writer thread.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from orch.config import Settings
from orch.errors import StoreError
from orch.model import Task, TaskSpec, TaskState
from orch.store import SQLiteStore, open_store
from orch.store.sqlite import PRUNE_BATCH_ROWS, SCHEMA_VERSION
from tests.conftest import wait_until
from tests.store.records import (
    fill,
    finished_task,
    make_agent,
    make_answer,
    make_task,
    snapshot,
)

# ---------------------------------------------------------------------- fixtures


@pytest.fixture
def db_path(tmp_path: Path) -> str:
    return str(tmp_path / "orch.db")


@pytest.fixture
def sqlite_store(db_path: str) -> Iterator[SQLiteStore]:
    store = SQLiteStore(db_path)
    try:
        yield store
    finally:
        store.close()


def reopened(store: SQLiteStore) -> SQLiteStore:
    """Close ``store`` and open its file again, as a restart does."""
    store.close()
    return SQLiteStore(store.path)


# -------------------------------------------------------------------- durability


def test_acknowledged_writes_survive_kill_9(db_path):
    script = f"""
import os, signal
from orch.model import Task, TaskSpec
from orch.store import SQLiteStore
store = SQLiteStore({db_path!r}, sync="normal")
for i in range(100):
    store.put_task(Task(TaskSpec(task_id=i, payload={{"i": i}}), seq=i))
print("acknowledged", flush=True)
os.kill(os.getpid(), signal.SIGKILL)  # no close(), no flush, no atexit
"""
    done = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=60, check=False
    )
    assert done.stdout == "acknowledged\n", done.stderr
    store = SQLiteStore(db_path)
    try:
        tasks = store.load_tasks()
        assert [(t.spec.task_id, t.spec.payload) for t in tasks] == [
            (i, {"i": i}) for i in range(100)
        ]
    finally:
        store.close()


# ------------------------------------------------------------------ group commit


def test_concurrent_writers_share_commits(db_path):
    store = SQLiteStore(db_path, sync="full")
    threads, per_thread = 32, 50

    def submit(thread: int) -> None:
        for i in range(per_thread):
            seq = thread * per_thread + i
            store.put_task(make_task(f"t{seq}", seq=seq, state=TaskState.PENDING))

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(submit, range(threads)))  # re-raises any writer's exception
    total = threads * per_thread
    assert store.writes == total
    assert store.commits < total, "concurrent writes should have shared transactions"

    store = reopened(store)
    try:
        assert [t.seq for t in store.load_tasks()] == list(range(total))
    finally:
        store.close()


def test_writes_to_one_table_commit_as_one_statement_others_in_a_transaction(sqlite_store):
    statements: list[str] = []
    sqlite_store.trace(statements.append)
    sqlite_store.put_task(make_task("t1", seq=1))
    assert [s.split()[0] for s in statements] == ["INSERT"]  # no BEGIN, no COMMIT
    statements.clear()
    sqlite_store.register_agent_nowait(make_agent("a9"), "hash").wait()  # two tables
    assert [s.split()[0] for s in statements] == ["BEGIN", "INSERT", "INSERT", "COMMIT"]
    sqlite_store.trace(None)
    reopened = SQLiteStore(sqlite_store.path)
    try:
        assert [t.key for t in reopened.load_tasks()] == ["t1"]
        assert reopened.load_credentials() == {"a9": "hash"}
    finally:
        reopened.close()


def test_one_bad_write_fails_alone_and_its_group_still_commits(sqlite_store):
    # Hold commits while the writer has taken the first write, so that the next three
    # queue up and are taken as one group; the bad one must fail without taking the
    # others along.
    too_big_for_sqlite = 2**63
    with sqlite_store.commits_held():
        first = sqlite_store.put_task_nowait(make_task("t1", seq=1))
        wait_until(lambda: sqlite_store.stats()["queued_writes"] == 0, message="writer took it")
        grouped = {
            seq: sqlite_store.put_task_nowait(make_task(f"t{seq}", seq=seq))
            for seq in (too_big_for_sqlite, 2, 3)
        }
        assert sqlite_store.stats()["queued_writes"] == 3
        assert not first.done()
    first.wait()
    grouped[2].wait()
    grouped[3].wait()
    with pytest.raises(StoreError, match="too large"):
        grouped[too_big_for_sqlite].wait()
    assert sqlite_store.commits == 2  # the first alone, then the group without the bad one
    assert sqlite_store.writes == 3 and sqlite_store.failed_writes == 1
    assert [t.seq for t in sqlite_store.load_tasks()] == [1, 2, 3]


def test_merged_upserts_keep_the_last_write_of_each_row(sqlite_store):
    statements: list[str] = []
    sqlite_store.trace(statements.append)
    with sqlite_store.commits_held():  # the writes queue into one batch
        writes = []
        for n in range(30):
            spec = TaskSpec.build(payload={"n": n}, task_id=f"t{n % 3}")
            task = Task(spec=spec, seq=n + 1, created_at=0.0, queued_at=0.0)
            state = TaskState.PENDING if n < 27 else TaskState.RUNNING
            writes.append(sqlite_store.put_task_nowait(replace(task, state=state)))
    for write in writes:
        write.wait()
    sqlite_store.trace(None)
    # The fast path was taken: one statement carried many rows, with no transaction.
    assert any(s.startswith("INSERT") and s.count("), (") > 1 for s in statements)
    assert not any(s.startswith("BEGIN") for s in statements)
    found = {t.key: (t.seq, str(t.state), t.spec.payload["n"]) for t in sqlite_store.load_tasks()}
    assert found == {
        "t0": (28, "running", 27),
        "t1": (29, "running", 28),
        "t2": (30, "running", 29),
    }


# ---------------------------------------------------------------------- failures


def test_a_locked_database_fails_the_write_and_the_store_recovers(db_path):
    store = SQLiteStore(db_path, busy_timeout_s=0.05)
    try:
        store.put_task(make_task(1, seq=1))
        other_process = sqlite3.connect(db_path, isolation_level=None)
        other_process.execute("BEGIN IMMEDIATE")  # holds the write lock
        with pytest.raises(StoreError, match="database is locked"):
            store.put_task(make_task(2, seq=2))
        with pytest.raises(StoreError, match="database is locked"):
            store.check()
        other_process.execute("ROLLBACK")
        other_process.close()

        store.check()
        store.put_task(make_task(3, seq=3))
        assert [t.seq for t in store.load_tasks()] == [1, 3]
    finally:
        store.close()


def test_values_the_database_cannot_hold_fail_that_write_only(sqlite_store):
    fill(sqlite_store)
    before = snapshot(sqlite_store)
    with pytest.raises(StoreError, match="too large"):
        sqlite_store.put_task(make_task(8, seq=2**63))
    with pytest.raises(StoreError, match="task cannot be stored"):
        sqlite_store.put_task(make_task(8, seq=2, result=object()))
    assert snapshot(sqlite_store) == before
    sqlite_store.put_task(make_task(8, seq=2))
    assert len(sqlite_store.load_tasks()) == 2


def test_the_writer_survives_an_unexpected_error(sqlite_store, monkeypatch):
    attempt = sqlite_store._attempt
    calls: list[int] = []

    def broken_once(pending: list[Any]) -> Any:
        calls.append(len(pending))
        if len(calls) == 1:
            raise RuntimeError("bug in the writer")
        return attempt(pending)

    monkeypatch.setattr(sqlite_store, "_attempt", broken_once)
    with pytest.raises(StoreError, match="bug in the writer"):
        sqlite_store.put_task(make_task(1, seq=1))
    sqlite_store.put_task(make_task(2, seq=2))
    assert [t.seq for t in sqlite_store.load_tasks()] == [2]


def test_a_file_that_cannot_be_opened_is_a_store_error(tmp_path):
    path = str(tmp_path / "missing-dir" / "orch.db")
    with pytest.raises(StoreError, match="unable to open") as info:
        SQLiteStore(path)
    assert path in info.value.message


def test_a_corrupt_row_is_reported_with_its_table(sqlite_store):
    sqlite_store.put_agent(make_agent("a1"))
    raw = sqlite3.connect(sqlite_store.path, isolation_level=None)
    raw.execute('UPDATE agents SET data = \'{"agent_id": "a1"}\'')
    raw.close()
    with pytest.raises(StoreError, match="agents row 'a1'"):
        sqlite_store.load_agents()


# ------------------------------------------------------------- schema and setup


def test_a_new_file_gets_the_current_schema_in_wal_mode(sqlite_store):
    raw = sqlite3.connect(sqlite_store.path)
    try:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert raw.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert raw.execute("PRAGMA index_list(tasks)").fetchall()
    finally:
        raw.close()
    reopened(sqlite_store).close()  # opening a current file migrates nothing


def test_a_database_from_a_newer_version_is_refused(db_path):
    SQLiteStore(db_path).close()
    raw = sqlite3.connect(db_path)
    raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    raw.close()
    with pytest.raises(StoreError, match="written by a newer version") as info:
        SQLiteStore(db_path)
    assert db_path in info.value.message


def test_an_older_schema_is_migrated_forward_keeping_its_rows(db_path):
    store = SQLiteStore(db_path)
    store.put_agent(make_agent("a1"))
    store.close()
    raw = sqlite3.connect(db_path, isolation_level=None)
    raw.execute("DROP TABLE intake_reservations")  # what migration 1 -> 2 adds
    raw.execute("DROP TABLE idempotent_answers")  # and 2 -> 3
    raw.execute("PRAGMA user_version = 1")
    raw.close()
    store = SQLiteStore(db_path)
    raw = sqlite3.connect(db_path)
    try:
        assert raw.execute("PRAGMA user_version").fetchall() == [(SCHEMA_VERSION,)]
        tables = {name for (name,) in raw.execute("SELECT name FROM sqlite_master")}
        assert {"intake_reservations", "idempotent_answers"} <= tables
        assert store.load_agents() == [make_agent("a1")]
    finally:
        raw.close()
        store.close()


def test_the_service_settings_choose_the_file_and_the_sync_level(db_path):
    defaults = Settings.from_env({})
    assert (defaults.db, defaults.db_sync) == ("orchestrator.db", "full")
    store = open_store(Settings.from_env({"ORCH_DB": db_path, "ORCH_DB_SYNC": "normal"}))
    try:
        assert store.path == db_path
        assert store._read("PRAGMA synchronous") == [(1,)]
    finally:
        store.close()


@pytest.mark.parametrize(("sync", "level"), [("full", 2), ("normal", 1)])
def test_sync_selects_the_synchronous_level(db_path, sync, level):
    store = SQLiteStore(db_path, sync=sync)
    try:
        assert store._read("PRAGMA synchronous") == [(level,)]
    finally:
        store.close()


def test_an_unknown_sync_level_is_refused(db_path):
    with pytest.raises(ValueError, match="ORCH_DB_SYNC"):
        SQLiteStore(db_path, sync="bogus")


# ----------------------------------------------------------------------- pruning


def test_prune_can_be_limited_to_some_finished_states(sqlite_store):
    done = finished_task("old-done", 1, TaskState.COMPLETED, 1000.0)
    dead = finished_task("old-dead", 2, TaskState.DEAD, 1000.0)
    sqlite_store.put_task(done)
    sqlite_store.put_task(dead)
    assert sqlite_store.prune_tasks(2000.0, ["completed"]) == 1
    assert sqlite_store.load_tasks() == [dead]
    assert sqlite_store.prune_tasks(2000.0, []) == 0
    assert sqlite_store.load_tasks() == [dead]


def test_prune_refuses_tasks_that_are_not_finished(sqlite_store):
    with pytest.raises(ValueError, match="pending"):
        sqlite_store.prune_tasks(2000.0, ["completed", "pending"])
    with pytest.raises(ValueError):
        sqlite_store.prune_tasks(2000.0, ["bogus"])


def test_prune_deletes_in_batches(db_path):
    store = SQLiteStore(db_path, sync="normal")
    try:
        count = 2 * PRUNE_BATCH_ROWS + 7
        with ThreadPoolExecutor(16) as pool:
            list(
                pool.map(
                    lambda i: store.put_task(finished_task(i, i, TaskState.COMPLETED, 1000.0)),
                    range(count),
                )
            )
        commits = store.commits
        assert store.prune_tasks(2000.0) == count
        assert store.commits - commits == 3
        assert store.load_tasks() == []
    finally:
        store.close()


# --------------------------------------------------------------------- lifecycle


def test_the_writer_is_a_daemon_thread_that_stops_on_close(db_path):
    # A daemon, so that a process that forgot close() can still exit.
    before = set(threading.enumerate())
    store = SQLiteStore(db_path)
    [writer] = [t for t in set(threading.enumerate()) - before if t.name == "orch-store-writer"]
    assert writer.daemon
    store.put_task(make_task(1, seq=1))
    store.close()
    assert not writer.is_alive()


def test_commit_listeners_run_on_the_writer_thread_after_each_transaction(sqlite_store):
    called: list[tuple[str, int]] = []
    sqlite_store.add_commit_listener(
        lambda: called.append((threading.current_thread().name, sqlite_store.commits))
    )
    sqlite_store.put_task(make_task(1, seq=1))
    wait_until(lambda: called, message="the listener was called")
    assert called == [("orch-store-writer", 1)]  # once, after the commit was counted


def test_a_store_in_memory_is_backed_up_through_its_own_connection(tmp_path):
    store = SQLiteStore(":memory:")
    try:
        fill(store)
        summary = store.backup(str(tmp_path / "copy.db"))
        expected = snapshot(store)
    finally:
        store.close()
    assert (summary.source, summary.agents, summary.tasks) == (":memory:", 1, 1)
    copy = SQLiteStore(str(tmp_path / "copy.db"))
    try:
        assert snapshot(copy) == expected
    finally:
        copy.close()


def test_check_proves_a_write_commits(sqlite_store):
    commits, writes = sqlite_store.commits, sqlite_store.writes
    sqlite_store.check()
    assert sqlite_store.commits == commits + 1
    assert sqlite_store.writes == writes  # the probe is not a caller's write


def test_a_write_is_seen_done_by_every_waiter_once_and_only_once_finished(sqlite_store):
    with sqlite_store.commits_held():
        write = sqlite_store.put_task_nowait(make_task("t1", seq=1))
        released: list[bool] = []

        def waiter() -> None:
            write.wait()
            released.append(write.done())

        waiters = [threading.Thread(target=waiter) for _ in range(5)]
        for thread in waiters:
            thread.start()
        assert not write.done() and not write.failed() and released == []
    for thread in waiters:
        thread.join(10)
    assert released == [True] * 5 and write.done() and not write.failed()
    write.wait()  # and once more, long after


def test_an_idempotent_answer_is_read_without_waiting_behind_a_commit(db_path):
    # A keyed request looks its key up before it runs; a commit in progress (a slow
    # sync) must not hold that look-up up: a file store reads it on a connection of
    # its own, as WAL allows.
    store = SQLiteStore(db_path)
    try:
        store.put_idempotent_answer(make_answer("k1"))
        found: list[Any] = []
        with store.commits_held():  # the writer's connection is busy
            reader = threading.Thread(
                target=lambda: found.append(store.load_idempotent_answer("scope-1", "k1"))
            )
            reader.start()
            wait_until(lambda: found, message="the look-up answered while commits were held")
        reader.join(5)
        assert found == [make_answer("k1")]
    finally:
        store.close()
