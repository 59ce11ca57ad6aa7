"""``orch/actors/agent.py``: an agent actor's lifecycle rules, through real actors.

The rules around heartbeats, drains and deregistration are in ``test_health.py``;
these are the ones an agent actor enforces on its own: what a lost or never-started
agent may do, which changes are stored, and which undo it accepts.
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from orch import Conflict
from orch.model import AgentState
from tests.conftest import wait_until


def start(orch, agent_id: str = "a1", slots: int = 1) -> str:
    token = orch.register_agent(agent_id, "implementation", max_concurrent_tasks=slots)["token"]
    assert orch.start_agent(agent_id)["status"] == "started"
    orch.authenticate(agent_id, token)
    return token


def stored_state(store, agent_id: str = "a1") -> str:
    (record,) = [r for r in store.load_agents() if r.agent_id == agent_id]
    return str(record.state)


def lose(orch, clock, agent_id: str = "a1") -> None:
    clock.advance(10.5)  # interval 1 s: lost after 10 missed
    orch.tick()
    wait_until(lambda: orch.agent(agent_id)["status"] == "lost", message="declared lost")


def test_a_registered_agent_stops_without_having_started_and_can_start_after(orch, store):
    orch.register_agent("a1", "implementation")
    assert orch.stop_agent("a1")["status"] == "stopped"
    assert stored_state(store) == "stopped"
    assert orch.start_agent("a1")["status"] == "started"
    assert stored_state(store) == "idle"


def test_a_lost_agent_must_register_again_before_anything_else(orch, clock):
    start(orch)
    lose(orch, clock)
    with pytest.raises(Conflict, match="register it again"):
        orch.start_agent("a1")
    with pytest.raises(Conflict, match="lost"):
        orch.stop_agent("a1")
    with pytest.raises(Conflict, match="register it again"):
        orch.heartbeat("a1")
    assert orch.register_agent("a1", "implementation")["status"] == "registered"


def test_a_draining_agent_stays_stopping_until_its_last_task_ends(orch):
    start(orch)
    orch.assign_task({}, task_id="t", agent_id="a1")
    assert orch.stop_agent("a1")["status"] == "stopping"
    assert orch.stop_agent("a1")["status"] == "stopping"  # asked again: still draining
    events = orch.events(0)["events"]
    assert [e["type"] for e in events].count("agent.stopping") == 1
    assert orch.stop_agent("a1", drain=False)["status"] == "stopped"  # unless told not to
    wait_until(lambda: orch.task("t")["status"] == "pending", message="requeued")


def test_taking_and_ending_tasks_writes_nothing_but_a_stop_is_stored(orch, store):
    start(orch)
    orch.assign_task({}, task_id="t", agent_id="a1")
    wait_until(lambda: orch.agent("a1")["status"] == "busy", message="busy")
    assert stored_state(store) == "idle"  # the task table already says what it holds
    orch.complete_task("a1", "t")
    wait_until(lambda: orch.agent("a1")["status"] == "idle", message="idle again")
    assert orch.stop_agent("a1")["status"] == "stopped"
    assert stored_state(store) == "stopped"


def test_a_config_version_not_newer_than_the_agents_is_refused(orch):
    start(orch)
    actor = orch.directory.get("a1").actor
    current = actor.describe().get(timeout=5).config
    with pytest.raises(Conflict, match="not newer"):
        actor.update_config(current).get(timeout=5)
    newer = replace(current, version=current.version + 1, max_concurrent_tasks=3)
    assert actor.update_config(newer).get(timeout=5).config.max_concurrent_tasks == 3


class _StoredWrite:
    def wait(self) -> None:
        pass

    def done(self) -> bool:
        return True

    def failed(self) -> bool:
        return False


def test_an_undo_for_a_start_that_is_not_the_agents_unconfirmed_one_changes_nothing(orch):
    start(orch)
    orch.assign_task({}, task_id="t", agent_id="a1")
    actor = orch.directory.get("a1").actor
    before = actor.describe().get(timeout=5)
    stopped = replace(before, state=AgentState.STOPPED, task_keys=frozenset())
    actor.undo_start(_StoredWrite(), stopped).get(timeout=5)
    after = actor.describe().get(timeout=5)
    assert after.state is AgentState.BUSY and after.task_keys == before.task_keys
    assert orch.task("t")["status"] == "assigned"
