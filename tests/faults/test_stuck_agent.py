"""An agent that keeps heartbeating but never finishes its task.

Heartbeats prove the agent is alive, not that its work progresses, so they must not
extend a task's lease: the task's ``timeout_s`` alone bounds an attempt. When it runs
out the task is requeued with the attempt counted, goes to another agent if there is
one, and ends ``dead`` once ``max_attempts`` are used up. Time is a ManualClock.
"""

from __future__ import annotations

import pytest

from orch import Conflict, ManualClock, Orchestrator, TaskFailed
from tests.conftest import wait_until

TIMEOUT_S = 5.0


def beat_for(orch: Orchestrator, clock: ManualClock, agent_id: str, seconds: int) -> None:
    """Let ``seconds`` pass one at a time with the agent heartbeating every second."""
    for _ in range(seconds):
        clock.advance(1.0)
        orch.heartbeat(agent_id)
        orch.tick()


def test_a_stuck_task_times_out_and_goes_to_another_agent(
    orch: Orchestrator, clock: ManualClock
) -> None:
    orch.register_agent("stuck", "implementation")
    orch.start_agent("stuck")
    orch.assign_task({}, task_id="t", agent_id="stuck", timeout_s=TIMEOUT_S, max_attempts=3)
    assert [a["task_id"] for a in orch.heartbeat("stuck")["assignments"]] == ["t"]
    wait_until(lambda: orch.task("t")["status"] == "running")
    orch.register_agent("helper", "implementation")
    orch.start_agent("helper")

    beat_for(orch, clock, "stuck", int(TIMEOUT_S) - 1)
    orch.heartbeat("helper")
    task = orch.task("t")
    assert (task["status"], task["agent_id"]) == ("running", "stuck"), "not a second early"

    clock.advance(1.0)
    orch.heartbeat("stuck")
    orch.heartbeat("helper")
    orch.tick()
    # Requeued with the attempt counted and handed to the agent that was not stuck.
    task = wait_until(lambda: (t := orch.task("t"))["agent_id"] == "helper" and t)
    assert task["attempts"] == 2 and "timed out" in task["error"]
    assert orch.agent("stuck")["status"] == "idle"  # it is alive, only its task was not
    assert orch.stats()["tasks"]["total_tasks_timed_out"] == 1
    # The stuck agent's late answer is refused: the attempt is no longer its own.
    with pytest.raises(Conflict):
        orch.complete_task("stuck", "t", {"late": True})
    assert orch.complete_task("helper", "t", {"ok": True})["status"] == "completed"
    assert orch.task("t")["result"] == {"ok": True}


def test_a_task_that_always_sticks_ends_dead_after_max_attempts(
    orch: Orchestrator, clock: ManualClock
) -> None:
    orch.register_agent("stuck", "implementation")
    orch.start_agent("stuck")
    handle = orch.submit({}, task_id="t", timeout_s=TIMEOUT_S, max_attempts=2)
    seen_attempts = set()
    for _ in range(3 * int(TIMEOUT_S)):
        seen_attempts.update(a["attempt"] for a in orch.heartbeat("stuck")["assignments"])
        clock.advance(1.0)
        orch.tick()
        if orch.task("t")["status"] == "dead":
            break
    task = orch.task("t")
    assert task["status"] == "dead" and task["attempts"] == 2, task
    assert "timed out" in task["error"]
    assert seen_attempts == {1, 2}  # each attempt was handed out once, and only twice
    with pytest.raises(TaskFailed, match="timed out"):
        handle.result(timeout=5)
    stats = orch.stats()
    assert stats["tasks"]["total_tasks_timed_out"] == 2
    assert stats["tasks"]["total_tasks_dead"] == 1
    assert orch.agent("stuck")["status"] == "idle"
    assert orch.heartbeat("stuck")["assignments"] == []
