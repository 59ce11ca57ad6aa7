"""orch/controllers/tasks.py: submitting, the outcomes agents report, reads, TaskHandle."""

from __future__ import annotations

import pytest

from orch import Invalid, Orchestrator, TaskCancelled, Unavailable
from orch.controllers import TasksController
from orch.controllers.tasks import MAX_ERROR_CHARS, TaskHandle
from orch.validation import MAX_PAYLOAD_BYTES


@pytest.fixture
def tasks(orch: Orchestrator) -> TasksController:
    return orch.controllers.tasks


@pytest.fixture
def agent(orch: Orchestrator) -> str:
    orch.register_agent("a1", "implementation")
    orch.start_agent("a1")
    return "a1"


def test_assign_says_whether_an_agent_holds_the_task_now(tasks, agent):
    assert tasks.assign_task({}, task_id=1, agent_id=agent) == {
        "task_id": 1,
        "status": "assigned",
        "agent_id": agent,
    }
    queued = tasks.assign_task({}, agent_type="breakdown")
    assert queued["status"] == "queued" and queued["agent_id"] is None
    assert queued["task_id"].startswith("task-")  # an id is made when none is given


def test_outcomes_reported_by_the_holding_agent(tasks, agent):
    tasks.assign_task({}, task_id="ok", agent_id=agent)
    assert tasks.complete_task(agent, "ok", {"n": 1}) == {"task_id": "ok", "status": "completed"}
    assert tasks.task("ok")["result"] == {"n": 1}
    tasks.assign_task({}, task_id="bad", agent_id=agent, max_attempts=1)
    answer = tasks.fail_task(agent, "bad", "x" * (MAX_ERROR_CHARS + 10), retryable=False)
    assert answer == {"task_id": "bad", "status": "dead", "attempts": 1}
    assert len(tasks.task("bad")["error"]) == MAX_ERROR_CHARS
    for call, field in [
        (lambda: tasks.fail_task(agent, "bad", ""), "error"),
        (lambda: tasks.fail_task(agent, "bad", "e", retryable="yes"), "retryable"),
        (lambda: tasks.complete_task(agent, "bad", object()), "result"),
        (lambda: tasks.submit([1, 2]), "payload"),
        (lambda: tasks.submit({}, force=1), "force"),
        (lambda: tasks.submit({"x": "y" * MAX_PAYLOAD_BYTES}), "payload"),
    ]:
        with pytest.raises(Invalid) as info:
            call()
        assert info.value.field == field


def test_a_submitted_payload_is_a_copy(tasks):
    payload = {"items": [1]}
    handle = tasks.submit(payload, task_id="t")
    payload["items"].append(2)
    assert tasks.task("t")["payload"] == {"items": [1]}
    assert isinstance(handle, TaskHandle) and handle.status == "pending"


def test_a_cancelled_handle_raises_task_cancelled(tasks):
    handle = tasks.submit({}, task_id="c")
    assert tasks.cancel_task("c") == {"task_id": "c", "status": "cancelled"}
    with pytest.raises(TaskCancelled):
        handle.result(timeout=5)
    assert tasks.wait_for_task("c").state == "cancelled"  # ended: answered at once


def test_listings_filter_and_order(tasks, agent):
    for n in range(3):
        tasks.submit({}, task_id=n, priority=n, agent_type="breakdown")
    tasks.assign_task({}, task_id="held", agent_id=agent)
    assert [t["task_id"] for t in tasks.tasks(state="pending")] == [0, 1, 2]  # oldest first
    assert [t["task_id"] for t in tasks.tasks(agent_id=agent)] == ["held"]
    pending = tasks.pending_tasks(limit=2)
    assert [t["task_id"] for t in pending["pending_tasks"]] == [2, 1] and pending["count"] == 2
    with pytest.raises(Invalid) as info:
        tasks.tasks(state="sleepy")
    assert info.value.field == "state"  # the Python parameter; HTTP names its own


def test_after_stop_every_call_says_it_stopped():
    orch = Orchestrator(auto_tick=False).start()
    orch.stop()
    tasks = orch.controllers.tasks
    for call in (lambda: tasks.submit({}), lambda: tasks.task(1), lambda: tasks.wait_for_task(1)):
        with pytest.raises(Unavailable, match="has stopped"):
            call()
