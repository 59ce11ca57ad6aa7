"""orch/actors/health.py and the agent lifecycle around heartbeats."""

import pytest

from orch import Conflict
from tests.conftest import wait_until


def register(orch, agent_id, slots=1):
    token = orch.register_agent(agent_id, "implementation", ["code"], max_concurrent_tasks=slots)[
        "token"
    ]
    orch.start_agent(agent_id)
    return token


def status(orch, agent_id):
    return orch.agent(agent_id)["status"]


def test_missed_heartbeats_make_an_agent_unhealthy_then_a_heartbeat_heals_it(orch, clock):
    register(orch, "a1")
    clock.advance(2.9)  # interval 1 s: unhealthy after 3 missed
    orch.tick()
    assert status(orch, "a1") == "idle"
    clock.advance(0.2)
    orch.tick()
    wait_until(lambda: status(orch, "a1") == "unhealthy")
    # No new work for an unhealthy agent.
    assert orch.assign_task({}, task_id=1)["status"] == "queued"
    beat = orch.heartbeat("a1")
    assert beat["status"] in {"idle", "busy"}
    wait_until(lambda: orch.task(1)["status"] == "assigned")
    assert orch.task(1)["agent_id"] == "a1"


def test_lost_agent_tasks_are_requeued_and_locks_released(orch, clock):
    register(orch, "a1")
    orch.assign_task({}, task_id="t", agent_id="a1", max_attempts=3)
    grant = orch.acquire_lock("a1", "db:main", ttl_s=3600)
    clock.advance(10.1)
    orch.tick()
    wait_until(lambda: status(orch, "a1") == "lost")
    wait_until(lambda: orch.task("t")["status"] == "pending")
    assert orch.task("t")["attempts"] == 1  # the lost attempt counts
    wait_until(lambda: orch.locks() == [] or all(not r["holders"] for r in orch.locks()))
    register(orch, "a2")
    other = orch.acquire_lock("a2", "db:main")
    assert other["fencing_token"] > grant["fencing_token"]
    with pytest.raises(Conflict, match="register it again"):
        orch.heartbeat("a1")
    types = [e.type for e in orch.events_log.since(0)]
    assert "agent.lost" in types and "task.requeued" in types


def test_lost_agent_can_register_again_but_live_one_cannot(orch, clock):
    register(orch, "a1")
    with pytest.raises(Conflict, match="already registered"):
        orch.register_agent("a1", "implementation", ["code"])
    clock.advance(11)
    orch.tick()
    wait_until(lambda: status(orch, "a1") == "lost")
    again = orch.register_agent("a1", "implementation", ["code"])
    assert again["status"] == "registered"
    assert status(orch, "a1") == "registered"


def test_heartbeats_keep_an_agent_healthy(orch, clock):
    register(orch, "a1")
    for _ in range(30):
        clock.advance(0.9)
        orch.heartbeat("a1")
        orch.tick()
    assert status(orch, "a1") == "idle"


def test_in_process_agents_are_not_judged_by_heartbeats(orch, clock):
    from orch import Agent

    class Quiet(Agent):
        def handle(self, task):
            return None

    orch.attach(Quiet("q1"))
    clock.advance(1000)
    orch.tick()
    assert status(orch, "q1") == "idle"


def test_stop_with_drain_waits_for_running_tasks(orch):
    register(orch, "a1")
    orch.assign_task({}, task_id="t", agent_id="a1")
    assert orch.stop_agent("a1")["status"] == "stopping"
    assert orch.assign_task({}, task_id="u")["status"] == "queued"  # no new work
    orch.complete_task("a1", "t", None)
    wait_until(lambda: status(orch, "a1") == "stopped")
    assert orch.task("u")["status"] == "pending"
    assert orch.start_agent("a1")["status"] == "started"
    wait_until(lambda: orch.task("u")["status"] == "assigned")


def test_stop_without_drain_requeues_without_counting_an_attempt(orch):
    register(orch, "a1")
    orch.assign_task({}, task_id="t", agent_id="a1")
    assert orch.stop_agent("a1", drain=False)["status"] == "stopped"
    wait_until(lambda: orch.task("t")["status"] == "pending")
    assert orch.task("t")["attempts"] == 0


def test_start_twice_is_already_active(orch):
    register(orch, "a1")
    assert orch.start_agent("a1")["status"] == "already_active"


def test_deregister_requeues_and_frees_the_id(orch):
    register(orch, "a1")
    orch.assign_task({}, task_id="t", agent_id="a1")
    orch.deregister_agent("a1")
    wait_until(lambda: orch.task("t")["status"] == "pending")
    assert orch.agents()["total"] == 0
    assert orch.register_agent("a1", "implementation", ["code"])["status"] == "registered"
