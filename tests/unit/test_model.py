"""orch/model.py: validation and transition rules (pure, no actors)."""

import pytest

from orch.errors import Conflict, Invalid
from orch.model import (
    AgentConfig,
    AgentState,
    LockMode,
    TaskSpec,
    TaskState,
    check_agent_transition,
    check_task_transition,
    retry_delay_s,
    task_key,
    validate_id,
    validate_task_id,
)


@pytest.mark.parametrize("bad", ["", "a" * 129, "has space", "../etc", "tab\t", "é", None, 5])
def test_invalid_ids_are_refused_naming_the_field(bad):
    with pytest.raises(Invalid) as info:
        validate_id("agent_id", bad)
    assert info.value.field == "agent_id"


def test_valid_id_characters():
    assert validate_id("agent_id", "a.b_c:d-1") == "a.b_c:d-1"
    assert validate_id("agent_id", "x" * 128) == "x" * 128


def test_task_ids_are_ints_or_strings_and_share_keys():
    assert validate_task_id(123) == 123
    assert validate_task_id("todo:7") == "todo:7"
    assert task_key(123) == task_key("123")
    with pytest.raises(Invalid):
        validate_task_id(True)
    with pytest.raises(Invalid):
        validate_task_id(2**70)


@pytest.mark.parametrize(
    ("field", "kwargs"),
    [
        ("priority", {"priority": 11}),
        ("priority", {"priority": -1}),
        ("priority", {"priority": "high"}),
        ("max_attempts", {"max_attempts": 0}),
        ("timeout_s", {"timeout_s": 0}),
        ("timeout_s", {"timeout_s": float("inf")}),
        ("capabilities", {"capabilities": "code"}),
        ("capabilities", {"capabilities": ["ok", "not ok"]}),
        ("resources", {"resources": ["r1", "r1"]}),
        ("payload", {"payload": [1, 2]}),
        ("agent_type", {"agent_type": ""}),
    ],
)
def test_task_spec_names_the_bad_field(field, kwargs):
    args = {"task_id": 1, "payload": {}} | kwargs
    with pytest.raises(Invalid) as info:
        TaskSpec.build(**args)
    assert info.value.field == field


def test_task_spec_normalises_resources_and_capabilities():
    spec = TaskSpec.build(task_id="t", payload={}, capabilities=["b", "a"], resources=["z", "y"])
    assert spec.capabilities == frozenset({"a", "b"})
    assert spec.resources == ("y", "z")


def test_agent_transitions():
    check_agent_transition("a", AgentState.REGISTERED, AgentState.IDLE)
    check_agent_transition("a", AgentState.UNHEALTHY, AgentState.LOST)
    with pytest.raises(Conflict):
        check_agent_transition("a", AgentState.LOST, AgentState.IDLE)
    with pytest.raises(Conflict):
        check_agent_transition("a", AgentState.STOPPED, AgentState.BUSY)


P, A, R = TaskState.PENDING, TaskState.ASSIGNED, TaskState.RUNNING
C, F, D, X = TaskState.COMPLETED, TaskState.FAILED, TaskState.DEAD, TaskState.CANCELLED
#: DESIGN.md "Task lifecycle", and each move the Scheduler makes (None: not submitted).
TASK_SUCCESSORS = {
    None: {P, A, R},  # queued, or leased at once to a named agent (running if in-process)
    P: {A, R, X},
    A: {R, C, F, D, P, X},  # delivered, ended, failed, dead, lease lost, cancelled
    R: {C, F, D, P, X},
    F: {P, X},  # its backoff is over; a failure with no attempt left is dead at once
    C: set(),
    D: set(),
    X: set(),
}


@pytest.mark.parametrize("old", [None, *TaskState])
def test_task_transitions_are_exactly_the_lifecycle(old):
    for new in TaskState:
        if new in TASK_SUCCESSORS[old]:
            check_task_transition("t", old, new)
        else:
            with pytest.raises(Conflict, match="'t' cannot"):
                check_task_transition("t", old, new)


def test_config_update_bumps_version_and_validates():
    config = AgentConfig()
    newer = config.updated({"max_concurrent_tasks": 4, "settings": {"model": "x"}})
    assert (newer.version, newer.max_concurrent_tasks, newer.settings) == (2, 4, {"model": "x"})
    with pytest.raises(Invalid) as info:
        config.updated({"heartbeat_interval_s": 0.01})
    assert info.value.field == "heartbeat_interval_s"
    with pytest.raises(Invalid) as info:
        config.updated({"colour": "blue"})
    assert info.value.field == "colour"


def test_retry_backoff_doubles_from_one_second_and_caps_at_sixty():
    assert [retry_delay_s(n) for n in (1, 2, 3, 4)] == [1, 2, 4, 8]
    assert retry_delay_s(10) == 60


def test_lock_mode_parse():
    assert LockMode.parse("shared") is LockMode.SHARED
    with pytest.raises(Invalid) as info:
        LockMode.parse("sideways")
    assert info.value.field == "mode"
