"""``AgentClient(token=...)``: joining a registration someone else made (a launcher's)."""

from __future__ import annotations

from collections.abc import Callable

from orch.client import AgentClient, OrchestratorClient
from tests.conftest import wait_until


def test_a_joined_agent_neither_registers_starts_nor_stops_and_takes_work(
    url: str, admin: OrchestratorClient, name: Callable
):
    agent_id, capability = name("joined"), name("cap")
    token = admin.register_agent(agent_id, "implementation", capabilities=[capability]).token
    admin.start_agent(agent_id)
    task_id = admin.assign_task({"n": 1}, capabilities=[capability])["task_id"]
    # No admin token: the process a launcher starts never has one.
    with AgentClient(url, agent_id=agent_id, token=token, poll_interval_s=0.05) as agent:
        assert agent.joined and agent.registrations == 0
        task = agent.next_task(timeout=10)
        assert task is not None and task.task_id == task_id
        agent.complete(task, result={"ok": True})
    assert admin.task(task_id)["status"] == "completed"
    assert admin.agent(agent_id)["status"] == "idle"  # stopping is the launcher's call
    assert agent.registrations == 0 and admin.agent(agent_id)["restarts"] == 0


def test_a_joined_agent_does_not_register_again_when_removed(
    url: str, admin: OrchestratorClient, name: Callable
):
    agent_id = name("joined")
    token = admin.register_agent(agent_id, "implementation").token
    admin.start_agent(agent_id)
    with AgentClient(url, agent_id=agent_id, token=token, poll_interval_s=0.05) as agent:
        admin.deregister_agent(agent_id)
        wait_until(lambda: agent.last_error is not None, timeout_s=10)
        assert agent.registrations == 0
    assert all(a["agent_id"] != agent_id for a in admin.agents(limit=100000)["agents"])
