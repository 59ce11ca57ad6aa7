"""Agent actors killed at random moments while a storm of tasks runs through them.

The Supervisor learns of a dead AgentActor through the actor's ``on_failure`` (an
exception escaping a message it was *told*), which reports the crash to the
Scheduler (the agent's tasks are failed and retried by policy) and to the Supervisor
(a restart after backoff). Two kinds of death are injected, both seeded:

* an internal bug: a poisoned message makes the actor itself raise, at a moment
  chosen while one of its workers is inside ``handle`` (the hardest case: the user
  code is still running when its actor dies);
* user code raising inside ``handle``.

The agents' ``handle`` records when each task starts and ends; the storm then proves
that nothing was lost, nothing ran twice at once and the attempt counts add up.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pykka
import pytest

from orch import Agent, Assignment, ManualClock, Orchestrator, Settings
from orch.store import MemoryStore
from tests.conftest import wait_until

SEED = 20240909
AGENTS = 4
TASKS = 200
MAX_ATTEMPTS = 4


@dataclass
class Ledger:
    """What every ``handle`` call saw, shared by all agents and their restarted copies."""

    lock: threading.Lock = field(default_factory=threading.Lock)
    running: dict[str, tuple[str, int]] = field(default_factory=dict)  # task -> (agent, attempt)
    starts: defaultdict[str, list[int]] = field(default_factory=lambda: defaultdict(list))
    overlaps: list[str] = field(default_factory=list)
    crash_plan: dict[str, int] = field(default_factory=dict)  # task -> attempt that raises

    def start(self, task_id: str, agent_id: str, attempt: int) -> None:
        with self.lock:
            other = self.running.get(task_id)
            if other is not None:
                self.overlaps.append(
                    f"{task_id}: attempt {attempt} on {agent_id} started while attempt "
                    f"{other[1]} on {other[0]} was still running"
                )
            self.running[task_id] = (agent_id, attempt)
            self.starts[task_id].append(attempt)

    def end(self, task_id: str, agent_id: str, attempt: int) -> None:
        with self.lock:
            if self.running.get(task_id) == (agent_id, attempt):
                del self.running[task_id]

    def busy_agents(self) -> list[str]:
        with self.lock:
            return sorted({agent for agent, _ in self.running.values()})


class StormWorker(Agent):
    """Does a little work per task; raises when the crash plan says so."""

    agent_type = "implementation"
    capabilities = frozenset({"storm"})
    max_concurrent_tasks = 2

    def __init__(self, agent_id: str, ledger: Ledger) -> None:
        super().__init__(agent_id)
        self.ledger = ledger

    def handle(self, task: Assignment) -> Any:
        task_id = str(task.task_id)
        self.ledger.start(task_id, self.agent_id, task.attempt)
        try:
            # Simulated work: long enough that kills land while user code runs.
            time.sleep(0.002)
            if self.ledger.crash_plan.get(task_id) == task.attempt:
                raise RuntimeError(f"user code crashed on {task_id}")
            return {"by": self.agent_id, "attempt": task.attempt}
        finally:
            self.ledger.end(task_id, self.agent_id, task.attempt)


@pytest.fixture
def storm_orch() -> Iterator[tuple[Orchestrator, ManualClock]]:
    """Restart intensity out of the way: this storm is about restarts, not giving up."""
    clock = ManualClock()
    settings = Settings(
        heartbeat_interval_s=1.0,
        retry_backoff_initial_s=0.5,
        retry_backoff_max_s=2.0,
        max_restarts=10_000,
    )
    orch = Orchestrator(settings, store=MemoryStore(), clock=clock, auto_tick=False).start()
    try:
        yield orch, clock
    finally:
        orch.stop()


def kill(orch: Orchestrator, agent_id: str) -> bool:
    """Make the agent's actor die of an internal error, as a bug in it would."""
    entry = orch.directory.get(agent_id)
    if entry is None or entry.actor is None:
        return False
    try:
        entry.actor.assign.defer(None)  # poison: not an Assignment, so the actor raises
    except pykka.ActorDeadError:
        return False
    return True


def test_random_kills_during_a_storm_lose_nothing_and_never_run_a_task_twice_at_once(
    storm_orch: tuple[Orchestrator, ManualClock],
) -> None:
    orch, clock = storm_orch
    rng = random.Random(SEED)
    ledger = Ledger()
    task_ids = [f"storm-{n}" for n in range(TASKS)]
    # About one task in six crashes its agent on one of its attempts.
    for task_id in rng.sample(task_ids, TASKS // 6):
        ledger.crash_plan[task_id] = rng.randint(1, MAX_ATTEMPTS)
    agent_ids = [f"w{n}" for n in range(AGENTS)]
    for agent_id in agent_ids:
        orch.attach(StormWorker(agent_id, ledger))

    kills: Counter[str] = Counter()
    submitted = 0
    deadline = time.monotonic() + 20
    while True:
        # Submit in bursts so kills land on a queue that is still filling.
        for task_id in task_ids[submitted : submitted + rng.randint(0, 8)]:
            orch.submit({"n": task_id}, task_id=task_id, max_attempts=MAX_ATTEMPTS)
            submitted += 1
        if rng.random() < 0.5:
            busy = ledger.busy_agents()
            target = rng.choice(busy) if busy and rng.random() < 0.7 else rng.choice(agent_ids)
            if kill(orch, target):
                kills[target] += 1
        clock.advance(rng.choice((0.0, 0.05, 0.3, 1.0)))
        orch.tick()
        if submitted == TASKS and all_ended(orch, task_ids):
            break
        assert time.monotonic() < deadline, f"storm did not finish: {orch.stats()['tasks']}"
        time.sleep(0.001)  # let the worker threads take their turn (not a timing wait)

    # Every restart backoff runs out; every agent comes back.
    for _ in range(20):
        clock.advance(11)
        orch.tick()
    for agent_id in agent_ids:
        wait_until(
            lambda a=agent_id: (
                orch.agent(a)["status"] == "idle" and orch.directory.get(a).actor is not None
            ),
            message=f"{agent_id} restarted",
        )
    crashed = [e.data for e in orch.events_log.since(0, 10_000) if e.type == "agent.crashed"]
    poisoned = [c for c in crashed if c["error"].startswith("AttributeError")]
    assert len(poisoned) >= 10, f"the storm must kill actors ({sum(kills.values())} poisoned)"
    assert len(crashed) > len(poisoned), "and user code must crash too"
    crashes = Counter(c["agent_id"] for c in crashed)
    for agent_id in agent_ids:
        assert orch.agent(agent_id)["restarts"] == crashes[agent_id], agent_id

    # None lost: every submitted task ended, completed or dead.
    tasks = {t["task_id"]: t for t in orch.tasks(limit=10_000)}
    assert sorted(tasks) == sorted(task_ids)
    ends = Counter(t["status"] for t in tasks.values())
    assert set(ends) <= {"completed", "dead"} and ends["completed"] > TASKS // 2, ends
    stats = orch.stats()
    assert stats["total_tasks_completed"] + stats["tasks"]["total_tasks_dead"] == TASKS

    # Never twice at once, and the attempts add up.
    assert ledger.overlaps == []
    for task_id, task in tasks.items():
        started = ledger.starts[task_id]
        assert len(started) == len(set(started)), f"{task_id} ran one attempt twice: {started}"
        assert 1 <= task["attempts"] <= MAX_ATTEMPTS, task
        assert all(a <= task["attempts"] for a in started), (task, started)
        if task["status"] == "completed":
            assert task["result"]["attempt"] == task["attempts"], task
            assert task["attempts"] in started
        else:
            assert task["attempts"] == MAX_ATTEMPTS, task


def all_ended(orch: Orchestrator, task_ids: list[str]) -> bool:
    """True once every task is completed or dead (nothing else may end them here)."""
    found = orch.tasks(limit=10_000)
    return len(found) == len(task_ids) and all(t["status"] in ("completed", "dead") for t in found)


class Gated(Agent):
    """Blocks in ``handle`` until the test opens the gate: user code that is slow."""

    agent_type = "implementation"
    capabilities = frozenset({"gated"})

    def __init__(self, agent_id: str, ledger: Ledger, gate: threading.Event) -> None:
        super().__init__(agent_id)
        self.ledger = ledger
        self.gate = gate

    def handle(self, task: Assignment) -> Any:
        self.ledger.start(str(task.task_id), self.agent_id, task.attempt)
        try:
            if self.agent_id == "slow":
                assert self.gate.wait(10), "the test never opened the gate"
            return {"by": self.agent_id, "attempt": task.attempt}
        finally:
            self.ledger.end(str(task.task_id), self.agent_id, task.attempt)


def test_a_task_whose_actor_dies_mid_handle_is_not_rerun_until_that_handle_returns(
    storm_orch: tuple[Orchestrator, ManualClock],
) -> None:
    """The actor can die while its worker thread is still inside ``handle`` (Python
    cannot stop a thread). Retrying the task elsewhere at once would run it twice at
    the same time, so the attempt stays with the dead actor until ``handle`` returns
    (or the task's own timeout runs out)."""
    orch, clock = storm_orch
    ledger, gate = Ledger(), threading.Event()
    orch.attach(Gated("slow", ledger, gate))
    handle = orch.submit({}, task_id="t", capabilities={"gated"}, max_attempts=3)
    wait_until(lambda: ledger.busy_agents() == ["slow"], message="slow is inside handle")
    orch.attach(Gated("fast", ledger, gate))
    assert kill(orch, "slow")
    wait_until(lambda: orch.directory.get("slow").actor is None, message="slow's actor died")
    for _ in range(5):  # past the retry backoff and slow's restart
        clock.advance(1.0)
        orch.tick()
    task = orch.task("t")
    assert (task["status"], task["agent_id"], task["attempts"]) == ("running", "slow", 1)
    assert orch.agent("slow")["restarts"] == 1  # the agent itself is back meanwhile
    gate.set()  # the orphaned handle returns: now the attempt is settled
    wait_until(lambda: orch.task("t")["status"] != "running", message="attempt 1 settled")
    for _ in range(5):
        clock.advance(1.0)
        orch.tick()
    assert handle.result(timeout=5)["attempt"] == 2
    assert orch.task("t")["error"].startswith("AttributeError")  # attempt 1 failed with the crash
    assert ledger.overlaps == []
