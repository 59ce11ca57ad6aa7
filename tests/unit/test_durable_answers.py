"""Answers wait for durability; a commit that fails after the fact is rolled back.

The Scheduler applies task changes and lets the store commit them in groups; the
facade waits for the commit before answering. These tests make commits fail *after*
the Scheduler applied the change, the case the pipelining introduces: another
connection holds the file's write lock meanwhile (``tests/store/faults.py``).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from orch import ManualClock, NotFound, Orchestrator, Settings
from orch.errors import StoreError
from orch.store import SQLiteStore
from tests.conftest import wait_until
from tests.store.faults import SQLITE_BUSY_TIMEOUT_S, LockedElsewhere


@pytest.fixture
def durable(tmp_path) -> Iterator[tuple[Orchestrator, LockedElsewhere]]:
    store = SQLiteStore(str(tmp_path / "orch.db"), busy_timeout_s=SQLITE_BUSY_TIMEOUT_S)
    failing = LockedElsewhere(store.path)
    orch = Orchestrator(
        Settings(heartbeat_interval_s=1.0), store=store, clock=ManualClock(), auto_tick=False
    ).start()
    try:
        yield orch, failing
    finally:
        failing.on = False
        orch.stop()


def test_a_submission_whose_commit_fails_is_refused_and_forgotten(durable):
    orch, failing = durable
    before = orch.stats()["tasks"]["tasks_by_state"]
    with failing, pytest.raises(StoreError, match="database is locked"):
        orch.assign_task({"n": 1}, task_id="lost-write")
    wait_until(lambda: orch.tasks() == [], message="the scheduler rebuilt from the store")
    with pytest.raises(NotFound):
        orch.task("lost-write")
    assert orch.stats()["tasks"]["tasks_by_state"] == before
    # The store works again: the same id can be submitted and is kept.
    assert orch.assign_task({"n": 1}, task_id="lost-write")["status"] == "queued"
    assert [t.key for t in orch.store.load_tasks()] == ["lost-write"]


def test_a_completion_whose_commit_fails_leaves_the_task_with_its_agent(durable):
    orch, failing = durable
    token = orch.register_agent("a1", "implementation")["token"]
    orch.start_agent("a1")
    orch.assign_task({}, task_id="t", agent_id="a1")
    orch.authenticate("a1", token)
    assert [a["task_id"] for a in orch.heartbeat("a1")["assignments"]] == ["t"]
    wait_until(lambda: orch.task("t")["status"] == "running")
    # Delivery is recorded without an answer waiting for it: let it commit before the
    # failure is armed, or the failing batch takes it along and "assigned" is restored.
    wait_until(lambda: str(orch.store.load_tasks()[0].state) == "running")
    with failing, pytest.raises(StoreError):
        orch.complete_task("a1", "t", {"done": True})
    wait_until(lambda: orch.task("t")["status"] == "running", message="rolled back")
    # The agent still holds it (resynchronised), and can complete it now.
    wait_until(lambda: [a["task_id"] for a in orch.heartbeat("a1")["assignments"]] == ["t"])
    assert orch.complete_task("a1", "t", {"done": True})["status"] == "completed"
    assert orch.store.load_tasks()[0].result == {"done": True}
