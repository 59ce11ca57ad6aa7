"""``AgentClient`` (orch/client/agent.py) against the real server: cadence, recovery, shutdown."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Callable

import pytest

from orch.client import AgentClient, AssignedTask, OrchestratorClient
from orch.errors import Conflict, Unauthorized, Unavailable
from tests.conftest import wait_until
from tests.sdk.conftest import ADMIN_TOKEN, Line, agent_client


def status_of(admin: OrchestratorClient, agent_id: str) -> str:
    return admin.agent(agent_id)["status"]


def events_of(admin: OrchestratorClient, agent_id: str) -> list[str]:
    return [e["type"] for e in admin.events(0)["events"] if e.get("agent_id") == agent_id]


def test_the_readme_snippet_works_as_written(url: str, admin: OrchestratorClient, name: Callable):
    capability = name("code")
    task_id = admin.assign_task({"msg": "hi"}, capabilities=[capability])["task_id"]
    with AgentClient(
        url,
        agent_id=name("worker"),
        agent_type="implementation",
        capabilities=[capability],
        admin_token=ADMIN_TOKEN,
    ) as agent:
        for task in agent.tasks(timeout=5):
            with agent.lock(name("repo:june"), ttl_s=30):
                result = {"echo": task.payload}
            agent.complete(task, result=result)
            break
    finished = admin.task(task_id)
    assert finished["status"] == "completed"
    assert finished["result"] == {"echo": {"msg": "hi"}}


def test_heartbeat_cadence_follows_config_changes(
    url: str, admin: OrchestratorClient, name: Callable
):
    agent_id = name("cadence")
    seen_configs: list[dict] = []
    with agent_client(url, agent_id, on_config_change=seen_configs.append) as agent:
        assert agent.heartbeat_interval_s == 0.2
        assert agent.config["version"] == 1

        admin.update_agent_config(agent_id, {"heartbeat_interval_s": 0.6})
        wait_until(lambda: agent.heartbeat_interval_s == 0.6, message="new interval not seen")
        since = len(agent.recent_heartbeats_at)
        wait_until(lambda: len(agent.recent_heartbeats_at) >= since + 3, timeout_s=5)
        slow = list(agent.recent_heartbeats_at)[since - 1 :]
        slow_gaps = [b - a for a, b in itertools.pairwise(slow)]
        assert min(slow_gaps) >= 0.5, slow_gaps

        admin.update_agent_config(agent_id, {"heartbeat_interval_s": 0.1})
        wait_until(lambda: agent.heartbeat_interval_s == 0.1)
        since = len(agent.recent_heartbeats_at)
        wait_until(lambda: len(agent.recent_heartbeats_at) >= since + 6, timeout_s=5)
        fast = list(agent.recent_heartbeats_at)[since - 1 :]
        fast_gaps = sorted(b - a for a, b in itertools.pairwise(fast))
        assert fast_gaps[len(fast_gaps) // 2] < 0.3, fast_gaps

    # The config was read again at every version change and handed to the callback.
    assert [c["version"] for c in seen_configs] == [1, 2, 3]
    assert [c["heartbeat_interval_s"] for c in seen_configs] == [0.2, 0.6, 0.1]


def test_registers_again_after_being_declared_lost(
    server_factory: Callable, line_to: Callable[[str], Line], name: Callable
):
    server = server_factory(
        ORCH_ADMIN_TOKEN=ADMIN_TOKEN,
        ORCH_HEARTBEAT_INTERVAL_S="0.1",
        ORCH_UNHEALTHY_AFTER_MISSED="2",
        ORCH_LOST_AFTER_MISSED="4",
    )
    line = line_to(server.url)
    admin = OrchestratorClient(server.url, token=ADMIN_TOKEN)
    agent_id, capability = name("partitioned"), name("cap")
    with agent_client(line.url, agent_id, capability) as agent:
        wait_until(lambda: agent.heartbeats >= 2)
        line.cut()  # the agent can no longer reach the orchestrator
        wait_until(lambda: status_of(admin, agent_id) == "lost", timeout_s=10)
        line.heal()
        wait_until(lambda: agent.registrations == 2, timeout_s=10, message="not re-registered")
        wait_until(lambda: status_of(admin, agent_id) == "idle")

        # It is a working agent again: it receives and completes work.
        task_id = admin.assign_task({"n": 1}, capabilities=[capability])["task_id"]
        task = agent.next_task(timeout=5)
        assert task is not None and task.task_id == task_id
        agent.complete(task, result="after the outage")
    assert admin.task(task_id)["status"] == "completed"
    kinds = events_of(admin, agent_id)
    registered_at = [i for i, kind in enumerate(kinds) if kind == "agent.registered"]
    assert len(registered_at) == 2 and registered_at[1] > kinds.index("agent.lost")


def test_registers_again_after_being_deregistered(
    url: str, admin: OrchestratorClient, name: Callable
):
    agent_id = name("removed")
    with agent_client(url, agent_id) as agent:
        wait_until(lambda: agent.heartbeats >= 1)
        admin.deregister_agent(agent_id)
        wait_until(lambda: agent.registrations == 2, message="not re-registered")
        wait_until(lambda: status_of(admin, agent_id) == "idle")
    assert status_of(admin, agent_id) == "stopped"


def test_each_assignment_is_yielded_once_though_every_beat_lists_it(
    url: str, admin: OrchestratorClient, name: Callable
):
    capability = name("dedupe")
    task_id = admin.assign_task({"n": 1}, capabilities=[capability])["task_id"]
    with agent_client(url, name("dedupe-agent"), capability) as agent:
        task = agent.next_task(timeout=5)
        assert isinstance(task, AssignedTask) and task.task_id == task_id
        beats = agent.heartbeats
        wait_until(lambda: agent.heartbeats >= beats + 3)  # each answer lists the task again
        assert agent.next_task(timeout=0) is None
        agent.complete(task)


def test_clean_shutdown_leaves_the_agent_stopped(
    url: str, admin: OrchestratorClient, name: Callable
):
    agent_id, capability = name("clean"), name("cap")
    task_id = admin.assign_task({"n": 1}, capabilities=[capability])["task_id"]
    with agent_client(url, agent_id, capability) as agent:
        task = agent.next_task(timeout=5)
        assert task is not None
        agent.complete(task, result=1)
        # The heartbeat thread, found by the name it shows in thread dumps.
        beater = next(t for t in threading.enumerate() if t.name == f"heartbeat-{agent_id}")
    assert status_of(admin, agent_id) == "stopped"
    assert agent.status == "stopped"
    assert beater is not None and not beater.is_alive()
    assert admin.task(task_id)["status"] == "completed"
    with pytest.raises(Unavailable, match="closed"):
        agent.next_task(timeout=0)


def test_shutdown_drains_work_in_progress_and_requeues_what_never_started(
    url: str, admin: OrchestratorClient, name: Callable
):
    agent_id, capability = name("drainer"), name("cap")
    running_id = admin.assign_task({"n": 1}, capabilities=[capability])["task_id"]
    buffered_id = admin.assign_task({"n": 2}, capabilities=[capability])["task_id"]
    agent = agent_client(url, agent_id, capability, max_concurrent_tasks=2).start()
    taken: list[AssignedTask | None] = []
    finish = threading.Event()

    def worker() -> None:
        task = agent.next_task(timeout=5)
        taken.append(task)
        if task is None:
            return
        finish.wait(10)
        agent.complete(task, result="finished while draining")

    working = threading.Thread(target=worker)
    working.start()
    wait_until(lambda: taken)
    assert taken[0] is not None and taken[0].task_id == running_id
    # The second task has reached the agent (delivery marks it running) but nobody took it.
    wait_until(lambda: admin.task(buffered_id)["status"] == "running")
    closing = threading.Thread(target=agent.close)
    closing.start()
    wait_until(lambda: status_of(admin, agent_id) == "stopping", message="not draining")
    assert admin.task(running_id)["status"] == "running"
    finish.set()
    working.join(5)
    closing.join(10)

    assert status_of(admin, agent_id) == "stopped"
    assert admin.task(running_id)["status"] == "completed"
    requeued = admin.task(buffered_id)
    assert requeued["status"] == "pending" and requeued["agent_id"] is None


def test_an_exception_in_the_block_fails_the_task_it_was_working_on(
    url: str, admin: OrchestratorClient, name: Callable
):
    agent_id, capability = name("crasher"), name("cap")
    task_id = admin.assign_task({"n": 1}, capabilities=[capability])["task_id"]
    with pytest.raises(RuntimeError), agent_client(url, agent_id, capability) as agent:
        for _task in agent.tasks(timeout=5):
            raise RuntimeError("boom")
    failed = admin.task(task_id)
    assert failed["attempts"] == 1 and "RuntimeError: boom" in failed["error"]
    assert failed["status"] in ("failed", "pending")
    assert status_of(admin, agent_id) == "stopped"


def test_a_stopped_agent_of_the_same_id_is_taken_over_but_a_live_one_is_not(
    url: str, admin: OrchestratorClient, name: Callable
):
    agent_id = name("same-id")
    with agent_client(url, agent_id):
        pass
    assert status_of(admin, agent_id) == "stopped"
    with agent_client(url, agent_id) as again:
        assert status_of(admin, agent_id) == "idle"
        with pytest.raises(Conflict) as refused:
            agent_client(url, agent_id).start()
        assert "another process" in refused.value.message
        assert f"june-orchestrator agents remove {agent_id}" in refused.value.message
        assert again.registrations == 1


def test_without_the_admin_token_registration_is_refused_clearly(url: str, name: Callable):
    agent = AgentClient(url, agent_id=name("no-token"), capabilities=["x"])
    with pytest.raises(Unauthorized) as refused:
        agent.start()
    assert "admin token" in refused.value.message
