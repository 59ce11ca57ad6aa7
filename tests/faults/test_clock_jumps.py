"""The clock jumps: forward (a stalled process, a suspended VM) and backward (NTP).

Every deadline — heartbeat grace, task leases, lock leases, retries, restarts — is
kept on the monotonic clock (orch/clock.py); wall time is only for display and
retention. So a forward jump of *monotonic* time must expire exactly what that much
elapsed time expires, each thing once; a jump of the *wall* clock, either way, must
expire nothing and prolong nothing. The injected ManualClock moves both clocks with
``advance`` and the wall clock alone with ``jump_wall``; the last test drives the real
``SystemClock`` with freezegun, which can even step monotonic time backwards.
"""

from __future__ import annotations

from collections.abc import Iterator

import pykka
import pytest
from freezegun import freeze_time

from orch import ManualClock, NotFound, Orchestrator, Settings
from orch.store import MemoryStore
from tests.conftest import wait_until

DAY_S = 86_400.0


def settle(orch: Orchestrator) -> None:
    """Let every agent actor work through what the last tick told it."""
    for entry in orch.directory.entries():
        if entry.actor is not None:
            try:
                entry.actor.describe().get(timeout=5)
            except pykka.ActorDeadError:
                continue


def busy_agent(orch: Orchestrator, agent_id: str, *, timeout_s: float, ttl_s: float) -> int:
    """A remote agent running task ``t`` and holding lock ``repo``; returns its token."""
    orch.register_agent(agent_id, "implementation")
    orch.start_agent(agent_id)
    orch.assign_task({}, task_id="t", agent_id=agent_id, timeout_s=timeout_s, max_attempts=3)
    assert [a["task_id"] for a in orch.heartbeat(agent_id)["assignments"]] == ["t"]
    wait_until(lambda: orch.task("t")["status"] == "running")
    return orch.acquire_lock(agent_id, "repo", ttl_s=ttl_s)["fencing_token"]


def holders(orch: Orchestrator, resource: str) -> list[tuple[str, int]]:
    return [
        (h["agent_id"], h["fencing_token"])
        for lock in orch.locks()
        if lock["resource"] == resource
        for h in lock["holders"]
    ]


def test_a_forward_jump_makes_a_silent_agent_unhealthy_then_lost_and_requeues_its_work(
    orch: Orchestrator, clock: ManualClock
) -> None:
    token = busy_agent(orch, "a1", timeout_s=3600, ttl_s=600)
    clock.advance(3.5)  # 3.5 missed intervals: unhealthy, keeps its task and lock
    orch.tick()
    wait_until(lambda: orch.agent("a1")["status"] == "unhealthy")
    assert orch.task("t")["status"] == "running" and holders(orch, "repo") == [("a1", token)]

    clock.advance(7.0)  # 10.5 missed: lost; the task is requeued, attempt counted
    orch.tick()
    wait_until(lambda: orch.agent("a1")["status"] == "lost")
    wait_until(lambda: orch.task("t")["status"] == "pending")
    assert orch.task("t")["attempts"] == 1
    wait_until(lambda: holders(orch, "repo") == [])

    orch.register_agent("a2", "implementation")
    orch.start_agent("a2")
    beat = wait_until(lambda: orch.heartbeat("a2")["assignments"])
    assert [(a["task_id"], a["attempt"]) for a in beat] == [("t", 2)]
    assert orch.acquire_lock("a2", "repo")["fencing_token"] > token


def test_one_huge_forward_jump_settles_each_lease_once(
    orch: Orchestrator, clock: ManualClock
) -> None:
    """An hour at once: the agent is lost *and* its task timed out *and* its lock ran
    out. The task ends up back in the queue, held by no one, with every attempt it
    lost accounted for by a requeue, and a healthy agent then finishes it.

    Known limit (see the fault-injection report): the Scheduler expires the lease in
    the same tick in which the HealthMonitor finds the agent silent, and may hand the
    task back to that agent before it hears the agent is lost, so one jump can cost
    the task two attempts. It is never lost or stuck either way."""
    busy_agent(orch, "a1", timeout_s=60, ttl_s=30)
    clock.advance(3600)
    orch.tick()
    wait_until(lambda: orch.agent("a1")["status"] == "lost")
    settle(orch)
    orch.tick()
    task = wait_until(lambda: (t := orch.task("t"))["status"] == "pending" and t)
    assert task["agent_id"] is None and task["attempts"] in (1, 2), task
    requeues = [e for e in orch.events_log.since(0) if e.type == "task.requeued"]
    assert len(requeues) == task["attempts"]
    assert holders(orch, "repo") == []
    # Time keeps working after the jump.
    orch.register_agent("a2", "implementation")
    orch.start_agent("a2")
    beat = wait_until(lambda: orch.heartbeat("a2")["assignments"])
    assert [a["attempt"] for a in beat] == [task["attempts"] + 1]
    assert orch.complete_task("a2", "t", {"ok": True})["status"] == "completed"


def test_a_forward_jump_expires_the_leases_of_an_agent_that_stays_alive(
    orch: Orchestrator, clock: ManualClock
) -> None:
    token = busy_agent(orch, "a1", timeout_s=60, ttl_s=30)
    orch.update_agent_config("a1", {"heartbeat_interval_s": 600})
    clock.advance(120)  # past the lock's ttl and the task's timeout, not the agent's grace
    orch.heartbeat("a1")
    orch.tick()
    settle(orch)
    assert orch.agent("a1")["status"] in ("idle", "busy")
    assert holders(orch, "repo") == []
    with pytest.raises(NotFound, match="expired"):
        orch.renew_lock("a1", "repo", token)
    # The timed-out task was requeued (attempt counted) and, the agent being free and
    # healthy, handed to it again as a new attempt.
    task = wait_until(lambda: (t := orch.task("t"))["attempts"] == 2 and t)
    assert task["agent_id"] == "a1" and "timed out" in task["error"]
    assert [a["attempt"] for a in orch.heartbeat("a1")["assignments"]] == [2]
    assert orch.stats()["tasks"]["total_tasks_timed_out"] == 1
    assert orch.acquire_lock("a1", "repo")["fencing_token"] > token


def test_wall_clock_jumps_either_way_expire_nothing_and_prolong_nothing(
    orch: Orchestrator, clock: ManualClock
) -> None:
    token = busy_agent(orch, "a1", timeout_s=60, ttl_s=30)
    before = (orch.agent("a1")["status"], orch.task("t"), holders(orch, "repo"))
    for jump_s in (-DAY_S, 8 * DAY_S, -30 * DAY_S):
        clock.jump_wall(jump_s)
        orch.tick()
        settle(orch)
        assert (orch.agent("a1")["status"], orch.task("t"), holders(orch, "repo")) == before
        orch.heartbeat("a1")  # nothing crashes on a clock running backwards either
    # Monotonic time still rules: the lock runs out at 30 s, the task at 60 s.
    clock.advance(29)
    orch.heartbeat("a1")
    orch.tick()
    assert holders(orch, "repo") == [("a1", token)]
    clock.advance(2)
    orch.heartbeat("a1")
    orch.tick()
    assert holders(orch, "repo") == []
    assert orch.task("t")["attempts"] == 1
    for _ in range(30):
        clock.advance(1)
        orch.heartbeat("a1")
        orch.tick()
    task = wait_until(lambda: (t := orch.task("t"))["attempts"] == 2 and t)
    assert "timed out" in task["error"]
    # A task finished with the wall clock set back still reports a sane run time.
    clock.jump_wall(-DAY_S)
    orch.heartbeat("a1")
    assert orch.complete_task("a1", "t", {"ok": True})["status"] == "completed"
    done = [e for e in orch.events_log.since(0) if e.type == "task.completed"]
    assert done[-1].data["run_s"] >= 0


@pytest.fixture
def system_clock_orch() -> Iterator[Orchestrator]:
    """The real SystemClock (no ticker), for freezegun to move."""
    orch = Orchestrator(Settings(heartbeat_interval_s=1.0), store=MemoryStore(), auto_tick=False)
    with freeze_time("2024-06-01 12:00:00") as frozen:
        orch.start()
        orch.frozen = frozen  # type: ignore[attr-defined]
        try:
            yield orch
        finally:
            orch.stop()


def test_system_clock_stepped_back_then_forward(system_clock_orch: Orchestrator) -> None:
    """freezegun steps time.monotonic back too (a real one never goes back); even then
    nothing is declared lost or expired, and later forward time expires as usual."""
    orch = system_clock_orch
    frozen = orch.frozen  # type: ignore[attr-defined]
    token = busy_agent(orch, "a1", timeout_s=60, ttl_s=30)
    frozen.move_to("2024-06-01 11:00:00")  # an hour back
    orch.tick()
    settle(orch)
    assert orch.agent("a1")["status"] == "busy"
    assert orch.task("t")["status"] == "running" and holders(orch, "repo") == [("a1", token)]
    orch.heartbeat("a1")  # heartbeats at the earlier time are fine

    frozen.move_to("2024-06-01 11:00:03.5")  # 3.5 s after that heartbeat: unhealthy
    orch.tick()
    settle(orch)
    assert orch.agent("a1")["status"] == "unhealthy"
    frozen.move_to("2024-06-01 12:01:00")  # past the lock's and the task's deadlines
    orch.tick()
    settle(orch)
    orch.tick()
    assert orch.agent("a1")["status"] == "lost"
    assert holders(orch, "repo") == []
    task = orch.task("t")
    assert (task["status"], task["attempts"]) == ("pending", 1), task
