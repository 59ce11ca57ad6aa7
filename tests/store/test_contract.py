"""The store contract (``orch/store/base.py``), held against every store in conftest.

Each test says what any store must do; what only one store has (WAL, group commit,
sync levels, its schema) is tested beside it, in ``tests/unit/test_sqlite_store.py``.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import pytest

from orch.errors import BackupError, StoreError
from orch.model import AgentConfig, AgentRecord, AgentState, LockMode, Task, TaskSpec, TaskState
from orch.store import Store
from tests.conftest import wait_until
from tests.store.records import (
    every_write,
    fill,
    finished_task,
    make_agent,
    make_answer,
    make_grant,
    make_task,
    snapshot,
)


def test_the_store_offers_everything_the_protocol_declares(store):
    declared = {name for name in vars(Store) if not name.startswith("_")}
    assert "add_commit_listener" in declared and "backup" in declared
    missing = {name for name in declared if not hasattr(store, name)}
    assert missing == set()


# ----------------------------------------------------------------- round trips

EDGE_AGENTS = [
    make_agent("a1"),
    make_agent(
        "代理-✓ 🚀",
        agent_type="类型",
        capabilities=frozenset(),
        task_keys=frozenset(),
        metadata={},
        project_id=None,
        last_error=None,
        config=AgentConfig(),
        registered_at=0.0,
    ),
    make_agent(
        "big",
        capabilities=frozenset({"ü", "z", "a"}),
        metadata={"n": 2**63 - 1, "neg": -(2**63), "s": "ñ\u2028\x00", "f": 1e-300},
        restarts=2**31,
    ),
]

EDGE_TASKS = [
    make_task(7, seq=1),
    make_task("job-1", seq=2, state=TaskState.PENDING, agent_id=None, assigned_at=None, attempts=0),
    finished_task(-(2**63), 3, TaskState.DEAD, 1_700_000_100.125),
    make_task("f", seq=4, state=TaskState.FAILED, retry_at=1040.0, lease_deadline=None),
    Task(TaskSpec(task_id="bare", payload={}), seq=5),  # every default: empty sets, None
    make_task(
        2**63 - 1,
        seq=6,
        state=TaskState.COMPLETED,
        result={"键": ["值", 2**63 - 1, None, {"deep": True}]},
        fencing_tokens={},
        spec=replace(
            make_task(2**63 - 1).spec, payload={"emoji": "🙂", "big": -(2**63)}, submitter=None
        ),
    ),
]

EDGE_GRANTS = [
    make_grant("db", token=4),
    make_grant("db", token=4, agent_id="a2", task_key="7", mode=LockMode.SHARED),
    make_grant("资源/✓", token=2**62, agent_id="代理"),
]


def without_heartbeat(record: AgentRecord) -> AgentRecord:
    return replace(record, last_heartbeat=0.0)


def test_every_record_round_trips_with_edge_values(store, reopen, backend):
    for agent in EDGE_AGENTS:
        store.put_agent(agent)
    store.put_credential("代理-✓ 🚀", "hash-✓")
    for task in reversed(EDGE_TASKS):  # stored out of order, loaded by seq
        store.put_task(task)
    for grant in EDGE_GRANTS:
        store.put_grant(grant)
    defaults = {"settings": {"x": [1, None, "ü"]}, "auto_restart": False, "big": 2**63 - 1}
    store.put_config_defaults(defaults)
    reservation = {"task_key": "7", "note": "✓", "n": None, "list": [1, 2.5]}
    store.put_reservation("todo-✓", reservation)

    def check(held: Store) -> None:
        assert held.load_agents() == EDGE_AGENTS
        assert held.load_credentials() == {"代理-✓ 🚀": "hash-✓"}
        assert held.load_tasks() == EDGE_TASKS
        assert [type(t.spec.task_id) for t in held.load_tasks()] == [int, str, int, str, str, int]
        assert held.load_grants() == EDGE_GRANTS
        assert held.load_fencing_counters() == {"db": 4, "资源/✓": 2**62}
        assert held.load_config_defaults() == defaults
        assert held.load_reservations() == {"todo-✓": reservation}

    check(store)
    if backend.persists:
        check(reopen())


def test_a_heartbeat_reading_is_never_needed_back(store):
    # Monotonic readings mean nothing after a restart: a store may drop them.
    store.put_agent(make_agent("a1", last_heartbeat=1234.5))
    [loaded] = store.load_agents()
    assert without_heartbeat(loaded) == make_agent("a1")
    assert loaded.last_heartbeat in (0.0, 1234.5)


# ------------------------------------------------------------ upserts, deletes


def test_an_agent_is_replaced_by_id_and_keeps_its_place(store):
    store.put_agent(make_agent("a1"))
    store.put_agent(make_agent("a2"))
    store.put_agent(make_agent("a1", state=AgentState.IDLE, restarts=3))
    assert store.load_agents() == [
        make_agent("a1", state=AgentState.IDLE, restarts=3),
        make_agent("a2"),
    ]


def test_registration_stores_the_agent_and_its_credential_together(store):
    store.register_agent_nowait(make_agent("a1"), "hash-1").wait()
    store.register_agent_nowait(make_agent("a1", restarts=5), "hash-2").wait()
    assert store.load_agents() == [make_agent("a1", restarts=5)]
    assert store.load_credentials() == {"a1": "hash-2"}


def test_delete_agent_removes_its_credential_too_and_a_missing_one_is_no_error(store):
    store.put_agent(make_agent("a1"))
    store.put_credential("a1", "hash-1")
    store.put_credential("a2", "hash-2")
    store.delete_agent("a1")
    store.delete_agent("never-there")
    assert store.load_agents() == []
    assert store.load_credentials() == {"a2": "hash-2"}


def test_tasks_load_in_submission_order_and_are_replaced_by_key(store):
    store.put_task(make_task("b", seq=2))
    store.put_task(make_task(1, seq=3))
    store.put_task(make_task("a", seq=1))
    done = finished_task("b", 2, TaskState.COMPLETED, 1_700_000_100.0)
    store.put_task(done)
    store.delete_task("1")
    store.delete_task("never-there")
    assert store.load_tasks() == [make_task("a", seq=1), done]


def test_grants_are_keyed_by_resource_agent_and_task(store):
    plain = make_grant("db", token=1)
    for_task = make_grant("db", token=2, mode=LockMode.SHARED, task_key="7")
    store.put_grant(plain)
    store.put_grant(for_task)
    store.put_grant(replace(plain, expires_at=1_700_000_999.0))
    assert store.load_grants() == [replace(plain, expires_at=1_700_000_999.0), for_task]
    store.delete_grant(plain)
    store.delete_grant(make_grant("never-there"))
    assert store.load_grants() == [for_task]


def test_fencing_counters_only_rise_and_survive_a_reopen(store, reopen, backend):
    store.put_grant(make_grant("db", token=5))
    store.put_grant(make_grant("db", token=3, agent_id="a2"))  # older, stored again
    store.put_grant(make_grant("disk", token=0))  # no token, no counter
    assert store.load_fencing_counters() == {"db": 5}
    store.put_grant(make_grant("db", token=9))
    store.delete_grant(make_grant("db", token=9))
    store.delete_grant(make_grant("db", token=3, agent_id="a2"))
    assert store.load_fencing_counters() == {"db": 9}
    if backend.persists:
        again = reopen()
        assert again.load_fencing_counters() == {"db": 9}
        again.put_grant(make_grant("db", token=2))
        assert again.load_fencing_counters() == {"db": 9}


def test_config_defaults_are_replaced_whole(store):
    assert store.load_config_defaults() == {}
    store.put_config_defaults({"a": 1, "b": {"c": [1, 2]}})
    store.put_config_defaults({"b": 2})
    assert store.load_config_defaults() == {"b": 2}


def test_reservations_are_replaced_by_id_and_deleted(store):
    assert store.load_reservations() == {}
    store.put_reservation("t1", {"task_key": "1"})
    store.put_reservation("t2", {"task_key": "2"})
    store.put_reservation("t1", {"task_key": "1b", "extra": [1]})
    store.delete_reservation("t2")
    store.delete_reservation("never-there")
    assert store.load_reservations() == {"t1": {"task_key": "1b", "extra": [1]}}


def test_prune_removes_only_finished_tasks_that_ended_before_the_cutoff(store):
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
        make_task("assigned", 8, TaskState.ASSIGNED, finished_at=1000.0),
    ]
    for task in old + kept:
        store.put_task(task)
    assert store.prune_tasks(cutoff) == 3
    assert store.prune_tasks(cutoff) == 0
    assert store.load_tasks() == kept


def test_an_idempotent_answer_round_trips_byte_for_byte_and_survives_a_reopen(
    store, reopen, backend
):
    odd = make_answer(
        "✓-" + "k" * 253,
        scope="",
        status=422,
        headers=(("content-type", "application/problem+json"), ("x-ü", "v")),
        body=bytes(range(256)) + "✓".encode(),
    )
    assert store.load_idempotent_answer("scope-1", "k1") is None
    store.put_idempotent_answer(make_answer("k1"))
    store.put_idempotent_answer(odd)

    def check(held: Store) -> None:
        assert held.load_idempotent_answer("scope-1", "k1") == make_answer("k1")
        assert held.load_idempotent_answer("", odd.key) == odd
        # Keys are scoped: the same key under another credential is another record.
        assert held.load_idempotent_answer("scope-2", "k1") is None
        assert held.load_idempotent_answer("", "k1") is None

    check(store)
    if backend.persists:
        check(reopen())


def test_an_idempotent_answer_is_replaced_by_scope_and_key(store):
    store.put_idempotent_answer(make_answer("k1"))
    later = make_answer("k1", fingerprint="other", status=200, body=b"{}", expires_at=2e9)
    store.put_idempotent_answer(later)
    assert store.load_idempotent_answer("scope-1", "k1") == later


def test_pruning_removes_only_answers_expired_before_the_cutoff(store, reopen, backend):
    store.put_idempotent_answer(make_answer("old", expires_at=1000.0))
    store.put_idempotent_answer(make_answer("edge", expires_at=2000.0))
    store.put_idempotent_answer(make_answer("new", expires_at=3000.0))
    assert store.prune_idempotent_answers(2000.0) == 1
    assert store.prune_idempotent_answers(2000.0) == 0
    assert store.load_idempotent_answer("scope-1", "old") is None
    kept = [store.load_idempotent_answer("scope-1", key) for key in ("edge", "new")]
    assert kept == [make_answer("edge", expires_at=2000.0), make_answer("new", expires_at=3000.0)]
    if backend.persists:
        again = reopen()
        assert again.load_idempotent_answer("scope-1", "old") is None
        assert again.load_idempotent_answer("scope-1", "new") == kept[1]


def test_pruning_many_answers_deletes_them_all(store):
    for i in range(1203):  # more than any store's batch (SQLite's is 500)
        store.put_idempotent_answer(make_answer(f"k{i}", expires_at=1000.0 + i))
    assert store.prune_idempotent_answers(1000.0 + 1200) == 1200
    assert store.load_idempotent_answer("scope-1", "k1199") is None
    assert store.load_idempotent_answer("scope-1", "k1200") is not None


# -------------------------------------------------------- queued writes, order


def test_queued_writes_are_durable_once_waited_for(store, reopen, backend):
    pending = [
        store.put_task_nowait(make_task("t1", seq=1)),
        store.put_agent_nowait(make_agent("a1")),
        store.register_agent_nowait(make_agent("a2"), "hash-2"),
    ]
    for write in pending:
        write.wait()
        write.wait()  # asking again gives the same outcome
        assert write.done() and not write.failed()
    if backend.persists:
        store = reopen()
    assert [t.key for t in store.load_tasks()] == ["t1"]
    assert store.load_agents() == [make_agent("a1"), make_agent("a2")]
    assert store.load_credentials() == {"a2": "hash-2"}


def test_writes_of_one_thread_take_effect_in_the_order_issued(store):
    first = store.put_task_nowait(make_task("t", seq=1, attempts=1))
    second = store.put_task_nowait(make_task("t", seq=1, attempts=2))
    store.put_task(make_task("u", seq=2, attempts=1))
    store.put_task_nowait(make_task("u", seq=2, attempts=2)).wait()
    last = store.put_agent_nowait(make_agent("a1", restarts=1))
    store.put_agent(make_agent("a1", restarts=2))
    for write in (first, second, last):
        write.wait()
    assert [(t.key, t.attempts) for t in store.load_tasks()] == [("t", 2), ("u", 2)]
    assert [a.restarts for a in store.load_agents()] == [2]


def test_concurrent_writers_each_get_every_write_stored(store):
    threads, per_thread = 8, 25

    def submit(thread: int) -> None:
        for i in range(per_thread):
            seq = thread * per_thread + i
            if i % 2:
                store.put_task(make_task(f"t{seq}", seq=seq))
            else:
                store.put_task_nowait(make_task(f"t{seq}", seq=seq)).wait()

    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(submit, range(threads)))  # re-raises any writer's exception
    assert [t.seq for t in store.load_tasks()] == list(range(threads * per_thread))


# -------------------------------------------------------------------- failures


def test_a_failed_write_changes_nothing_and_the_store_recovers(store, backend):
    fill(store)
    store.check()
    before = snapshot(store)
    stats = store.stats()
    for failing in backend.failures:
        with failing(store):
            for write in every_write(store):
                with pytest.raises(StoreError):
                    write()
            with pytest.raises(StoreError):
                store.check()
            assert snapshot(store) == before
    after = store.stats()
    assert after["writes"] == stats["writes"]
    assert after["failed_writes"] >= stats["failed_writes"] + len(every_write(store))
    store.check()
    for write in every_write(store):
        write()
    assert store.stats()["writes"] == stats["writes"] + len(every_write(store))
    assert snapshot(store) != before


def test_a_queued_write_that_fails_is_refused_at_once_or_reports_it(store, backend):
    fill(store)
    before = snapshot(store)
    queued = [
        lambda: store.put_task_nowait(make_task(8, seq=2)),
        lambda: store.put_agent_nowait(make_agent("a2")),
        lambda: store.register_agent_nowait(make_agent("a3"), "hash-3"),
    ]
    for failing in backend.failures:
        with failing(store):
            for write in queued:
                try:
                    pending = write()
                except StoreError:
                    continue  # seen at once: nothing was queued
                with pytest.raises(StoreError):
                    pending.wait()
                assert pending.done() and pending.failed()
                with pytest.raises(StoreError):
                    pending.wait()  # the outcome does not change
        assert snapshot(store) == before


def test_a_value_json_cannot_hold_is_refused_or_stored_whole(store):
    # A persistent store refuses what it cannot encode, before anything is written;
    # one that keeps objects as they are may accept it. Neither stores half of it.
    fill(store)
    before = snapshot(store)
    try:
        store.put_task(make_task(8, seq=2, result=object()))
    except StoreError as exc:
        assert "cannot be stored" in str(exc)
        assert snapshot(store) == before
    else:
        assert len(store.load_tasks()) == 2


# ----------------------------------------------------------- commit listeners


def test_commit_listeners_are_told_once_writes_have_ended(store, backend):
    # Each call records what the store holds at that moment, so a call made once a
    # write had ended shows it; after a failed write, any call after it will do.
    seen: list[int] = []

    def listener() -> None:
        seen.append(len(store.load_tasks()))

    def broken() -> None:
        raise RuntimeError("a listener's bug")

    store.add_commit_listener(broken)  # logged, never the writer's or the caller's problem
    store.add_commit_listener(listener)
    store.put_task_nowait(make_task("t1", seq=1)).wait()
    wait_until(lambda: 1 in seen, message="a call once the write was durable")
    store.put_task(make_task("t2", seq=2))
    wait_until(lambda: 2 in seen, message="a call after a write that was not queued")

    for failing in backend.failures:
        with failing(store):
            try:
                failed = store.put_task_nowait(make_task("t3", seq=3))
            except StoreError:
                continue  # refused at once: the caller knows, nothing to look at
            calls = len(seen)
            with pytest.raises(StoreError):
                failed.wait()
            wait_until(lambda n=calls: len(seen) > n, message="a call once the write failed")

    store.remove_commit_listener(listener)
    store.remove_commit_listener(lambda: None)  # never added: no error
    calls = len(seen)
    store.put_task(make_task("t4", seq=4))
    store.check()  # commits after the write: any call for it would have been made
    assert len(seen) == calls


# --------------------------------------------------------- operation: stats, backup


def test_stats_count_writes_and_failures(store, backend):
    stats = store.stats()
    assert {"writes", "failed_writes", "queued_writes"} <= set(stats)
    assert all(isinstance(stats[key], int) for key in ("writes", "failed_writes", "queued_writes"))
    store.put_task(make_task(1, seq=1))
    store.put_agent_nowait(make_agent("a1")).wait()
    assert store.stats()["writes"] == stats["writes"] + 2
    with backend.failures[0](store), pytest.raises(StoreError):
        store.put_task(make_task(2, seq=2))
    later = store.stats()
    assert later["failed_writes"] == stats["failed_writes"] + 1
    assert later["queued_writes"] == 0  # nothing is left waiting
    if "commits" in later:
        assert isinstance(later["commits"], int) and later["commits"] >= 1
    if "commit_seconds" in later:
        timing = later["commit_seconds"]
        counts = [count for _, count in timing["buckets"]]
        assert counts == sorted(counts) and counts[-1] <= timing["count"]
        assert timing["count"] >= 1 and timing["sum"] >= 0.0
    if "bytes" in later:
        assert later["bytes"] > 0


def test_a_backup_holds_everything_stored_or_is_refused(store, backend, tmp_path: Path):
    fill(store)
    store.put_task(finished_task("done", 2, TaskState.COMPLETED, 1000.0))
    dest = tmp_path / "backup.db"
    if backend.open_backup is None:
        with pytest.raises(BackupError):
            store.backup(str(dest))
        assert not dest.exists()
        return
    summary = store.backup(str(dest))
    assert (summary.agents, summary.tasks, summary.unfinished_tasks) == (1, 2, 1)
    assert (summary.lock_grants, summary.schema_version) == (1, store.schema_version)
    assert summary.dest == str(dest) and summary.bytes == dest.stat().st_size
    store.put_task(make_task("after", seq=3))  # the backup is a copy, not a view
    with pytest.raises(BackupError, match="already exists"):
        store.backup(str(dest))
    copy = backend.open_backup(str(dest))
    try:
        assert snapshot(copy) == (
            [make_agent("a1")],
            {"a1": "hash-1"},
            [make_task(7, seq=1), finished_task("done", 2, TaskState.COMPLETED, 1000.0)],
            [make_grant("db", token=5)],
            {"db": 5},
            {"max_concurrent_tasks": 2},
            {"todo-1": {"task_key": "7", "claimed_at": 1.5}},
            [make_answer("k1"), None],
        )
    finally:
        copy.close()


def test_the_schema_version_says_what_the_store_holds(store, reopen, backend):
    version = store.schema_version
    assert isinstance(version, int) and version >= 0
    if backend.persists:
        assert version > 0
        assert reopen().schema_version == version


# ------------------------------------------------------------------- lifecycle


def test_check_passes_on_a_healthy_store_without_counting_as_a_write(store):
    writes = store.stats()["writes"]
    store.check()
    store.check()
    assert store.stats()["writes"] == writes


def test_close_ends_every_queued_write_then_refuses_everything(store, reopen, backend, tmp_path):
    queued = [store.put_task_nowait(make_task(f"t{i}", seq=i)) for i in range(20)]
    store.close()
    store.close()  # idempotent
    assert all(write.done() and not write.failed() for write in queued)
    for write in every_write(store):
        with pytest.raises(StoreError, match="store is closed"):
            write()
    with pytest.raises(StoreError, match="store is closed"):
        store.check()
    for load in (store.load_agents, store.load_tasks, store.load_grants, store.load_credentials):
        with pytest.raises(StoreError, match="store is closed"):
            load()
    with pytest.raises(StoreError):
        store.backup(str(tmp_path / "after-close.db"))
    assert store.stats()["queued_writes"] == 0  # still answers
    if backend.persists:
        assert [t.seq for t in reopen().load_tasks()] == list(range(20))
