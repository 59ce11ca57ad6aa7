"""The Intake against a real HTTP TODO service on loopback (tests/fakes/todo_service.py)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

import pytest

from orch import Agent, ManualClock, NotFound, Orchestrator, Settings
from orch.store import SQLiteStore
from tests.conftest import wait_until
from tests.fakes.todo_service import FakeTodoService


class Implementer(Agent):
    agent_type = "implementation"
    capabilities = frozenset()

    def handle(self, task):
        return {"notes": f"did {task.payload['title']}"}


@pytest.fixture
def make_orch(todo, tmp_path) -> Iterator[Callable[..., Orchestrator]]:
    opened: list[Orchestrator] = []
    clock = ManualClock()
    path = str(tmp_path / "orch.db")

    def make(**overrides) -> Orchestrator:
        settings = Settings(
            todo_service_url=todo.url,
            gateway_url="",
            heartbeat_interval_s=1.0,
            todo_poll_s=5.0,
            **overrides,
        )
        orch = Orchestrator(
            settings, store=SQLiteStore(path), clock=clock, auto_tick=False, connect_services=True
        ).start()
        opened.append(orch)
        return orch

    make.clock = clock  # type: ignore[attr-defined]
    yield make
    for orch in opened:
        orch.stop()


def counter(orch: Orchestrator, name: str) -> float:
    return orch.metrics.registry.get_sample_value(name) or 0.0


def test_round_trip_from_todo_task_to_completion(todo, make_orch):
    todo.add_task(1, title="write the parser")
    todo.add_task(2, task_type="epic")  # not for an implementation agent
    orch = make_orch()
    orch.attach(Implementer("impl-1"))
    orch.tick()
    wait_until(lambda: todo.tasks[1]["task_status"] == "complete", message="reported complete")
    assert todo.tasks[1]["notes"] == "did write the parser"
    assert todo.tasks[1]["assigned_agent"] == "impl-1"
    task = orch.task("todo:1")
    assert task["status"] == "completed" and task["payload"]["title"] == "write the parser"
    assert todo.tasks[2]["task_status"] == "available"
    assert counter(orch, "orchestrator_intake_polls_total") == 1
    # Counted once the service's answer is back, which is after the service has marked
    # the task complete (what the wait above saw): waited for, not read at once.
    wait_until(
        lambda: counter(orch, "orchestrator_intake_completions_total") == 1,
        message="the completion counted",
    )
    assert counter(orch, "orchestrator_intake_completions_total") == 1


def test_a_reservation_lost_to_another_consumer_is_not_an_error(todo, make_orch):
    todo.add_task(1)
    todo.add_task(2)
    todo.stolen_on_list = {1}
    orch = make_orch()
    orch.register_agent("r1", "implementation", max_concurrent_tasks=2)
    orch.start_agent("r1")
    orch.tick()
    assert todo.tasks[1]["assigned_agent"] == "competitor"
    with pytest.raises(NotFound):
        orch.task("todo:1")
    assert orch.task("todo:2")["agent_id"] == "r1"
    assert todo.tasks[2]["assigned_agent"] == "r1"
    assert counter(orch, "orchestrator_intake_errors_total") == 0


def test_an_outage_backs_off_warns_once_and_recovers(todo, make_orch, caplog):
    orch = make_orch(dependency_check_interval_s=3600)
    orch.register_agent("r1", "implementation")
    orch.start_agent("r1")
    todo.stop()
    todo.add_task(1)
    with caplog.at_level(logging.INFO, logger="orch.intake"):
        for _ in range(4):
            make_orch.clock.advance(120)  # past any backoff
            orch.heartbeat("r1")  # the agent stays alive meanwhile
            orch.tick()
        warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
        assert len(warnings) == 1 and "unavailable" in warnings[0].getMessage()
        assert "start with TODO_SERVICE_URL=" in warnings[0].getMessage()
        assert counter(orch, "orchestrator_intake_errors_total") == 4
        orch.dependencies.run_once()
        health = orch.health()
        assert health["status"] == "degraded"
        assert health["checks"]["todo_service"]["status"] == "failing"
        assert orch.agent("r1")["status"] == "idle"  # the rest carries on
        todo.start()
        make_orch.clock.advance(120)
        orch.heartbeat("r1")
        orch.tick()
        assert any("reachable again" in r.getMessage() for r in caplog.records)
    assert orch.task("todo:1")["agent_id"] == "r1"
    orch.dependencies.run_once()
    assert orch.health()["status"] == "healthy"


def reserved_for_r1(todo: FakeTodoService, make_orch: Callable[..., Orchestrator]) -> Orchestrator:
    """An orchestrator whose one agent ``r1`` has TODO task 1 reserved and assigned."""
    todo.add_task(1)
    orch = make_orch()
    orch.register_agent("r1", "implementation")
    orch.start_agent("r1")
    orch.tick()
    assert todo.tasks[1]["assigned_agent"] == "r1"
    return orch


def test_a_task_whose_agent_is_lost_is_given_back(todo, make_orch):
    orch = reserved_for_r1(todo, make_orch)
    make_orch.clock.advance(11)  # ten missed heartbeats: lost
    orch.tick()
    wait_until(lambda: orch.agent("r1")["status"] == "lost")
    wait_until(lambda: todo.tasks[1]["task_status"] == "available", message="unlocked")
    assert todo.tasks[1]["assigned_agent"] is None
    assert orch.task("todo:1")["status"] == "cancelled"


def test_a_task_that_ends_dead_is_marked_blocked_not_given_back(todo, make_orch):
    orch = reserved_for_r1(todo, make_orch)
    orch.heartbeat("r1")
    orch.fail_task("r1", "todo:1", "cannot be done", retryable=False)
    wait_until(lambda: todo.tasks[1]["task_status"] == "blocked", message="blocked")
    assert todo.tasks[1]["notes"] == "cannot be done"
    assert orch.task("todo:1")["status"] == "dead"
    wait_until(lambda: counter(orch, "orchestrator_intake_blocks_total") == 1)
    assert "/tasks/1/unlock" not in todo.calls


def test_a_task_retried_on_another_agent_takes_its_reservation_along(todo, make_orch):
    todo.add_task(1)
    orch = make_orch()
    orch.register_agent("r1", "implementation")
    orch.start_agent("r1")
    orch.tick()
    orch.register_agent("r2", "implementation")
    orch.start_agent("r2")
    orch.heartbeat("r1")
    orch.stop_agent("r1")  # draining: it takes no new work, so the retry goes to r2
    orch.fail_task("r1", "todo:1", "flaky", retryable=True)
    make_orch.clock.advance(1.5)  # past the retry backoff
    orch.heartbeat("r2")
    orch.tick()
    wait_until(lambda: orch.task("todo:1")["agent_id"] == "r2", message="retried on r2")
    wait_until(lambda: todo.tasks[1]["assigned_agent"] == "r2", message="re-reserved for r2")
    orch.heartbeat("r2")
    orch.complete_task("r2", "todo:1", {"notes": "second try"})
    wait_until(lambda: todo.tasks[1]["task_status"] == "complete", message="reported complete")
    assert todo.tasks[1]["notes"] == "second try"


def test_a_restart_mid_task_keeps_the_reservation(todo, make_orch):
    todo.add_task(1)
    first = make_orch()
    token = first.register_agent("r1", "implementation")["token"]
    first.start_agent("r1")
    first.tick()
    assert first.heartbeat("r1")["assignments"][0]["task_id"] == "todo:1"
    first.stop()

    second = make_orch()
    second.authenticate("r1", token)
    second.tick()  # polls again: must not reserve twice
    assert second.complete_task("r1", "todo:1", {"notes": "after restart"})["status"] == "completed"
    wait_until(lambda: todo.tasks[1]["task_status"] == "complete")
    assert todo.tasks[1]["notes"] == "after restart"
    assert todo.calls.count("/mcp/reserve_task") == 1
