"""Answers wait for durability; a commit that fails after the fact is rolled back.

The Scheduler applies task changes and lets the store commit them in groups; the
facade waits for the commit before answering. These tests make commits fail *after*
the Scheduler applied the change, the case the pipelining introduces.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from orch import ManualClock, NotFound, Orchestrator, Settings
from orch.errors import StoreError
from orch.store import SQLiteStore
from tests.conftest import wait_until


class FailingCommits:
    """Make the SQLite writer's next transactions fail as a full disk would."""

    def __init__(self, store: SQLiteStore) -> None:
        self.store = store
        self.remaining = 0
        self._attempt = store._attempt
        store._attempt = self.attempt  # type: ignore[method-assign]

    def attempt(self, pending):
        if self.remaining > 0:
            self.remaining -= 1
            return None, "database or disk is full (SQLITE_FULL)"
        return self._attempt(pending)


@pytest.fixture
def durable(tmp_path) -> Iterator[tuple[Orchestrator, FailingCommits]]:
    store = SQLiteStore(str(tmp_path / "orch.db"))
    failing = FailingCommits(store)
    orch = Orchestrator(
        Settings(heartbeat_interval_s=1.0), store=store, clock=ManualClock(), auto_tick=False
    ).start()
    try:
        yield orch, failing
    finally:
        orch.stop()


def test_a_submission_whose_commit_fails_is_refused_and_forgotten(durable):
    orch, failing = durable
    before = orch.stats()["tasks"]["tasks_by_state"]
    failing.remaining = 1
    with pytest.raises(StoreError, match="disk is full"):
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
    failing.remaining = 1
    with pytest.raises(StoreError):
        orch.complete_task("a1", "t", {"done": True})
    wait_until(lambda: orch.task("t")["status"] == "running", message="rolled back")
    # The agent still holds it (resynchronised), and can complete it now.
    wait_until(lambda: [a["task_id"] for a in orch.heartbeat("a1")["assignments"]] == ["t"])
    assert orch.complete_task("a1", "t", {"done": True})["status"] == "completed"
    assert orch.store.load_tasks()[0].result == {"done": True}
