"""orch/actors/scheduler.py through the facade, on a manual clock.

The rules themselves are tested on the TaskTable alone (test_task_table.py); here,
that the actor stores each change before keeping it and carries out what follows.
"""

from collections.abc import Callable

import pytest

from orch import Conflict, Invalid, NotFound, Orchestrator
from orch.actors.scheduler import TaskView
from orch.errors import StoreError
from orch.model import Task, TaskState
from orch.store import MemoryStore
from tests.conftest import wait_until


def remote(orch, agent_id, agent_type="implementation", caps=("code",), slots=1, start=True):
    token = orch.register_agent(agent_id, agent_type, caps, max_concurrent_tasks=slots)["token"]
    if start:
        orch.start_agent(agent_id)
    return token


def held(orch, agent_id):
    return [t["task_id"] for t in orch.agent_tasks(agent_id)["tasks"]]


def test_named_assignment_then_busy_agent_conflicts(orch):
    remote(orch, "a1")
    answer = orch.assign_task({"x": 1}, task_id=123, agent_id="a1")
    assert answer == {"task_id": 123, "status": "assigned", "agent_id": "a1"}
    with pytest.raises(Conflict, match="busy"):
        orch.assign_task({}, task_id=124, agent_id="a1")
    with pytest.raises(NotFound):
        orch.assign_task({}, task_id=125, agent_id="ghost")
    with pytest.raises(NotFound):
        orch.task(124)  # the refused assignment queued nothing


def test_named_agent_not_started_conflicts(orch):
    remote(orch, "a1", start=False)
    with pytest.raises(Conflict, match="not started"):
        orch.assign_task({}, task_id=1, agent_id="a1")


def test_queued_until_an_agent_appears_then_priority_order(orch):
    low = orch.assign_task({}, task_id="low", priority=1)
    high = orch.assign_task({}, task_id="high", priority=9)
    assert low["status"] == high["status"] == "queued"
    assert [t["task_id"] for t in orch.pending_tasks()["pending_tasks"]] == ["high", "low"]
    remote(orch, "a1")
    wait_until(lambda: held(orch, "a1") == ["high"])
    assert orch.pending_tasks()["count"] == 1


def test_capabilities_route_tasks(orch):
    remote(orch, "coder", caps=("code",))
    remote(orch, "tester", caps=("test",))
    orch.assign_task({}, task_id="t", capabilities=["test"])
    orch.assign_task({}, task_id="c", capabilities=["code"])
    wait_until(lambda: held(orch, "tester") == ["t"] and held(orch, "coder") == ["c"])


def test_heartbeat_delivers_and_marks_running_then_complete(orch):
    remote(orch, "a1")
    orch.assign_task({"do": "it"}, task_id=7, agent_id="a1")
    beat = orch.heartbeat("a1")
    assert [a["task_id"] for a in beat["assignments"]] == [7]
    assert beat["assignments"][0]["payload"] == {"do": "it"}
    wait_until(lambda: orch.task(7)["status"] == "running")
    assert orch.complete_task("a1", "7", {"ok": True}) == {"task_id": 7, "status": "completed"}
    assert orch.task(7)["result"] == {"ok": True}
    assert orch.heartbeat("a1")["assignments"] == []
    with pytest.raises(Conflict, match="completed"):
        orch.complete_task("a1", 7, {})


def test_only_the_holder_may_complete(orch):
    remote(orch, "a1")
    remote(orch, "a2")
    orch.assign_task({}, task_id=1, agent_id="a1")
    with pytest.raises(Conflict, match="not assigned to agent 'a2'"):
        orch.complete_task("a2", 1, None)
    assert orch.task(1)["status"] == "assigned"


def test_failure_retries_with_backoff_then_dead(orch, clock):
    remote(orch, "a1")
    orch.assign_task({}, task_id="t", max_attempts=2)
    wait_until(lambda: held(orch, "a1") == ["t"])
    assert orch.fail_task("a1", "t", "flaky")["status"] == "failed"
    clock.advance(0.9)
    orch.tick()
    assert orch.task("t")["status"] == "failed"  # backoff (1 s) not over yet
    clock.advance(0.2)
    orch.tick()
    wait_until(lambda: orch.task("t")["status"] == "assigned")
    assert orch.task("t")["attempts"] == 2
    assert orch.fail_task("a1", "t", "flaky again")["status"] == "dead"
    assert orch.task("t")["error"] == "flaky again"
    assert orch.stats()["total_tasks_failed"] == 2


def test_non_retryable_failure_is_dead_at_once(orch):
    remote(orch, "a1")
    orch.assign_task({}, task_id="t", agent_id="a1")
    assert orch.fail_task("a1", "t", "bad input", retryable=False)["status"] == "dead"


def test_timeout_requeues_counting_the_attempt_then_dead(orch, clock):
    remote(orch, "a1")
    orch.assign_task({}, task_id="slow", agent_id="a1", timeout_s=10, max_attempts=2)
    clock.advance(5)
    orch.heartbeat("a1")
    orch.tick()
    assert orch.task("slow")["status"] == "running"  # delivered by the heartbeat
    clock.advance(5.1)
    orch.heartbeat("a1")
    orch.tick()
    wait_until(lambda: orch.task("slow")["attempts"] == 2)
    assert orch.task("slow")["status"] in {"assigned", "running"}
    clock.advance(10.1)
    orch.heartbeat("a1")
    orch.tick()
    wait_until(lambda: orch.task("slow")["status"] == "dead")
    assert "timed out" in orch.task("slow")["error"]
    assert orch.stats()["tasks"]["total_tasks_timed_out"] == 2


def test_cancel_pending_and_assigned(orch):
    orch.assign_task({}, task_id="p")
    assert orch.cancel_task("p")["status"] == "cancelled"
    remote(orch, "a1")
    orch.assign_task({}, task_id="a", agent_id="a1")
    orch.cancel_task("a")
    wait_until(lambda: held(orch, "a1") == [])
    assert orch.heartbeat("a1")["assignments"] == []
    with pytest.raises(Conflict, match="already ended"):
        orch.cancel_task("a")
    assert orch.pending_tasks()["count"] == 0  # p did not come back


def test_active_task_id_conflicts_unless_forced(orch):
    orch.assign_task({"v": 1}, task_id=5)
    with pytest.raises(Conflict, match="force"):
        orch.assign_task({"v": 2}, task_id=5)
    assert orch.task(5)["payload"] == {"v": 1}
    orch.assign_task({"v": 3}, task_id=5, force=True)
    assert orch.task(5)["payload"] == {"v": 3}
    assert orch.pending_tasks()["count"] == 1


def test_resources_make_scheduling_conflict_free(orch):
    remote(orch, "a1")
    remote(orch, "a2")
    orch.assign_task({}, task_id="first", resources=["repo:june"])
    orch.assign_task({}, task_id="second", resources=["repo:june"])
    wait_until(lambda: orch.task("first")["status"] == "assigned")
    assert orch.task("second")["status"] == "pending"
    holder = orch.task("first")["agent_id"]
    token = orch.task("first")["fencing_tokens"]["repo:june"]
    orch.complete_task(holder, "first", None)
    wait_until(lambda: orch.task("second")["status"] == "assigned")
    assert orch.task("second")["fencing_tokens"]["repo:june"] > token


def test_bad_input_changes_nothing(orch, store):
    writes = store.writes
    for kwargs, field in [
        ({"priority": 11}, "priority"),
        ({"task_id": "no spaces"}, "task_id"),
        ({"capabilities": [1]}, "capabilities"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"timeout_s": -1}, "timeout_s"),
    ]:
        with pytest.raises(Invalid) as info:
            orch.assign_task({}, **kwargs)
        assert info.value.field == field
    with pytest.raises(Invalid) as info:
        orch.assign_task({"x": object()})
    assert info.value.field == "payload"
    assert store.writes == writes
    assert orch.pending_tasks()["count"] == 0


def test_store_failure_leaves_task_unchanged(orch, store):
    remote(orch, "a1")
    orch.assign_task({}, task_id=1, agent_id="a1")
    store.fail_writes = "disk full"
    from orch.errors import StoreError

    with pytest.raises(StoreError):
        orch.complete_task("a1", 1, {})
    store.fail_writes = None
    assert orch.task(1)["status"] == "assigned"
    orch.complete_task("a1", 1, {})
    assert orch.task(1)["status"] == "completed"


# ------------------------------------------------- the actor applies the table's plans


class WitnessStore(MemoryStore):
    """Notes, at each task write, what the Scheduler held for that task then."""

    def __init__(self) -> None:
        super().__init__()
        self.view: TaskView | None = None
        self.seen: list[tuple[str, str | None]] = []
        self.refuse: Callable[[Task], bool] | None = None

    def put_task(self, task: Task) -> None:
        kept = self.view.get(task.key) if self.view is not None else None
        self.seen.append((str(task.state), None if kept is None else str(kept.state)))
        if self.refuse is not None and self.refuse(task):
            raise StoreError("store write failed: disk full")
        super().put_task(task)


@pytest.fixture
def witnessed(settings, clock):
    store = WitnessStore()
    orch = Orchestrator(settings, store=store, clock=clock, auto_tick=False).start()
    store.view = orch.actors.task_view
    try:
        yield orch, store
    finally:
        orch.stop()


def test_each_change_is_stored_before_it_is_kept(witnessed):
    orch, store = witnessed
    remote(orch, "a1")
    orch.assign_task({}, task_id=1, agent_id="a1")
    orch.complete_task("a1", 1, {"ok": True})
    orch.assign_task({}, task_id=2)  # queued, then leased to a1 at once
    orch.cancel_task(2)
    assert store.seen == [
        ("assigned", None),
        ("completed", "assigned"),
        ("pending", None),
        ("assigned", "pending"),
        ("cancelled", "assigned"),
    ]


def test_a_refused_lease_write_gives_back_its_locks_and_the_task_waits(witnessed):
    orch, store = witnessed
    store.refuse = lambda task: task.state is TaskState.ASSIGNED
    orch.assign_task({}, task_id="t", resources=["repo"])
    remote(orch, "a1")  # dispatch leases t to a1, and the store refuses that
    wait_until(lambda: ("assigned", "pending") in store.seen)
    wait_until(lambda: orch.locks() == [], message="the task's lock was given back")
    assert orch.task("t")["status"] == "pending"
    store.refuse = None
    orch.tick()
    wait_until(lambda: orch.task("t")["status"] == "assigned")
    assert [lock["resource"] for lock in orch.locks()] == ["repo"]


def test_a_task_cycle_is_announced_and_its_agent_told(orch, clock):
    orch.assign_task({}, task_id="t", priority=4)
    clock.advance(2)
    remote(orch, "a1")
    wait_until(lambda: held(orch, "a1") == ["t"])
    assert [a["task_id"] for a in orch.heartbeat("a1")["assignments"]] == ["t"]
    clock.advance(3)
    orch.complete_task("a1", "t", 1)
    assert orch.heartbeat("a1")["assignments"] == []  # told to release it
    events = [e for e in orch.events_log.since(0) if e.type.startswith("task.")]
    assert [(e.type, e.data) for e in events] == [
        ("task.queued", {"task_id": "t", "priority": 4}),
        ("task.assigned", {"task_id": "t", "agent_id": "a1", "attempt": 1, "queue_wait_s": 2.0}),
        ("task.completed", {"task_id": "t", "agent_id": "a1", "attempts": 1, "run_s": 3.0}),
    ]
