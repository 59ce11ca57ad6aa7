"""orch/controllers/observation.py: stats, the event feed and health."""

from __future__ import annotations

import pytest

from orch import Invalid, Orchestrator, Unavailable
from orch.controllers import ObservationController


@pytest.fixture
def observation(orch: Orchestrator) -> ObservationController:
    return orch.controllers.observation


def test_stats_count_on_the_orchestrators_clock(orch, observation, clock):
    orch.register_agent("a1", "implementation")
    orch.start_agent("a1")
    orch.submit({}, agent_type="breakdown")
    clock.advance(5)
    stats = observation.stats()
    assert stats["uptime_s"] == 5.0
    assert (stats["total_agents"], stats["idle_agents"], stats["pending_tasks"]) == (1, 1, 1)
    assert stats["intake"] is None  # no TODO service connected


def test_events_page_and_check_their_arguments(orch, observation):
    orch.register_agent("a1", "implementation")
    page = observation.events(0, limit=1)
    assert [e["type"] for e in page["events"]] == ["agent.registered"]
    assert observation.events(page["next"])["events"] == []
    for kwargs, field in [({"wait_s": 61}, "wait_s"), ({"limit": 0}, "limit")]:
        with pytest.raises(Invalid) as info:
            observation.events(0, **kwargs)
        assert info.value.field == field


def test_health_names_a_dead_actor_and_reads_no_dead_actor(orch, observation):
    assert observation.health()["status"] == "healthy"
    [monitor] = [r for r in orch.actors.refs if r.actor_class.__name__ == "HealthMonitor"]
    monitor.stop()
    health = observation.health()
    assert health["status"] == "unhealthy"
    assert health["checks"]["actors"] == {"status": "failing", "dead": ["HealthMonitor"]}


def test_events_still_read_their_ring_when_stopped():
    orch = Orchestrator(auto_tick=False).start()
    orch.register_agent("a1", "implementation")
    orch.stop()
    observation = orch.controllers.observation
    assert observation.events(0)["events"][0]["type"] == "agent.registered"
    for call in (observation.stats, observation.health):
        with pytest.raises(Unavailable, match="has stopped"):
            call()
