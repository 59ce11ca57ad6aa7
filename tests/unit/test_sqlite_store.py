"""SQLiteStore: the store contract (shared with MemoryStore), durability, group commit.

The contract tests run against every store, so the SQLite store is held to exactly
what the memory store does; the rest cover what only a database has: reopening,
schema versions, sync levels, pruning, group commit and real SQLite failures.
The codec is tested here too, through the records the store writes.
"""

from __future__ import annotations

import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import fields, replace
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from orch.config import Settings
from orch.errors import StoreError
from orch.model import (
    AgentConfig,
    AgentRecord,
    AgentState,
    LockGrant,
    LockMode,
    Task,
    TaskId,
    TaskSpec,
    TaskState,
)
from orch.store import MemoryStore, SQLiteStore, codec, open_store
from orch.store.sqlite import PRUNE_BATCH_ROWS, SCHEMA_VERSION
from tests.conftest import wait_until

# ----------------------------------------------------------------------- records


def make_agent(agent_id: str = "a1", **changes: Any) -> AgentRecord:
    """An agent with every field set away from its default."""
    record = AgentRecord(
        agent_id=agent_id,
        agent_type="worker",
        capabilities=frozenset({"gpu", "py"}),
        state=AgentState.BUSY,
        config=AgentConfig(
            version=3,
            max_concurrent_tasks=4,
            heartbeat_interval_s=2.5,
            task_timeout_s=90.0,
            auto_restart=False,
            resource_limits={"cpu": 2, "memory": {"gb": 4.5}},
            settings={"model": "x", "tags": ["a", "b"]},
        ),
        metadata={"host": "h1", "nested": {"k": [1, 2.5, None, True, "s"]}},
        project_id="p1",
        in_process=True,
        registered_at=1_700_000_000.25,
        restarts=2,
        task_keys=frozenset({"7", "job-1"}),
        last_error="boom",
    )
    return replace(record, **changes)


def make_task(
    task_id: TaskId = 7, seq: int = 1, state: TaskState = TaskState.RUNNING, **changes: Any
) -> Task:
    """A task with every field set away from its default (``changes`` overrides)."""
    spec = TaskSpec(
        task_id=task_id,
        payload={"n": 1, "deep": {"list": [1, "two", 3.5, None, False]}},
        priority=5,
        agent_type="worker",
        capabilities=frozenset({"gpu", "py"}),
        resources=("db", "disk"),
        max_attempts=4,
        timeout_s=30.0,
    )
    task = Task(
        spec=spec,
        seq=seq,
        state=state,
        attempts=2,
        agent_id="a1",
        created_at=1_700_000_000.5,
        assigned_at=1_700_000_001.0,
        finished_at=None,
        result=None,
        error=None,
        fencing_tokens={"db": 3, "disk": 9},
        lease_deadline=1030.5,
        retry_at=None,
        queued_at=1000.25,
    )
    return replace(task, **changes)


def finished_task(task_id: TaskId, seq: int, state: TaskState, finished_at: float) -> Task:
    return make_task(
        task_id,
        seq,
        state,
        finished_at=finished_at,
        result={"ok": [1, 2]},
        error=None if state is TaskState.COMPLETED else "gave up",
        lease_deadline=None,
    )


def make_grant(resource: str = "db", token: int = 1, **changes: Any) -> LockGrant:
    grant = LockGrant(
        resource=resource,
        mode=LockMode.EXCLUSIVE,
        agent_id="a1",
        fencing_token=token,
        expires_at=1_700_000_060.75,
        deadline=1060.75,
        task_key=None,
    )
    return replace(grant, **changes)


def snapshot(store: Any) -> tuple[Any, ...]:
    """Everything a store holds, as its loads return it."""
    return (
        store.load_agents(),
        store.load_credentials(),
        store.load_tasks(),
        store.load_grants(),
        store.load_fencing_counters(),
        store.load_config_defaults(),
    )


def every_write(store: Any) -> list[Callable[[], None]]:
    """One call of each write method, each of which would change ``store``."""
    return [
        lambda: store.put_agent(make_agent("a2")),
        lambda: store.delete_agent("a1"),
        lambda: store.put_credential("a1", "other-hash"),
        lambda: store.put_task(make_task(8, seq=2)),
        lambda: store.delete_task("7"),
        lambda: store.put_grant(make_grant("db", token=50)),
        lambda: store.delete_grant(make_grant("db", token=5)),
        lambda: store.put_config_defaults({"changed": True}),
    ]


def fill(store: Any) -> None:
    store.put_agent(make_agent("a1"))
    store.put_credential("a1", "hash-1")
    store.put_task(make_task(7, seq=1))
    store.put_grant(make_grant("db", token=5))
    store.put_config_defaults({"max_concurrent_tasks": 2})


# ---------------------------------------------------------------------- fixtures


@pytest.fixture(params=["memory", "sqlite-file", "sqlite-in-memory"])
def any_store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Any]:
    """Each store implementation, held to the same contract."""
    if request.param == "memory":
        yield MemoryStore()
        return
    path = str(tmp_path / "orch.db") if request.param == "sqlite-file" else ":memory:"
    store = SQLiteStore(path, sync="normal")
    try:
        yield store
    finally:
        store.close()


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


# ------------------------------------------------------------ the store contract


def test_an_agent_is_replaced_by_id_and_keeps_its_place(any_store):
    any_store.put_agent(make_agent("a1"))
    any_store.put_agent(make_agent("a2"))
    any_store.put_agent(make_agent("a1", state=AgentState.IDLE, restarts=3))
    assert any_store.load_agents() == [
        make_agent("a1", state=AgentState.IDLE, restarts=3),
        make_agent("a2"),
    ]


def test_delete_agent_removes_its_credential_too(any_store):
    any_store.put_agent(make_agent("a1"))
    any_store.put_credential("a1", "hash-1")
    any_store.put_credential("a2", "hash-2")
    any_store.delete_agent("a1")
    any_store.delete_agent("never-there")
    assert any_store.load_agents() == []
    assert any_store.load_credentials() == {"a2": "hash-2"}


def test_tasks_load_in_submission_order_and_are_replaced_by_key(any_store):
    any_store.put_task(make_task("b", seq=2))
    any_store.put_task(make_task(1, seq=3))
    any_store.put_task(make_task("a", seq=1))
    done = finished_task("b", 2, TaskState.COMPLETED, 1_700_000_100.0)
    any_store.put_task(done)
    any_store.delete_task("1")
    any_store.delete_task("never-there")
    assert any_store.load_tasks() == [make_task("a", seq=1), done]


def test_grants_are_keyed_by_resource_agent_and_task(any_store):
    plain = make_grant("db", token=1)
    for_task = make_grant("db", token=2, mode=LockMode.SHARED, task_key="7")
    any_store.put_grant(plain)
    any_store.put_grant(for_task)
    any_store.put_grant(replace(plain, expires_at=1_700_000_999.0))
    assert any_store.load_grants() == [replace(plain, expires_at=1_700_000_999.0), for_task]
    any_store.delete_grant(plain)
    assert any_store.load_grants() == [for_task]


def test_the_fencing_counter_only_rises(any_store):
    any_store.put_grant(make_grant("db", token=5))
    any_store.put_grant(make_grant("db", token=3, agent_id="a2"))
    any_store.put_grant(make_grant("disk", token=0))  # no token, no counter
    assert any_store.load_fencing_counters() == {"db": 5}
    any_store.put_grant(make_grant("db", token=9))
    any_store.delete_grant(make_grant("db", token=9))
    assert any_store.load_fencing_counters() == {"db": 9}


def test_config_defaults_are_replaced_whole(any_store):
    assert any_store.load_config_defaults() == {}
    any_store.put_config_defaults({"a": 1, "b": {"c": [1, 2]}})
    any_store.put_config_defaults({"b": 2})
    assert any_store.load_config_defaults() == {"b": 2}


def test_a_failing_write_changes_nothing(any_store):
    fill(any_store)
    any_store.check()
    before, writes = snapshot(any_store), any_store.writes
    any_store.fail_writes = "disk full"
    for write in every_write(any_store):
        with pytest.raises(StoreError, match="disk full"):
            write()
    with pytest.raises(StoreError, match="disk full"):
        any_store.check()
    assert snapshot(any_store) == before
    assert any_store.writes == writes
    any_store.fail_writes = None
    any_store.check()
    for write in every_write(any_store):
        write()
    assert any_store.writes == writes + len(every_write(any_store))


# -------------------------------------------------------------------- durability


def test_every_record_survives_a_reopen_exactly(sqlite_store):
    agents = [make_agent("a1"), make_agent("a2", project_id=None, last_error=None, metadata={})]
    tasks = [
        make_task(7, seq=1),
        make_task("job-1", seq=2, state=TaskState.PENDING, agent_id=None, assigned_at=None),
        finished_task(-(2**63), 3, TaskState.DEAD, 1_700_000_100.125),
        make_task("f", seq=4, state=TaskState.FAILED, retry_at=1040.0, lease_deadline=None),
    ]
    grants = [make_grant("db", token=4), make_grant("db", token=4, agent_id="a2", task_key="7")]
    for agent in agents:
        sqlite_store.put_agent(agent)
    sqlite_store.put_credential("a1", "hash-1")
    for task in reversed(tasks):
        sqlite_store.put_task(task)
    for grant in grants:
        sqlite_store.put_grant(grant)
    sqlite_store.put_config_defaults({"settings": {"x": [1, None]}, "auto_restart": False})

    store = reopened(sqlite_store)
    try:
        assert store.load_agents() == agents
        assert store.load_credentials() == {"a1": "hash-1"}
        assert store.load_tasks() == tasks
        assert [type(t.spec.task_id) for t in store.load_tasks()] == [int, str, int, str]
        assert store.load_grants() == grants
        assert store.load_fencing_counters() == {"db": 4}
        assert store.load_config_defaults() == {
            "settings": {"x": [1, None]},
            "auto_restart": False,
        }
    finally:
        store.close()


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


def test_heartbeat_times_are_not_stored(sqlite_store):
    # Monotonic readings mean nothing after a restart; recovery grants a fresh grace period.
    sqlite_store.put_agent(make_agent("a1", last_heartbeat=1234.5))
    assert sqlite_store.load_agents() == [make_agent("a1", last_heartbeat=0.0)]


def test_the_codec_writes_every_field():
    def names(cls: type) -> set[str]:
        return {f.name for f in fields(cls)}

    assert set(codec.agent_to_dict(make_agent())) == names(AgentRecord) - {"last_heartbeat"}
    assert set(codec.config_to_dict(AgentConfig())) == names(AgentConfig)
    assert set(codec.task_to_dict(make_task())) == names(Task)
    assert set(codec.spec_to_dict(make_task().spec)) == names(TaskSpec)
    assert set(codec.grant_to_dict(make_grant())) == names(LockGrant)


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**63), 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=12,
)


@settings(max_examples=50, deadline=None)
@given(
    task_id=st.integers(-(2**63), 2**63 - 1)
    | st.from_regex(r"[A-Za-z0-9._:-]{1,20}", fullmatch=True),
    payload=st.dictionaries(st.text(), json_values, max_size=4),
    result=json_values,
)
def test_any_json_task_round_trips_through_the_codec(task_id, payload, result):
    task = make_task(task_id, result=result, spec=replace(make_task(task_id).spec, payload=payload))
    raw = codec.encode(codec.task_to_dict(task))
    assert codec.task_from_dict(codec.decode(raw)) == task


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
    sqlite_store._conn.set_trace_callback(statements.append)
    sqlite_store.put_task(make_task("t1", seq=1))
    assert [s.split()[0] for s in statements] == ["INSERT"]  # no BEGIN, no COMMIT
    statements.clear()
    sqlite_store.register_agent_nowait(make_agent("a9"), "hash").wait()  # two tables
    assert [s.split()[0] for s in statements] == ["BEGIN", "INSERT", "INSERT", "COMMIT"]
    sqlite_store._conn.set_trace_callback(None)
    reopened = SQLiteStore(sqlite_store.path)
    try:
        assert [t.key for t in reopened.load_tasks()] == ["t1"]
        assert reopened.load_credentials() == {"a9": "hash"}
    finally:
        reopened.close()


def test_one_bad_write_fails_alone_and_its_group_still_commits(sqlite_store, monkeypatch):
    # Hold the writer in its first transaction so that the next three writes queue up
    # and are taken as one group; the bad one must fail without taking the others along.
    entered, release = threading.Event(), threading.Event()
    groups: list[list[int]] = []
    attempt = sqlite_store._attempt

    def gated_attempt(pending: list[Any]) -> Any:
        entered.set()
        assert release.wait(10), "test never released the writer"
        groups.append([write.statements[0][1][1] for write in pending])  # the seq param
        return attempt(pending)

    monkeypatch.setattr(sqlite_store, "_attempt", gated_attempt)
    outcomes: dict[int, BaseException | None] = {}

    def put(seq: int) -> None:
        try:
            sqlite_store.put_task(make_task(f"t{seq}", seq=seq))
            outcomes[seq] = None
        except StoreError as exc:
            outcomes[seq] = exc

    too_big_for_sqlite = 2**63
    workers = [threading.Thread(target=put, args=(1,))]
    workers[0].start()
    assert entered.wait(10)
    for seq in (too_big_for_sqlite, 2, 3):
        workers.append(threading.Thread(target=put, args=(seq,)))
        workers[-1].start()
    wait_until(lambda: sqlite_store._queue.qsize() == 3, message="three writes queued")
    release.set()
    for worker in workers:
        worker.join(10)

    assert groups == [[1], [too_big_for_sqlite, 2, 3], [2, 3]]
    assert outcomes[1] is None and outcomes[2] is None and outcomes[3] is None
    assert "too large" in str(outcomes[too_big_for_sqlite])
    assert sqlite_store.commits == 2
    assert [t.seq for t in sqlite_store.load_tasks()] == [1, 2, 3]


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
    raw.execute("PRAGMA user_version = 1")
    raw.close()
    store = SQLiteStore(db_path)
    try:
        assert store._read("PRAGMA user_version") == [(SCHEMA_VERSION,)]
        tables = {name for (name,) in store._read("SELECT name FROM sqlite_master")}
        assert "intake_reservations" in tables
        assert store.load_agents() == [make_agent("a1")]
    finally:
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


def test_prune_removes_only_old_finished_tasks(sqlite_store):
    cutoff = 2000.0
    old = [
        finished_task("old-done", 1, TaskState.COMPLETED, 1000.0),
        finished_task("old-dead", 2, TaskState.DEAD, 1000.0),
        finished_task("old-cancelled", 3, TaskState.CANCELLED, 1999.9),
    ]
    kept = [
        finished_task("new-done", 4, TaskState.COMPLETED, 2000.0),
        make_task("pending", 5, TaskState.PENDING),
        make_task("running", 6, TaskState.RUNNING),
        make_task("failed", 7, TaskState.FAILED, finished_at=1000.0),  # waiting to retry
    ]
    for task in old + kept:
        sqlite_store.put_task(task)

    assert sqlite_store.prune_tasks(cutoff, ["completed"]) == 1
    assert sqlite_store.prune_tasks(cutoff) == 2
    assert sqlite_store.prune_tasks(cutoff) == 0
    assert sqlite_store.load_tasks() == kept


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


def test_close_commits_then_refuses_everything(db_path):
    store = SQLiteStore(db_path)
    writer = next(t for t in threading.enumerate() if t.name == "orch-store-writer")
    assert writer.daemon
    store.put_task(make_task(1, seq=1))
    store.close()
    store.close()  # idempotent
    assert not store._writer.is_alive()
    for write in every_write(store):
        with pytest.raises(StoreError, match="store is closed"):
            write()
    with pytest.raises(StoreError, match="store is closed"):
        store.check()
    with pytest.raises(StoreError, match="store is closed"):
        store.load_tasks()
    store = SQLiteStore(db_path)
    try:
        assert [t.seq for t in store.load_tasks()] == [1]
    finally:
        store.close()


def test_check_proves_a_write_commits(sqlite_store):
    commits, writes = sqlite_store.commits, sqlite_store.writes
    sqlite_store.check()
    assert sqlite_store.commits == commits + 1
    assert sqlite_store.writes == writes  # the probe is not a caller's write


def test_a_write_is_seen_done_by_every_waiter_once_and_only_once_finished():
    from orch.store.sqlite import _Done

    done = _Done()
    assert not done.is_set() and done.wait(0.01) is False  # times out while unset
    released: list[bool] = []
    waiters = [threading.Thread(target=lambda: released.append(done.wait(10))) for _ in range(5)]
    for waiter in waiters:
        waiter.start()
    done.set()
    done.set()  # a second finish changes nothing
    for waiter in waiters:
        waiter.join(10)
    assert released == [True] * 5 and done.is_set() and done.wait() is True
