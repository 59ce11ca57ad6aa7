"""``orch/actors/runner.py``: an in-process agent's code runs off its actor, guarded."""

from __future__ import annotations

import logging
import threading
import traceback
from collections.abc import Iterator
from typing import Any

import pykka
import pytest

from orch import Orchestrator
from orch.actors.runner import InProcessRunner
from orch.agent import Agent
from orch.model import Assignment
from tests.conftest import wait_until


class Reports(pykka.ThreadingActor):
    """Stands where the AgentActor (task_done, task_crashed) and the Scheduler
    (fail_from_agent) are: a real actor that records what it is told."""

    def __init__(self) -> None:
        super().__init__()
        self.told: list[tuple[Any, ...]] = []

    def task_done(self, key: str, attempt: int, result: Any) -> None:
        self.told.append(("done", key, attempt, result))

    def task_crashed(self, key: str, attempt: int, error: str) -> None:
        self.told.append(("crashed", key, attempt, error))

    def fail_from_agent(
        self, agent_id: str, key: str, attempt: int, error: str, retryable: bool
    ) -> None:
        self.told.append(("failed", agent_id, key, attempt, error, retryable))

    def reports(self) -> list[tuple[Any, ...]]:
        return list(self.told)


class Worker(Agent):
    """Echoes, raises SystemExit, or waits for the test to let it finish."""

    built = 0
    entered = threading.Event()
    release = threading.Event()

    def __init__(self, agent_id: str) -> None:
        super().__init__(agent_id)
        Worker.built += 1
        self.started = self.stopped = 0

    def on_start(self) -> None:
        self.started += 1

    def on_stop(self) -> None:
        self.stopped += 1

    def handle(self, task: Assignment) -> Any:
        action = task.payload["do"]
        if action == "exit":
            raise SystemExit("bye")  # a BaseException: must not reach Pykka
        if action == "wait":
            Worker.entered.set()
            assert Worker.release.wait(10)
        return {"echo": task.payload}


def assignment(task_id: str, do: str, attempt: int = 1) -> Assignment:
    return Assignment(task_id, {"do": do}, attempt, 0, (), {}, 60.0)


@pytest.fixture
def reports() -> Iterator[Any]:
    ref = Reports.start()
    try:
        yield ref.proxy()
    finally:
        ref.stop()


def test_a_result_is_reported_done_and_the_agent_is_built_once(reports: Any) -> None:
    Worker.built = 0
    runner = InProcessRunner(lambda: Worker("w1"), reports, slots=2, agent_id="w1")
    runner.submit(assignment("t1", "echo"))
    runner.submit(assignment("t2", "echo"))
    told = wait_until(lambda: len(reports.reports().get()) == 2 and reports.reports().get())
    assert sorted(told) == [
        ("done", "t1", 1, {"echo": {"do": "echo"}}),
        ("done", "t2", 1, {"echo": {"do": "echo"}}),
    ]
    runner.close()
    assert Worker.built == 1  # built lazily, once, whatever the number of slots


def test_a_base_exception_from_user_code_becomes_a_crash_report(reports: Any) -> None:
    runner = InProcessRunner(lambda: Worker("w1"), reports, slots=1, agent_id="w1")
    runner.submit(assignment("t1", "exit", attempt=2))
    told = wait_until(lambda: reports.reports().get())
    assert told == [("crashed", "t1", 2, "SystemExit: bye")]
    runner.submit(assignment("t2", "echo"))  # the worker thread survived the guard
    wait_until(lambda: len(reports.reports().get()) == 2)
    runner.close()


def test_a_run_outliving_a_crash_fails_its_attempt_with_the_scheduler(reports: Any) -> None:
    Worker.entered.clear()
    Worker.release.clear()
    runner = InProcessRunner(lambda: Worker("w1"), reports, slots=1, agent_id="w1")
    runner.submit(assignment("t1", "wait"))
    assert Worker.entered.wait(5), "the run never started"
    running = runner.close(orphans_to=reports, error="AgentCrashed: boom")
    assert running == frozenset({("t1", 1)})  # still leased: it must not run twice
    Worker.release.set()
    told = wait_until(lambda: reports.reports().get())
    assert told == [("failed", "w1", "t1", 1, "AgentCrashed: boom", True)]


def test_a_stopped_runner_calls_on_stop_and_reports_nothing_more(reports: Any) -> None:
    built: list[Worker] = []

    def factory() -> Worker:
        built.append(Worker("w1"))
        return built[-1]

    runner = InProcessRunner(factory, reports, slots=1, agent_id="w1")
    runner.submit(assignment("t1", "echo"))
    wait_until(lambda: reports.reports().get())
    runner.close()
    assert (built[0].started, built[0].stopped) == (1, 1)


class Broken(Agent):
    """User code that raises from a helper of its own: its frames must be in the log."""

    agent_type = "broken"
    capabilities = frozenset()

    def handle(self, task: Any) -> Any:
        return parse_the_users_config(task.payload)


def parse_the_users_config(payload: Any) -> Any:
    return payload["missing-key"]


def test_a_raising_handle_is_logged_once_at_error_with_the_users_own_traceback(
    live_orch: Orchestrator, caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.DEBUG):
        live_orch.attach(Broken("b1"))
        live_orch.submit({}, task_id="t1", agent_type="broken", max_attempts=1)
        wait_until(lambda: live_orch.task("t1")["status"] == "dead", message="never failed")
        wait_until(lambda: live_orch.agent("b1")["restarts"] >= 1, message="never restarted")
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1, [r.getMessage() for r in errors]
    [record] = errors
    assert record.name == "orch.agent"
    assert "agent b1: task t1 (attempt 1) raised KeyError: 'missing-key'" in record.getMessage()
    frames = traceback.extract_tb(record.exc_info[2])
    # Their file and line, their functions; none of the orchestrator's own frames.
    assert [f.name for f in frames] == ["handle", "parse_the_users_config"]
    assert all(f.filename == __file__ for f in frames)
    assert frames[-1].line == 'return payload["missing-key"]'
    assert "Traceback" in caplog.text and "parse_the_users_config" in caplog.text
    assert "Unhandled exception" not in caplog.text  # no Pykka traceback of our internals
