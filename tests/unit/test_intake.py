"""orch/actors/intake.py: the Intake's own rules, on a manual clock.

The fake TODO service (tests/fakes/todo_service.py) runs in this process on a
loopback port, and the Intake runs inside a real Orchestrator, the only place that
wires it to a Scheduler. tests/integration/test_todo_intake.py proves the round trip,
a reservation lost to another consumer, the outage warning, lost, dead and retried
tasks and a restart; these pin what the Intake decides: whom it asks for how much,
when it asks again, what it reports and what it gives back.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from orch import ManualClock, NotFound, Orchestrator, Settings
from orch.store import MemoryStore
from tests.conftest import wait_until
from tests.fakes.todo_service import FakeTodoService

POLL_S = 5.0
LIST = "/mcp/list_available_tasks"


@pytest.fixture
def make_orch(
    todo: FakeTodoService, clock: ManualClock, store: MemoryStore
) -> Iterator[Callable[..., Orchestrator]]:
    opened: list[Orchestrator] = []

    def make() -> Orchestrator:
        settings = Settings(
            todo_service_url=todo.url,
            gateway_url="",
            todo_poll_s=POLL_S,
            dependency_check_interval_s=3600,  # only the Intake talks to the service
        )
        orch = Orchestrator(
            settings, store=store, clock=clock, auto_tick=False, connect_services=True
        ).start()
        opened.append(orch)
        return orch

    yield make
    for orch in opened:
        orch.stop()


def started(orch: Orchestrator, agent_id: str, agent_type: str = "implementation", slots=1) -> None:
    orch.register_agent(agent_id, agent_type, max_concurrent_tasks=slots)
    orch.start_agent(agent_id)


def held_by(orch: Orchestrator, agent_id: str) -> list[str]:
    return sorted(t["task_id"] for t in orch.agent_tasks(agent_id)["tasks"])


def intake_status(orch: Orchestrator) -> dict[str, Any]:
    """The Intake's ``status()`` as /stats shows it, once the Intake is free to answer."""
    return wait_until(lambda: "reservations" in (s := orch.stats()["intake"]) and s)


def advance(orch: Orchestrator, clock: ManualClock, seconds: float) -> None:
    """Move the manual clock and tick, heartbeating every agent so none goes unhealthy."""
    clock.advance(seconds)
    for agent in orch.agents()["agents"]:
        if agent["status"] in ("idle", "busy"):
            orch.heartbeat(agent["agent_id"])
    orch.tick()


def reserved_for_r1(todo: FakeTodoService, make_orch: Callable[..., Orchestrator]) -> Orchestrator:
    """An orchestrator whose one agent ``r1`` runs TODO task 1 (delivered: ``running``)."""
    todo.add_task(1)
    orch = make_orch()
    started(orch, "r1")
    orch.tick()
    assert orch.heartbeat("r1")["assignments"][0]["task_id"] == "todo:1"
    assert todo.tasks[1]["assigned_agent"] == "r1"
    return orch


def test_only_types_with_free_slots_are_asked_and_for_no_more_than_fit(todo, make_orch, clock):
    for todo_id in (1, 2, 3):
        todo.add_task(todo_id)
    todo.add_task(4, task_type="epic")
    orch = make_orch()
    started(orch, "i1", slots=2)
    orch.register_agent("i2", "implementation")  # registered, never started: no capacity
    started(orch, "b1", "breakdown")
    orch.tick()
    assert held_by(orch, "i1") == ["todo:1", "todo:2"]
    assert held_by(orch, "i2") == []
    assert todo.tasks[3]["task_status"] == "available"  # no slot left for it
    assert held_by(orch, "b1") == ["todo:4"]
    assert orch.task("todo:4")["agent_type"] == "breakdown"
    # Once per agent type with room, for as many tasks as its started agents can take.
    asked = [body for path, body in todo.bodies if path == LIST]
    assert sorted(asked, key=lambda b: b["agent_type"]) == [
        {"agent_type": "breakdown", "limit": 1},
        {"agent_type": "implementation", "limit": 2},
    ]

    advance(orch, clock, POLL_S)
    assert todo.calls.count(LIST) == len(asked)  # every slot is taken: nobody is asked
    assert todo.tasks[3]["task_status"] == "available"


def test_work_goes_to_the_agent_with_the_most_free_slots(todo, make_orch):
    for todo_id in (1, 2, 3, 4):
        todo.add_task(todo_id)
    orch = make_orch()
    started(orch, "small", slots=1)
    started(orch, "large", slots=3)
    orch.tick()
    assert len(held_by(orch, "large")) == 3 and len(held_by(orch, "small")) == 1
    for todo_id in (1, 2, 3, 4):
        task = orch.task(f"todo:{todo_id}")
        assert todo.tasks[todo_id]["assigned_agent"] == task["agent_id"]


def test_the_task_is_delivered_as_todo_id_carrying_the_reserved_todo_task(todo, make_orch):
    orch = reserved_for_r1(todo, make_orch)
    task = orch.task("todo:1")
    # The TODO task as the reservation answered it: every field, now in progress for r1.
    assert task["payload"] == {**todo.tasks[1]}
    assert task["payload"]["task_status"] == "in_progress"
    assert task["payload"]["assigned_agent"] == "r1"
    assert task["max_attempts"] == 3
    assert intake_status(orch)["reservations"] == {"reserved": 1}


def test_polls_wait_for_the_poll_interval(todo, make_orch, clock):
    orch = make_orch()
    started(orch, "r1")
    orch.tick()
    assert todo.calls.count(LIST) == 1
    advance(orch, clock, POLL_S - 0.1)
    assert todo.calls.count(LIST) == 1
    advance(orch, clock, 0.1)
    assert todo.calls.count(LIST) == 2


def test_an_outage_backs_off_doubling_with_jitter_up_to_a_cap(todo, make_orch, clock):
    orch = make_orch()
    started(orch, "r1")
    todo.stop()
    orch.tick()
    assert intake_status(orch)["failed_polls"] == 1
    # Six failures reach past the cap: uncapped, the sixth would wait at least 80 s
    # (half of 160), more than the 60 s the cap allows.
    for failures in range(1, 7):
        backoff_s = min(60.0, POLL_S * 2 ** (failures - 1))
        # Jitter takes between half and all of the backoff: never sooner than half.
        advance(orch, clock, backoff_s / 2 - 0.01)
        assert intake_status(orch)["failed_polls"] == failures
        advance(orch, clock, backoff_s / 2 + 0.02)
        assert intake_status(orch)["failed_polls"] == failures + 1

    todo.start()
    advance(orch, clock, 60.0)
    assert intake_status(orch)["failed_polls"] == 0
    asked = todo.calls.count(LIST)
    assert asked == 1
    advance(orch, clock, POLL_S)  # the usual cadence again
    assert todo.calls.count(LIST) == asked + 1


def test_a_completion_made_during_an_outage_is_reported_when_the_service_is_back(
    todo, make_orch, clock
):
    orch = reserved_for_r1(todo, make_orch)
    todo.stop()
    orch.complete_task("r1", "todo:1", {"notes": "done offline"})
    wait_until(lambda: intake_status(orch)["reservations"] == {"completing": 1})
    assert todo.tasks[1]["task_status"] == "in_progress"
    todo.start()
    advance(orch, clock, 60.0)  # past the backoff
    assert todo.tasks[1]["task_status"] == "complete"
    assert todo.tasks[1]["notes"] == "done offline"
    assert intake_status(orch)["reservations"] == {}


@pytest.mark.parametrize(
    ("result", "notes"),
    [
        ({"notes": "all green", "files": 3}, "all green"),
        ("plain text", "plain text"),
        ({"files": 3}, "{'files': 3}"),
        (None, None),
    ],
)
def test_the_notes_reported_are_the_results_notes_or_the_result_as_text(
    todo, make_orch, result, notes
):
    orch = reserved_for_r1(todo, make_orch)
    orch.complete_task("r1", "todo:1", result)
    wait_until(lambda: todo.tasks[1]["task_status"] == "complete", message="not reported")
    assert todo.tasks[1]["notes"] == notes


def test_a_task_requeued_by_its_agents_stop_is_given_back(todo, make_orch):
    orch = reserved_for_r1(todo, make_orch)
    orch.stop_agent("r1", drain=False)  # requeues what it held
    wait_until(lambda: todo.tasks[1]["task_status"] == "available", message="not unlocked")
    assert todo.tasks[1]["assigned_agent"] is None
    # Not kept queued here: it is the service's again, for any consumer.
    assert orch.task("todo:1")["status"] == "cancelled"
    wait_until(lambda: intake_status(orch)["reservations"] == {})


def test_a_task_cancelled_by_an_operator_is_given_back(todo, make_orch):
    orch = reserved_for_r1(todo, make_orch)
    orch.cancel_task("todo:1")
    wait_until(lambda: todo.tasks[1]["task_status"] == "available", message="not unlocked")
    assert todo.tasks[1]["assigned_agent"] is None
    wait_until(lambda: intake_status(orch)["reservations"] == {})


def test_a_reservation_whose_answer_never_came_is_given_back_at_start(
    todo, make_orch, store: MemoryStore
):
    # The last run asked the service to reserve task 7 for r1 and stopped before the
    # answer arrived; the service did reserve it.
    todo.add_task(7)
    todo.tasks[7].update(task_status="in_progress", assigned_agent="r1")
    store.put_reservation(
        "7", {"state": "reserving", "raw_id": 7, "agent_id": "r1", "task_id": "todo:7"}
    )
    orch = make_orch()
    assert intake_status(orch)["reservations"] == {"releasing": 1}
    orch.tick()
    assert todo.tasks[7]["task_status"] == "available"
    assert todo.tasks[7]["assigned_agent"] is None
    assert intake_status(orch)["reservations"] == {}
    assert store.load_reservations() == {}
    with pytest.raises(NotFound):
        orch.task("todo:7")  # never became a task here
