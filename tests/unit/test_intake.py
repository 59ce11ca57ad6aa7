"""orch/actors/intake.py: the Intake's own rules, on a manual clock.

The fake TODO service (tests/fakes/todo_service.py) runs in this process on a
loopback port, and the Intake runs inside a real Orchestrator, the only place that
wires it to a Scheduler. tests/integration/test_todo_intake.py proves the round trip,
a reservation lost to another consumer, the outage warning, lost, dead and retried
tasks and a restart; these pin what the Intake decides: whom it asks for how much,
when it asks again, what it reports and what it gives back.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from orch import ManualClock, NotFound, Orchestrator, Settings
from orch.store import MemoryStore, SQLiteStore
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
        ({"files": 3}, '{"files": 3}'),  # JSON, never Python's repr
        ({"notes": ["a", "b"]}, '["a", "b"]'),
        (None, None),
    ],
)
def test_the_notes_reported_are_the_results_notes_or_the_result_as_json(
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


# ------------------------------------------------ defects found against the real service


def test_a_dead_task_is_marked_blocked_with_its_error_and_not_taken_again(todo, make_orch, clock):
    orch = reserved_for_r1(todo, make_orch)
    orch.fail_task("r1", "todo:1", "the repo is gone", retryable=False)
    wait_until(lambda: todo.tasks[1]["task_status"] == "blocked", message="not blocked")
    assert todo.tasks[1]["notes"] == "the repo is gone"
    for _ in range(3):
        advance(orch, clock, POLL_S)  # r1 is free: the Intake polls again, and again
    assert todo.calls.count("/mcp/reserve_task") == 1  # never taken back by itself
    assert orch.task("todo:1")["status"] == "dead"


def test_an_unlock_the_service_fails_does_not_stall_polling(todo, make_orch, clock):
    orch = reserved_for_r1(todo, make_orch)
    del todo.tasks[1]  # its row deleted in the service: unlocking it answers 500
    orch.stop_agent("r1", drain=False)
    wait_until(lambda: "/tasks/1/unlock" in todo.calls, message="unlock not tried")
    todo.add_task(2)
    started(orch, "r2")
    advance(orch, clock, POLL_S)
    assert held_by(orch, "r2") == ["todo:2"]
    assert todo.tasks[2]["assigned_agent"] == "r2"


def test_a_result_without_notes_is_reported_as_json(todo, make_orch):
    orch = reserved_for_r1(todo, make_orch)
    orch.complete_task("r1", "todo:1", {"pr": 2, "title": 'fix "it"'})
    wait_until(lambda: todo.tasks[1]["task_status"] == "complete", message="not reported")
    assert json.loads(todo.tasks[1]["notes"]) == {"pr": 2, "title": 'fix "it"'}


def events_of(orch: Orchestrator, event_type: str) -> list[dict[str, Any]]:
    return [e for e in orch.events(0)["events"] if e["type"] == event_type]


def test_a_restart_with_a_stuck_unlock_in_the_store_still_polls(
    todo, make_orch, clock, store: MemoryStore
):
    # The last run was giving back task 9, which the service no longer has (row
    # deleted): its unlock answers 500 every time.
    store.put_reservation(
        "9", {"state": "releasing", "raw_id": 9, "agent_id": "r1", "task_id": "todo:9"}
    )
    todo.add_task(1)
    orch = make_orch()
    assert intake_status(orch)["reservations"] == {"releasing": 1}
    started(orch, "r2")
    orch.tick()
    assert "/tasks/9/unlock" in todo.calls
    assert held_by(orch, "r2") == ["todo:1"]  # polled, despite the stuck outcome
    assert todo.tasks[1]["assigned_agent"] == "r2"


def test_a_refused_outcome_backs_off_on_its_own_and_is_given_up_with_a_warning(
    todo, make_orch, clock, caplog
):
    orch = reserved_for_r1(todo, make_orch)
    del todo.tasks[1]  # vanished from the service: every unlock of it answers 500
    orch.cancel_task("todo:1")
    unlocks = lambda: todo.calls.count("/tasks/1/unlock")  # noqa: E731
    # The Intake publishes the failure once the 500 is back (after the fake saw the call).
    status = wait_until(lambda: (s := intake_status(orch))["undelivered"] and s)
    assert unlocks() == 1
    assert status["status"] == "degraded"
    assert status["undelivered"] == [
        {
            "task_id": "todo:1",
            "outcome": "unlock",
            "failures": 1,
            "last_error": status["undelivered"][0]["last_error"],
        }
    ]
    assert "500" in status["undelivered"][0]["last_error"]
    assert "todo:1 (unlock)" in " ".join(status["problems"])
    # Its own backoff: not retried before half of the poll interval (jitter), nor
    # on every tick, while polls go on at their own pace.
    polls = todo.calls.count(LIST)
    advance(orch, clock, POLL_S / 2 - 0.01)
    assert unlocks() == 1
    with caplog.at_level(logging.WARNING, logger="orch.intake"):
        for failures in range(2, 6):  # doubling: 5, 10, 20, 40 s at most
            advance(orch, clock, POLL_S * 2 ** (failures - 2) + 0.01)
            assert unlocks() == failures
        assert todo.calls.count(LIST) > polls  # polling never stopped
        # Five refusals (ORCH_TODO_OUTCOME_MAX_FAILURES): given up, and said so.
        warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "giving up on the unlock of todo:1" in warnings[0]
    [abandoned] = events_of(orch, "intake.outcome_abandoned")
    assert abandoned["task_id"] == "todo:1" and abandoned["outcome"] == "unlock"
    assert abandoned["failures"] == 5
    status = intake_status(orch)
    assert status["reservations"] == {} and status["undelivered"] == []
    assert [a["task_id"] for a in status["abandoned"]] == ["todo:1"]
    assert status["status"] == "ok"
    advance(orch, clock, 120)
    assert unlocks() == 5  # never again
    counter = "orchestrator_intake_outcomes_abandoned_total"
    assert orch.metrics.registry.get_sample_value(counter) == 1


def test_one_stuck_outcome_does_not_hold_up_the_others(todo, make_orch, clock):
    todo.add_task(1)
    todo.add_task(2)
    orch = make_orch()
    started(orch, "r1", slots=2)
    orch.tick()
    assert held_by(orch, "r1") == ["todo:1", "todo:2"]
    del todo.tasks[1]
    orch.cancel_task("todo:1")  # its unlock fails (500)
    orch.heartbeat("r1")
    orch.complete_task("r1", "todo:2", {"notes": "fine"})
    wait_until(lambda: todo.tasks[2]["task_status"] == "complete", message="not reported")
    wait_until(lambda: intake_status(orch)["reservations"] == {"releasing": 1})


def test_an_outcome_is_never_given_up_while_the_service_is_unreachable(todo, make_orch, clock):
    orch = reserved_for_r1(todo, make_orch)
    todo.stop()
    orch.complete_task("r1", "todo:1", {"notes": "offline"})
    for _ in range(10):  # ten failed deliveries, twice the refusals allowed
        advance(orch, clock, 61)
    status = intake_status(orch)
    assert status["reservations"] == {"completing": 1}
    assert status["undelivered"][0]["failures"] >= 10
    assert status["abandoned"] == []
    todo.start()
    advance(orch, clock, 61)
    assert todo.tasks[1]["task_status"] == "complete" and todo.tasks[1]["notes"] == "offline"
    assert intake_status(orch)["status"] == "ok"


def test_health_is_degraded_while_polls_fail_and_says_why(todo, make_orch, clock):
    orch = make_orch()
    started(orch, "r1")
    orch.tick()
    orch.dependencies.run_once()
    assert orch.health()["checks"]["intake"]["status"] == "ok"
    todo.stop()
    for _ in range(3):
        advance(orch, clock, 60)
    orch.dependencies.run_once()
    health = orch.health()
    assert health["status"] == "degraded"
    assert health["checks"]["intake"]["status"] == "failing"
    assert "no successful poll of the TODO service for" in health["checks"]["intake"]["last_error"]
    status = intake_status(orch)
    assert status["status"] == "degraded" and status["failed_polls"] >= 3
    todo.start()
    advance(orch, clock, 61)
    orch.dependencies.run_once()
    assert orch.health()["checks"]["intake"]["status"] == "ok"
    assert intake_status(orch)["last_successful_poll_at"] == clock.time()


def test_a_dead_task_is_reported_in_an_event_and_in_stats(todo, make_orch):
    orch = reserved_for_r1(todo, make_orch)
    orch.fail_task("r1", "todo:1", "KeyError: 'repo'", retryable=False)
    wait_until(lambda: events_of(orch, "intake.blocked"), message="no event")
    [blocked] = events_of(orch, "intake.blocked")
    assert blocked["task_id"] == "todo:1" and blocked["error"] == "KeyError: 'repo'"
    wait_until(
        lambda: (
            intake_status(orch)["dead_tasks"] == {"policy": "block", "blocked": 1, "cooling": []}
        ),
        message="not in /stats",
    )


@pytest.fixture
def cooldown_settings(todo: FakeTodoService) -> Settings:
    return Settings(
        todo_service_url=todo.url,
        gateway_url="",
        todo_poll_s=POLL_S,
        dependency_check_interval_s=3600,
        todo_dead_tasks="cooldown",
        todo_cooldown_s=100.0,
        todo_cooldown_max_s=300.0,
    )


@pytest.fixture
def cooldown_orch(
    cooldown_settings: Settings, clock: ManualClock, store: MemoryStore
) -> Iterator[Orchestrator]:
    orch = Orchestrator(
        cooldown_settings, store=store, clock=clock, auto_tick=False, connect_services=True
    ).start()
    yield orch
    orch.stop()


def test_with_cooldown_a_dead_task_is_given_back_after_a_growing_cool_down(
    todo, cooldown_orch, clock
):
    orch = cooldown_orch
    todo.add_task(1)
    started(orch, "r1")
    for death, cool_down_s in enumerate((100.0, 200.0, 300.0, 300.0), start=1):
        advance(orch, clock, POLL_S)  # the next poll takes it (again)
        assert orch.heartbeat("r1")["assignments"][0]["task_id"] == "todo:1"
        orch.fail_task("r1", "todo:1", f"broken {death}", retryable=False)
        status = wait_until(lambda: (s := intake_status(orch))["dead_tasks"]["cooling"] and s)
        [cooling] = status["dead_tasks"]["cooling"]
        assert cooling["deaths"] == death and cooling["until"] == clock.time() + cool_down_s
        event = events_of(orch, "intake.cooling")[-1]
        assert event["cool_down_s"] == cool_down_s and event["error"] == f"broken {death}"
        # Held (still reserved, so no one takes it) for the whole cool-down...
        advance(orch, clock, cool_down_s - 1)
        assert todo.tasks[1]["task_status"] == "in_progress"
        assert todo.calls.count("/mcp/reserve_task") == death
        # ...then given back, and taken again on the next poll.
        advance(orch, clock, 1)
        assert todo.tasks[1]["task_status"] == "available"
        assert intake_status(orch)["reservations"] == {}
    assert len(events_of(orch, "intake.cooling")) == 4


def test_after_an_outage_the_service_is_seen_back_even_with_no_room_to_poll_for(
    todo, make_orch, clock
):
    orch = reserved_for_r1(todo, make_orch)  # r1's one slot is taken: nothing to ask for
    started(orch, "r2")
    todo.stop()
    advance(orch, clock, POLL_S)
    assert intake_status(orch)["failed_polls"] == 1
    orch.stop_agent("r2")  # now nobody has room
    todo.start()
    for _ in range(4):
        advance(orch, clock, 60)
    orch.dependencies.run_once()
    assert orch.health()["checks"]["intake"]["status"] == "ok"
    assert intake_status(orch)["failed_polls"] == 0


def test_a_cool_down_survives_a_restart(todo, cooldown_settings, clock, tmp_path):
    path = str(tmp_path / "orch.db")

    def open_orch() -> Orchestrator:
        return Orchestrator(
            cooldown_settings,
            store=SQLiteStore(path),
            clock=clock,
            auto_tick=False,
            connect_services=True,
        ).start()

    todo.add_task(1)
    first = open_orch()
    started(first, "r1")
    first.tick()
    task_id = first.heartbeat("r1")["assignments"][0]["task_id"]
    first.fail_task("r1", task_id, "broken", retryable=False)
    wait_until(lambda: intake_status(first)["reservations"] == {"cooling": 1})
    first.stop()

    second = open_orch()
    try:
        assert intake_status(second)["reservations"] == {"cooling": 1}
        clock.advance(99)
        second.tick()
        assert todo.tasks[1]["task_status"] == "in_progress"  # still held
        clock.advance(1)
        second.tick()
        assert todo.tasks[1]["task_status"] == "available"  # given back on time
    finally:
        second.stop()


def test_a_task_that_stays_away_a_whole_longest_cool_down_starts_over(todo, cooldown_orch, clock):
    orch = cooldown_orch
    todo.add_task(1)
    started(orch, "r1")

    def take_and_kill() -> dict[str, Any]:
        advance(orch, clock, POLL_S)
        assert orch.heartbeat("r1")["assignments"][0]["task_id"] == "todo:1"
        orch.fail_task("r1", "todo:1", "broken", retryable=False)
        status = wait_until(lambda: (s := intake_status(orch))["dead_tasks"]["cooling"] and s)
        return status["dead_tasks"]["cooling"][0]

    assert take_and_kill()["deaths"] == 1
    orch.stop_agent("r1")  # no room: nobody takes it back here meanwhile
    advance(orch, clock, 100)  # given back
    assert todo.tasks[1]["task_status"] == "available"
    todo.tasks[1].update(task_status="in_progress", assigned_agent="competitor")
    for _ in range(7):  # away for longer than the longest cool-down (300 s)
        advance(orch, clock, 50)
    todo.tasks[1].update(task_status="available", assigned_agent=None)
    orch.start_agent("r1")
    assert take_and_kill()["deaths"] == 1  # not 2: the first cool-down again
