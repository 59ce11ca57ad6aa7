"""``orch/actors/liveness.py``: the unhealthy and lost rule, with the time given."""

from __future__ import annotations

import pytest

from orch.actors.liveness import Verdict, judge
from orch.model import AgentConfig, AgentRecord, AgentState

INTERVAL_S = 10.0


def agent(state: AgentState, last_heartbeat: float = 100.0, **fields: object) -> AgentRecord:
    config = AgentConfig(heartbeat_interval_s=INTERVAL_S)
    return AgentRecord(
        "a1", "implementation", frozenset(), state=state, config=config,
        last_heartbeat=last_heartbeat, **fields,
    )  # fmt: skip


def verdict_at(record: AgentRecord, now: float) -> Verdict:
    return judge(record, now, unhealthy_after=3, lost_after=10).verdict


@pytest.mark.parametrize("state", [AgentState.IDLE, AgentState.BUSY])
def test_three_missed_intervals_make_a_working_agent_unhealthy(state: AgentState) -> None:
    record = agent(state)
    assert verdict_at(record, 100 + 2.99 * INTERVAL_S) is Verdict.ALIVE
    assert verdict_at(record, 100 + 3 * INTERVAL_S) is Verdict.UNHEALTHY


@pytest.mark.parametrize(
    "state", [AgentState.IDLE, AgentState.BUSY, AgentState.UNHEALTHY, AgentState.STOPPING]
)
def test_ten_missed_intervals_lose_any_watched_agent(state: AgentState) -> None:
    record = agent(state)
    assert verdict_at(record, 100 + 9.99 * INTERVAL_S) is not Verdict.LOST
    found = judge(record, 100 + 12 * INTERVAL_S, unhealthy_after=3, lost_after=10)
    assert (found.verdict, found.missed_intervals) == (Verdict.LOST, 12.0)


@pytest.mark.parametrize("state", [AgentState.UNHEALTHY, AgentState.STOPPING])
def test_an_agent_not_taking_work_is_never_made_unhealthy_again(state: AgentState) -> None:
    assert verdict_at(agent(state), 100 + 5 * INTERVAL_S) is Verdict.ALIVE


@pytest.mark.parametrize(
    "state", [AgentState.REGISTERED, AgentState.STOPPED, AgentState.LOST, AgentState.FAILED]
)
def test_agents_not_expected_to_heartbeat_are_not_judged(state: AgentState) -> None:
    assert verdict_at(agent(state), 100 + 50 * INTERVAL_S) is Verdict.ALIVE


def test_an_in_process_agent_is_never_judged_by_heartbeats() -> None:
    record = agent(AgentState.IDLE, in_process=True)
    assert verdict_at(record, 100 + 50 * INTERVAL_S) is Verdict.ALIVE


def test_the_interval_is_the_agents_own() -> None:
    slow = AgentRecord(
        "a1", "implementation", frozenset(), state=AgentState.IDLE,
        config=AgentConfig(heartbeat_interval_s=60.0), last_heartbeat=0.0,
    )  # fmt: skip
    assert verdict_at(slow, 179.0) is Verdict.ALIVE
    assert verdict_at(slow, 180.0) is Verdict.UNHEALTHY
