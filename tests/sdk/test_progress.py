"""Progress over the SDK: ``task.progress(...)``, ``AgentClient.progress`` and the endpoint."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from orch.client import AssignedTask, OrchestratorClient
from orch.errors import Forbidden, Invalid, Unavailable
from tests.sdk.conftest import agent_client


def test_a_task_reports_its_progress_and_the_task_and_feed_show_it(
    url: str, admin: OrchestratorClient, name: Callable
):
    capability = name("progress")
    task_id = admin.assign_task({"n": 1}, capabilities=[capability])["task_id"]
    with agent_client(url, name("reporter"), capability) as agent:
        task = agent.next_task(timeout=10)
        assert task is not None and task.task_id == task_id
        answer = task.progress("halfway through the tests", 50)
        assert answer["progress"]["message"] == "halfway through the tests"
        assert admin.task(task_id)["progress"]["percent"] == 50.0

        agent.progress(task_id, "all green")  # by id too, percent left out
        progress = admin.task(task_id)["progress"]
        assert progress["message"] == "all green" and progress["percent"] is None
        agent.complete(task, {"ok": True})
    events = [
        e
        for e in admin.events(0)["events"]
        if e["type"] == "task.progress" and e["task_id"] == task_id
    ]
    assert events and events[0]["message"] == "halfway through the tests"
    assert events[0]["agent_id"] == agent.agent_id and events[0]["attempt"] == 1


def test_bounds_and_the_holder_rule_come_back_as_errors(
    url: str, admin: OrchestratorClient, name: Callable
):
    capability = name("bounded")
    task_id = admin.assign_task({}, capabilities=[capability])["task_id"]
    with (
        agent_client(url, name("holder"), capability) as holder,
        agent_client(url, name("other"), name("nothing")) as other,
    ):
        task = holder.next_task(timeout=10)
        assert task is not None
        with pytest.raises(Invalid) as too_long:
            task.progress("x" * 1025)
        assert too_long.value.field == "message"
        with pytest.raises(Invalid) as too_far:
            task.progress("m", 150)
        assert too_far.value.field == "percent"
        with pytest.raises(Forbidden):
            other.progress(task_id, "not mine")
        assert admin.task(task_id)["progress"] is None
        holder.complete(task)


def test_a_task_built_by_hand_says_how_to_report():
    task = AssignedTask(task_id=1, payload={}, attempt=1)
    with pytest.raises(Unavailable, match="report_progress"):
        task.progress("m")
