"""The TODO service hangs: it accepts requests and never answers.

A wedged dependency is worse than a dead one: nothing fails fast. The defences are a
time-out on every request (``ORCH_TODO_TIMEOUT_S``), the Intake being an actor of
its own (only it waits), ``/health`` reading dependency checks run in the
background, and a ticker that keeps the other actors' time-driven work going while
the Intake's tick is stuck. The proof that the rest is not slowed is causal rather
than a stopwatch: every other operation completes while the Intake's *first*
request is still being held (before its time-out could fire).
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from orch import ManualClock, Orchestrator, Settings
from orch.store import MemoryStore
from tests.conftest import wait_until
from tests.fakes.todo_service import FakeTodoService

LIST = "/mcp/list_available_tasks"
TODO_TIMEOUT_S = 2.0


@pytest.fixture
def hung_orch(todo: FakeTodoService) -> Iterator[tuple[Orchestrator, ManualClock]]:
    """Services connected, the real ticker running, time on a ManualClock."""
    clock = ManualClock()
    settings = Settings(
        todo_service_url=todo.url,
        gateway_url="",
        heartbeat_interval_s=1.0,
        todo_poll_s=5.0,
        todo_timeout_s=TODO_TIMEOUT_S,
        dependency_check_interval_s=0.05,
        tick_interval_s=0.01,
    )
    orch = Orchestrator(
        settings, store=MemoryStore(), clock=clock, auto_tick=True, connect_services=True
    ).start()
    try:
        yield orch, clock
    finally:
        todo.answer_again()
        orch.stop()


def intake_errors(orch: Orchestrator) -> float:
    return orch.metrics.registry.get_sample_value("orchestrator_intake_errors_total") or 0.0


def held_lists(todo: FakeTodoService) -> int:
    with todo.lock:
        return sum(1 for path, _ in todo.held if path == LIST)


def one_of_everything(orch: Orchestrator, n: int) -> None:
    """The calls agents and clients make all day: each must answer on its own."""
    agent_id = f"w{n}"
    orch.register_agent(agent_id, "implementation", ["x"])
    orch.start_agent(agent_id)
    orch.heartbeat(agent_id)
    assert orch.assign_task({}, task_id=f"t{n}", agent_id=agent_id)["status"] == "assigned"
    assert orch.complete_task(agent_id, f"t{n}", {"n": n})["status"] == "completed"
    orch.submit({}, task_id=f"q{n}", capabilities=["nobody-has-this"])
    orch.stats()
    assert orch.health()["status"] in ("healthy", "degraded")


def test_a_hanging_todo_service_times_out_and_slows_nothing_else(
    todo: FakeTodoService, hung_orch: tuple[Orchestrator, ManualClock]
) -> None:
    orch, clock = hung_orch
    orch.register_agent("puller", "implementation")  # free capacity: the Intake will poll
    orch.start_agent("puller")
    orch.register_agent("quiet", "breakdown")  # will stop heartbeating
    orch.start_agent("quiet")
    wait_until(lambda: todo.calls.count(LIST) >= 1, message="first (healthy) poll")
    one_of_everything(orch, 0)  # a round before the hang, on warmed-up paths

    todo.hang()
    todo.add_task(1)
    clock.advance(5.0)  # the next poll is due
    orch.heartbeat("puller")
    wait_until(lambda: held_lists(todo) == 1, message="the Intake is stuck in its poll")

    for n in range(1, 3):
        one_of_everything(orch, n)
    # Time-driven work goes on too: the ticker still runs the HealthMonitor.
    clock.advance(3.5)
    orch.heartbeat("puller")
    wait_until(lambda: orch.agent("quiet")["status"] == "unhealthy", message="health ticks")
    # All of that happened while the Intake's first request was still held, i.e.
    # before its time-out fired: nothing above waited for the TODO service.
    assert held_lists(todo) == 1
    assert intake_errors(orch) == 0

    # The Intake gives up (time-out, then its retries time out too) and says so.
    wait_until(lambda: intake_errors(orch) >= 1, timeout_s=10, message="poll timed out")
    assert held_lists(todo) >= 3  # the request and its two retries, each given up
    health = wait_until(
        lambda: (h := orch.health())["checks"]["todo_service"]["status"] == "failing" and h,
        timeout_s=10,
        message="the background check sees the hang",
    )
    assert health["status"] == "degraded"
    assert orch.task("q1")["status"] == "pending"  # queued work untouched

    # The service answers again: the Intake backs off, then takes the task.
    todo.answer_again()
    clock.advance(120)  # past any backoff
    orch.heartbeat("puller")
    task = wait_until(
        lambda: orch.tasks(agent_id="puller"), timeout_s=10, message="the Intake resumed"
    )
    assert [t["task_id"] for t in task] == ["todo:1"]
    assert todo.tasks[1]["assigned_agent"] == "puller"
    wait_until(
        lambda: orch.health()["checks"]["todo_service"]["status"] == "ok",
        timeout_s=10,
        message="healthy again",
    )
