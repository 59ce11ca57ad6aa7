"""orch/actors/supervisor.py: one_for_one restarts, backoff and restart intensity."""

import threading

import pytest

from orch import Agent, Conflict, TaskFailed
from tests.conftest import wait_until


class Flaky(Agent):
    """Crashes on payloads that ask for it; counts how often it was built."""

    agent_type = "implementation"
    capabilities = frozenset({"flaky"})
    built = 0
    lock = threading.Lock()

    def __init__(self, agent_id):
        super().__init__(agent_id)
        with Flaky.lock:
            Flaky.built += 1

    def handle(self, task):
        if task.payload.get("crash"):
            raise RuntimeError("boom")
        return {"ok": task.payload}


@pytest.fixture(autouse=True)
def reset_counter():
    Flaky.built = 0


def test_crash_restarts_after_backoff_and_rebuilds_the_agent(orch, clock):
    orch.attach(Flaky("f1"))
    bad = orch.submit({"crash": True}, capabilities={"flaky"}, max_attempts=1)
    with pytest.raises(TaskFailed, match="boom"):
        bad.result(timeout=5)
    wait_until(lambda: orch.directory.get("f1").actor is None)
    clock.advance(0.05)
    orch.tick()
    assert orch.directory.get("f1").actor is None  # backoff 0.1 s not over
    clock.advance(0.06)
    orch.tick()
    wait_until(lambda: orch.agent("f1")["restarts"] == 1)
    assert orch.submit({"n": 1}, capabilities={"flaky"}).result(timeout=5) == {"ok": {"n": 1}}
    assert Flaky.built >= 2  # rebuilt from its constructor arguments
    types = [e.type for e in orch.events_log.since(0)]
    assert "agent.crashed" in types and "agent.restarted" in types


def test_backoff_doubles_between_restarts(orch, clock):
    orch.attach(Flaky("f1"))
    delays = []
    for _ in range(3):
        handle = orch.submit({"crash": True}, capabilities={"flaky"}, max_attempts=1)
        with pytest.raises(TaskFailed):
            handle.result(timeout=5)
        crash = wait_until(lambda: crashes(orch)[len(delays) :])[0]
        delays.append(crash.data["restart_in_s"])
        clock.advance(crash.data["restart_in_s"])
        orch.tick()
        wait_until(lambda: orch.directory.get("f1").actor is not None)
    assert delays == [0.1, 0.2, 0.4]


def test_intensity_exceeded_marks_failed_and_requeues_not_loses(orch, clock, settings):
    orch.attach(Flaky("f1"))
    for _ in range(settings.max_restarts):
        handle = orch.submit({"crash": True}, capabilities={"flaky"}, max_attempts=1)
        with pytest.raises(TaskFailed):
            handle.result(timeout=5)
        wait_until(lambda: orch.directory.get("f1").actor is None)
        clock.advance(11)  # past the longest backoff, well within the 60 s window
        orch.tick()
        wait_until(lambda: orch.directory.get("f1").actor is not None)
    # One more crash inside the window: intensity exceeded. The task has attempts left,
    # so it must go back to the queue, not vanish.
    last = orch.submit({"crash": True}, task_id="last", capabilities={"flaky"}, max_attempts=3)
    wait_until(lambda: orch.agent("f1")["status"] == "failed")
    wait_until(lambda: orch.task("last")["status"] in {"failed", "pending"})
    assert orch.task("last")["attempts"] == 1
    assert "boom" in orch.task("last")["error"]
    assert orch.agent("f1")["restarts"] == settings.max_restarts
    assert "agent.failed" in [e.type for e in orch.events_log.since(0)]
    # After its retry backoff the task is back in the queue for another agent.
    clock.advance(2)
    orch.tick()
    wait_until(lambda: "last" in [t["task_id"] for t in orch.pending_tasks()["pending_tasks"]])
    assert last.status == "pending"


def test_failed_agent_can_be_started_again(orch, clock, settings):
    settings_restarts = settings.max_restarts
    orch.attach(Flaky("f1"))
    for i in range(settings_restarts + 1):
        handle = orch.submit({"crash": True}, capabilities={"flaky"}, max_attempts=1)
        with pytest.raises(TaskFailed):
            handle.result(timeout=5)
        if i < settings_restarts:
            wait_until(lambda: orch.directory.get("f1").actor is None)
            clock.advance(11)
            orch.tick()
            wait_until(lambda: orch.directory.get("f1").actor is not None)
    wait_until(lambda: orch.agent("f1")["status"] == "failed")
    with pytest.raises(Conflict, match="failed"):
        orch.heartbeat("f1")
    assert orch.start_agent("f1")["status"] == "started"
    assert orch.submit({"n": 2}, capabilities={"flaky"}).result(timeout=5) == {"ok": {"n": 2}}


def test_base_exception_in_agent_code_does_not_stop_other_actors(orch, clock):
    class Exiting(Agent):
        capabilities = frozenset({"exit"})

        def handle(self, task):
            raise SystemExit("user code called exit()")

    orch.attach(Exiting("x1"))
    handle = orch.submit({}, capabilities={"exit"}, max_attempts=1)
    with pytest.raises(TaskFailed, match="SystemExit"):
        handle.result(timeout=5)
    # The rest of the system is alive: the scheduler answers and other agents work.
    orch.attach(Flaky("f1"))
    assert orch.submit({"n": 1}, capabilities={"flaky"}).result(timeout=5) == {"ok": {"n": 1}}


def test_auto_restart_off_fails_at_first_crash(orch):
    orch.attach(Flaky("f1"))
    orch.update_agent_config("f1", {"auto_restart": False})
    with pytest.raises(TaskFailed):
        orch.submit({"crash": True}, capabilities={"flaky"}, max_attempts=1).result(timeout=5)
    wait_until(lambda: orch.agent("f1")["status"] == "failed")
    assert orch.agent("f1")["restarts"] == 0


def crashes(orch):
    return [e for e in orch.events_log.since(0) if e.type == "agent.crashed"]
