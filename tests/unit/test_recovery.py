"""Recovery: a new Orchestrator on the same store carries on where the last one stopped."""

from __future__ import annotations

from collections.abc import Callable, Iterator

import pytest

from orch import Agent, Conflict, ManualClock, NotFound, Orchestrator, Settings
from orch.store import SQLiteStore
from tests.conftest import wait_until


class Echo(Agent):
    agent_type = "implementation"
    capabilities = {"echo"}

    def handle(self, task):
        return {"echo": task.payload}


@pytest.fixture
def reopen(tmp_path) -> Iterator[Callable[..., Orchestrator]]:
    """Open an Orchestrator on the same SQLite file, stopping the previous one first."""
    path = str(tmp_path / "orch.db")
    opened: list[Orchestrator] = []
    clock = ManualClock()

    def open_again(**settings: object) -> Orchestrator:
        for orch in opened:
            orch.stop()
        opened.clear()
        orch = Orchestrator(
            Settings(heartbeat_interval_s=1.0, **settings),
            store=SQLiteStore(path),
            clock=clock,
            auto_tick=False,
        ).start()
        opened.append(orch)
        return orch

    open_again.clock = clock  # type: ignore[attr-defined]
    yield open_again
    for orch in opened:
        orch.stop()


def test_agents_tasks_locks_and_config_survive_a_restart(reopen):
    first = reopen()
    token = first.register_agent("a1", "implementation", ["code"], metadata={"team": "x"})["token"]
    first.start_agent("a1")
    first.update_agent_config("a1", {"settings": {"model": "big"}})
    first.set_config_defaults({"task_timeout_s": 120})
    assert first.assign_task({"n": 1}, task_id=7, agent_id="a1")["status"] == "assigned"
    first.heartbeat("a1")  # delivered: running
    first.assign_task({"n": 2}, task_id="queued", capabilities=["other"])
    grant = first.acquire_lock("a1", "repo:june", ttl_s=600)

    second = reopen()
    second.authenticate("a1", token)  # tokens issued before the restart keep working
    agent = second.agent("a1")
    assert agent["metadata"] == {"team": "x"}
    assert second.agent_config("a1")["version"] == 2
    assert second.agent_config("a1")["settings"] == {"model": "big"}
    assert second.config_defaults()["task_timeout_s"] == 120
    beat = wait_until(lambda: second.heartbeat("a1")["assignments"])
    assert [(a["task_id"], a["attempt"]) for a in beat] == [(7, 1)]
    assert second.task(7)["status"] == "running"
    assert second.agent("a1")["status"] == "busy"
    assert second.pending_tasks()["count"] == 1
    assert second.task("queued")["payload"] == {"n": 2}
    second.register_agent("other", "implementation")
    with pytest.raises(Conflict):
        second.acquire_lock("other", "repo:june")
    renewed = second.renew_lock("a1", "repo:june", grant["fencing_token"])
    assert renewed["fencing_token"] == grant["fencing_token"]
    second.release_lock("a1", "repo:june", grant["fencing_token"])
    later = second.acquire_lock("other", "repo:june")
    assert later["fencing_token"] > grant["fencing_token"]
    assert second.complete_task("a1", 7, {"ok": True})["status"] == "completed"


def test_every_agent_gets_a_fresh_grace_period(reopen):
    first = reopen()
    first.register_agent("a1", "implementation")
    first.start_agent("a1")
    reopen.clock.advance(2.5)  # 2.5 of 3 missed intervals before the restart
    second = reopen()
    reopen.clock.advance(2.0)
    second.tick()
    assert second.agent("a1")["status"] == "idle"
    reopen.clock.advance(1.5)
    second.tick()
    wait_until(lambda: second.agent("a1")["status"] == "unhealthy")


def test_a_failed_retry_waits_no_longer_than_the_restart(reopen):
    first = reopen()
    first.register_agent("a1", "implementation")
    first.start_agent("a1")
    first.assign_task({}, task_id="t", agent_id="a1", max_attempts=2)
    first.fail_task("a1", "t", "flaky")
    second = reopen()
    assert second.task("t")["status"] == "failed"
    second.tick()
    wait_until(lambda: second.task("t")["status"] in ("pending", "assigned"))


def test_in_process_agents_come_back_lost_and_can_be_attached_again(reopen):
    first = reopen()
    first.attach(Echo("echo-1"), start=False)
    second = reopen()
    assert second.agent("echo-1")["status"] == "lost"
    second.attach(Echo("echo-1"))
    assert second.agent("echo-1")["status"] == "idle"


def test_tasks_of_an_agent_that_did_not_come_back_are_requeued(reopen):
    first = reopen()
    first.register_agent("gone", "implementation", ["x"])
    first.start_agent("gone")
    first.assign_task({}, task_id="t", agent_id="gone")
    first.stop_agent("gone")  # draining: it holds the task
    assert first.agent("gone")["status"] == "stopping"
    second = reopen()
    assert second.agent("gone")["status"] == "stopped"
    task = second.task("t")
    assert task["status"] == "pending" and task["attempts"] == 0


def test_finished_tasks_are_pruned_after_retention(reopen):
    orch = reopen(task_retention_s=100.0)
    orch.register_agent("a1", "implementation")
    orch.start_agent("a1")
    orch.assign_task({}, task_id="old", agent_id="a1")
    orch.complete_task("a1", "old")
    orch.assign_task({}, task_id="live")  # pending: never pruned
    reopen.clock.advance(170)
    orch.tick()
    with pytest.raises(NotFound):
        orch.task("old")
    assert orch.task("live")["status"] in ("pending", "assigned")
    wait_until(lambda: [t.key for t in orch.store.load_tasks()] == ["live"])
