"""orch/controllers/agents.py: registration, lifecycle, heartbeats and listings."""

from __future__ import annotations

import pytest

from orch import Agent, Conflict, Invalid, NotFound, Orchestrator, TaskFailed, Unavailable
from orch.controllers import AgentsController
from tests.conftest import wait_until


class Quiet(Agent):
    agent_type = "implementation"

    def handle(self, task):
        return None


@pytest.fixture
def agents(orch: Orchestrator) -> AgentsController:
    return orch.controllers.agents


def test_register_shows_the_token_once_and_keeps_only_its_hash(orch, agents):
    answer = agents.register_agent("a1", "implementation", ["code"], metadata={"zone": "eu"})
    assert answer["agent_id"] == "a1" and answer["status"] == "registered"
    assert orch.controllers.tokens.identify(answer["token"]) == "a1"
    assert answer["token"] not in str(agents.agent("a1")) + str(orch.directory.get("a1"))
    with pytest.raises(Conflict):  # a live agent's id is taken
        agents.register_agent("a1", "implementation")


def test_attach_takes_an_agent_or_a_factory_of_one(agents):
    assert agents.attach(Quiet("q1"))["status"] == "idle"
    assert agents.attach(lambda: Quiet("q2"), start=False)["status"] == "registered"
    with pytest.raises(Invalid) as info:
        agents.attach(lambda: "not an agent")
    assert info.value.field == "agent"
    with pytest.raises(Invalid) as info:
        agents.attach("q3")
    assert info.value.field == "agent"


def test_lifecycle_answers_name_the_agent_and_its_status(agents):
    agents.register_agent("a1", "implementation")
    assert agents.start_agent("a1") == {"agent_id": "a1", "status": "started"}
    assert agents.start_agent("a1") == {"agent_id": "a1", "status": "already_active"}
    with pytest.raises(Invalid) as info:
        agents.stop_agent("a1", drain="no")
    assert info.value.field == "drain"
    assert agents.stop_agent("a1")["status"] in ("stopping", "stopped")
    assert agents.deregister_agent("a1") == {"agent_id": "a1", "status": "deregistered"}
    with pytest.raises(NotFound):
        agents.agent("a1")


def test_a_heartbeat_is_signalled_for_the_metrics_and_lists_assignments(orch, agents):
    signals: list[str] = []
    orch.events_log.subscribe_signals(lambda kind, data: signals.append(kind))
    agents.register_agent("a1", "implementation")
    agents.start_agent("a1")
    orch.assign_task({}, task_id=123, agent_id="a1")
    answer = agents.heartbeat("a1")
    assert [a["task_id"] for a in answer["assignments"]] == [123]
    assert signals.count("heartbeat") == 1
    with pytest.raises(NotFound):
        agents.heartbeat("ghost")
    assert signals.count("heartbeat") == 1  # only heartbeats that happened


def test_agents_and_their_tasks_name_tasks_as_submitted(orch, agents):
    agents.register_agent("a1", "implementation")
    agents.start_agent("a1")
    orch.assign_task({}, task_id=123, agent_id="a1")
    assert agents.agent("a1")["current_tasks"] == [123]  # the id, not its key "123"
    assert agents.agents()["agents"][0]["current_tasks"] == [123]
    assert [t["task_id"] for t in agents.agent_tasks("a1")["tasks"]] == [123]


def test_a_bad_state_filter_names_the_parameter_of_the_python_api(agents):
    with pytest.raises(Invalid) as info:
        agents.agents(state="sleepy")
    assert info.value.field == "state"


def test_an_agent_waiting_to_be_restarted_is_unavailable_not_lost(orch, agents):
    class Crashing(Agent):
        agent_type = "implementation"

        def handle(self, task):
            raise RuntimeError("boom")

    agents.attach(Crashing("c1"))
    with pytest.raises(TaskFailed):
        orch.submit({}, max_attempts=1).result(timeout=5)
    wait_until(lambda: orch.directory.get("c1").actor is None, message="crashed")
    with pytest.raises(Unavailable, match="restarting; try again shortly"):
        agents.heartbeat("c1")  # the clock has not moved: its backoff is not over
    with pytest.raises(Unavailable, match="restarting"):
        agents.stop_agent("c1")


def test_before_start_every_call_says_to_start(store):
    agents = Orchestrator(store=store, auto_tick=False).controllers.agents
    for call in (
        lambda: agents.register_agent("a1", "implementation"),
        lambda: agents.agent("a1"),
        lambda: agents.agents(),
        lambda: agents.heartbeat("a1"),
    ):
        with pytest.raises(Unavailable, match="not started"):
            call()
