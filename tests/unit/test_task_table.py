"""orch/actors/task_table.py: the Scheduler's rules, driven directly.

No actors, no threads, no store, no waiting: time is the ``now`` (monotonic) and
``wall`` each call is given, and the test plays the actor's part — it keeps each
proposal (as if stored) and reads the plan that comes back.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest

from orch.actors.matching import AgentSlot
from orch.actors.records import evolve
from orch.actors.task_table import PRUNE_INTERVAL_S, TaskTable
from orch.actors.task_timing import ACTOR_GONE, ORPHANED, REFUSED, TIMED_OUT
from orch.config import Settings
from orch.errors import Conflict, Forbidden, Invalid, NotFound, TooManyRequests
from orch.model import Task, TaskSpec, TaskState

WALL = 1_700_000_000.0


@dataclass
class Applied:
    """What one plan asked of the actor."""

    events: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    tells: list[tuple[str, str, Any]] = field(default_factory=list)  # agent id, message, arg
    releases: list[str] = field(default_factory=list)

    def types(self) -> list[str]:
        return [event_type for event_type, _ in self.events]


def settle(table: TaskTable, task: Task, now: float = 0.0, reason: str | None = None) -> Applied:
    """Keep a proposal as the actor does once the store took it; empty the plan."""
    plan = table.keep(task, now, reason)
    applied = Applied(
        list(plan.events), [(s.agent_id, m, a) for s, m, a in plan.tells], list(plan.releases)
    )
    plan.events.clear()
    plan.tells.clear()
    plan.releases.clear()
    return applied


def make(**settings: Any) -> TaskTable:
    return TaskTable(Settings(**{"retry_backoff_initial_s": 1.0, **settings}))


def agent(table: TaskTable, agent_id: str, *, agent_type="impl", caps=("code",), slots=1, **kw):
    slot = AgentSlot(
        agent_id=agent_id,
        generation=kw.pop("generation", 1),
        actor=None,
        agent_type=agent_type,
        capabilities=frozenset(caps),
        max_slots=slots,
        task_timeout_s=kw.pop("task_timeout_s", 60.0),
        **kw,
    )
    plan = table.agent_ready(slot)
    assert plan is not None
    plan.tells.clear()
    return slot


def submit(table: TaskTable, task_id: Any, now: float = 0.0, **spec: Any) -> Task:
    task = table.new_task(TaskSpec(task_id=task_id, payload={}, **spec), now, WALL + now)
    settle(table, task, now)
    return table.tasks[task.key]


def dispatch(table: TaskTable, now: float = 0.0) -> list[tuple[str, str]]:
    """Lease every match (no resources), as the actor's ``_dispatch``: (task, agent)."""
    leased = []
    while (match := table.matcher.next_match()) is not None:
        key, slot = match
        settle(table, table.leased(table.tasks[key], slot, {}, now, WALL + now), now)
        leased.append((key, slot.agent_id))
    return leased


def state(table: TaskTable, task_id: Any) -> TaskState:
    return table.get(task_id).state


# ------------------------------------------------------------------ queue order


def test_highest_priority_first_then_submission_order():
    table = make()
    for task_id, priority in [("low", 1), ("high", 9), ("low2", 1), ("mid", 5)]:
        submit(table, task_id, priority=priority)
    assert [t.key for t in table.pending(10)] == ["high", "mid", "low", "low2"]
    agent(table, "a", slots=10)
    assert [key for key, _ in dispatch(table)] == ["high", "mid", "low", "low2"]


def test_eligibility_type_capabilities_and_free_slots():
    table = make()
    agent(table, "coder", caps=("code",))
    agent(table, "tester", agent_type="qa", caps=("code", "test"))
    submit(table, "needs-test", capabilities=frozenset({"test"}))
    submit(table, "needs-impl", agent_type="impl")
    submit(table, "needs-gpu", capabilities=frozenset({"gpu"}))
    assert sorted(dispatch(table)) == [("needs-impl", "coder"), ("needs-test", "tester")]
    submit(table, "more")
    assert dispatch(table) == []  # both agents are full (1 slot each)
    assert state(table, "needs-gpu") is TaskState.PENDING


def test_least_loaded_then_least_recently_assigned():
    table = make()
    for name in ("a", "b", "c"):
        agent(table, name, slots=5)
    for i in range(6):
        submit(table, f"t{i}")
    assert [a for _, a in dispatch(table)] == ["a", "b", "c", "a", "b", "c"]


def test_an_agent_not_ready_gets_nothing_and_keeps_its_tasks():
    table = make()
    agent(table, "a", slots=2)
    submit(table, "held")
    dispatch(table)
    table.agent_unready("a", generation=1)
    submit(table, "next")
    assert dispatch(table) == []
    assert [t.key for t in table.tasks_of("a")] == ["held"]


def test_a_stale_agent_view_is_ignored():
    table = make()
    agent(table, "a", generation=2)
    assert table.agent_ready(evolve_slot(table.matcher.agent("a"), generation=1)) is None


def evolve_slot(slot: AgentSlot | None, **changes: Any) -> AgentSlot:
    assert slot is not None
    fields = {name: getattr(slot, name) for name in AgentSlot.__slots__}
    return AgentSlot(**(fields | changes))


# ---------------------------------------------------------------- leasing


def test_a_lease_is_planned_as_an_event_and_an_assignment():
    table = make()
    agent(table, "a", task_timeout_s=30.0)
    task = submit(table, "t", now=1.0)
    leased = table.leased(task, table.matcher.agent("a"), {"r": 7}, 3.5, WALL + 3.5)
    assert table.get("t").state is TaskState.PENDING  # a proposal changes nothing
    applied = settle(table, leased, now=3.5)
    assert applied.types() == ["task.assigned"]
    assert applied.events[0][1] == {
        "task_id": "t",
        "agent_id": "a",
        "attempt": 1,
        "queue_wait_s": 2.5,
    }
    [(agent_id, message, assignment)] = applied.tells
    assert (agent_id, message, assignment.attempt, assignment.timeout_s) == ("a", "assign", 1, 30)
    assert assignment.fencing_tokens == {"r": 7}
    kept = table.get("t")
    assert (kept.state, kept.lease_deadline, kept.assigned_at) == (
        TaskState.ASSIGNED,
        33.5,
        WALL + 3.5,
    )


def test_in_process_agents_are_leased_running_at_once():
    table = make()
    agent(table, "a", in_process=True)
    submit(table, "t")
    dispatch(table)
    assert state(table, "t") is TaskState.RUNNING


def test_delivery_marks_running_only_the_current_attempt_of_the_holder():
    table = make()
    agent(table, "a")
    submit(table, "t")
    dispatch(table)
    assert table.delivered("b", [("t", 1)]) == []
    assert table.delivered("a", [("t", 2)]) == []
    [running] = table.delivered("a", [("t", 1)])
    assert settle(table, running) == Applied()
    assert state(table, "t") is TaskState.RUNNING


def test_a_lease_times_out_at_its_deadline_counting_the_attempt_then_dead():
    table = make()
    agent(table, "a", task_timeout_s=10.0)
    submit(table, "slow", max_attempts=2)
    dispatch(table, now=0.0)
    assert table.due(9.99, WALL) is None
    requeued, reason = table.due(10.0, WALL + 10)
    assert reason == TIMED_OUT
    assert (requeued.state, requeued.attempts, requeued.error) == (TaskState.PENDING, 1, TIMED_OUT)
    applied = settle(table, requeued, 10.0, reason)
    assert applied.types() == ["task.requeued"]
    assert ("a", "release", "slow") in applied.tells
    assert table.due(10.0, WALL) is None  # its entry went stale once kept
    dispatch(table, now=10.0)
    dead, reason = table.due(20.0, WALL + 20)
    assert dead.state is TaskState.DEAD
    assert settle(table, dead, 20.0, reason).types() == ["task.dead"]
    stats = table.stats()
    assert (stats["total_tasks_timed_out"], stats["total_tasks_dead"]) == (2, 1)
    assert stats["total_tasks_failed"] == 1


def test_a_due_change_whose_write_failed_is_proposed_again():
    table = make()
    agent(table, "a", task_timeout_s=5.0)
    submit(table, "t")
    dispatch(table)
    first, _ = table.due(6.0, WALL)
    again, _ = table.due(6.0, WALL)  # not kept (the store refused): still due
    assert again == first


def test_a_lease_renewed_in_the_same_attempt_is_not_expired_by_its_old_entry():
    table = make()
    agent(table, "a", task_timeout_s=10.0)
    submit(table, "t")
    dispatch(table, now=0.0)
    requeued = table.refused("a", "t", 1, 5.0, WALL)
    settle(table, *requeued)
    dispatch(table, now=5.0)  # attempt 1 again, deadline 15
    assert table.get("t").attempts == 1
    assert table.due(10.0, WALL) is None
    assert table.due(15.0, WALL) is not None


# ---------------------------------------------------------------- retries


def test_failure_retries_after_a_doubling_backoff_then_dead():
    table = make(retry_backoff_initial_s=1.0, retry_backoff_max_s=60.0)
    agent(table, "a")
    submit(table, "t", max_attempts=3)
    dispatch(table, now=0.0)
    failed = table.failed(table.get("t"), "flaky", True, 0.0, WALL)
    applied = settle(table, failed)
    assert applied.types() == ["task.failed"]
    assert applied.events[0][1]["retry_in_s"] == 1.0
    assert ("a", "release", "t") in applied.tells
    assert table.tasks_of("a") == []
    assert table.due(0.99, WALL) is None
    retried, reason = table.due(1.0, WALL)
    assert (retried.state, reason) == (TaskState.PENDING, None)
    assert (retried.error, retried.retry_at, retried.queued_at) == ("flaky", None, 1.0)
    assert settle(table, retried, 1.0).events == [("task.retried", {"task_id": "t", "attempt": 2})]
    dispatch(table, now=1.0)
    second = table.failed(table.get("t"), "flaky", True, 1.0, WALL)
    assert second.retry_at == 3.0  # 2 s after the second attempt
    settle(table, second)
    settle(table, table.due(3.0, WALL)[0], 3.0)
    dispatch(table, now=3.0)
    dead = table.failed(table.get("t"), "flaky again", True, 3.0, WALL + 3)
    assert settle(table, dead).types() == ["task.dead"]
    assert (dead.state, dead.error, dead.finished_at) == (TaskState.DEAD, "flaky again", WALL + 3)
    stats = table.stats()
    assert (stats["total_tasks_failed"], stats["total_tasks_retried"]) == (3, 2)


def test_a_failure_that_is_not_retryable_is_dead_at_once():
    table = make()
    agent(table, "a")
    submit(table, "t", max_attempts=5)
    dispatch(table)
    assert table.failed(table.get("t"), "bad input", False, 0.0, WALL).state is TaskState.DEAD


# ------------------------------------------------------------------ cancel


@pytest.mark.parametrize("where", ["pending", "assigned", "running", "failed"])
def test_cancel_from_each_state_that_has_not_ended(where):
    table = make()
    agent(table, "a", in_process=where == "running")
    submit(table, "t", resources=("repo",))
    if where != "pending":
        key, slot = table.matcher.next_match()
        settle(table, table.leased(table.tasks[key], slot, {"repo": 1}, 0.0, WALL))
    if where == "failed":
        settle(table, table.failed(table.get("t"), "oops", True, 0.0, WALL))
    assert str(state(table, "t")) == where
    cancelled = table.finished(table.cancellable("t"), TaskState.CANCELLED, WALL, error="cancelled")
    applied = settle(table, cancelled)
    assert applied.types() == ["task.cancelled"]
    leased = where in ("assigned", "running")
    assert (("a", "release", "t") in applied.tells) is leased
    assert applied.releases == (["t#1"] if leased else [])
    assert state(table, "t") is TaskState.CANCELLED
    with pytest.raises(Conflict, match="already ended"):
        table.cancellable("t")
    assert table.due(1e9, WALL) is None  # no retry or lease of it is left
    submit(table, "other")
    assert dispatch(table) == [("other", "a")]


# -------------------------------------------------------------- resources


def test_a_task_parked_for_its_resources_waits_until_one_comes_free():
    table = make()
    agent(table, "a", slots=2)
    submit(table, "t", resources=("repo", "db"))
    key, _ = table.matcher.next_match()
    table.park(table.tasks[key])  # the LockBroker said no
    assert table.stats()["parked_tasks"] == 1
    submit(table, "free")
    assert dispatch(table) == [("free", "a")]
    table.resources_freed(["elsewhere"])
    assert table.matcher.next_match() is None
    table.resources_freed(["db"])
    assert table.stats()["parked_tasks"] == 0
    assert table.matcher.next_match()[0] == "t"


def test_cancelling_a_parked_task_forgets_it():
    table = make()
    agent(table, "a")
    submit(table, "t", resources=("repo",))
    key, _ = table.matcher.next_match()
    table.park(table.tasks[key])
    settle(table, table.finished(table.get("t"), TaskState.CANCELLED, WALL, error="cancelled"))
    assert table.stats()["parked_tasks"] == 0
    table.resources_freed(["repo"])
    assert table.matcher.next_match() is None


# ----------------------------------------------------------------- agents


@pytest.mark.parametrize(
    ("how", "then", "attempts"),
    [("lost", TaskState.PENDING, 1), ("released", TaskState.PENDING, 0), ("crashed", "failed", 1)],
)
def test_the_tasks_of_a_gone_agent_are_settled_by_how_it_went(how, then, attempts):
    table = make()
    agent(table, "a", slots=2)
    submit(table, "t")
    submit(table, "still")
    dispatch(table)
    settled = table.agent_gone("a", 1, how, "boom", frozenset({("still", 1)}), 0.0, WALL)
    assert table.matcher.agent("a") is None  # offered nothing more
    [(task, reason)] = settled
    settle(table, task, 0.0, reason)
    kept = table.get("t")
    assert (str(kept.state), kept.attempts) == (str(then), attempts)
    assert state(table, "still") is TaskState.ASSIGNED  # its code is still running
    if how == "crashed":
        assert kept.error == "boom"
    else:
        assert reason == f"agent 'a' was {'lost' if how == 'lost' else 'stopped'}"


def test_an_older_generation_gone_leaves_the_new_agent_in_place():
    table = make()
    agent(table, "a", generation=2)
    assert table.agent_gone("a", 1, "lost", None, frozenset(), 0.0, WALL) == []
    assert table.matcher.agent("a") is not None


def test_a_refused_or_undeliverable_assignment_goes_back_without_counting():
    table = make()
    slot = agent(table, "a")
    submit(table, "t")
    dispatch(table)
    assert table.refused("a", "t", 2, 0.0, WALL) is None  # not that attempt
    task, reason = table.refused("a", "t", 1, 0.0, WALL)
    assert (task.state, task.attempts, reason) == (TaskState.PENDING, 0, REFUSED)
    settle(table, task, 0.0, reason)
    dispatch(table)
    assignment = table.assignment(table.get("t"), slot)
    task, reason = table.undeliverable(slot, assignment, 0.0, WALL)
    assert (task.attempts, reason) == (0, ACTOR_GONE)
    assert table.matcher.agent("a") is None  # its actor is dead: nothing more for it


# ----------------------------------------------------------- resubmission


def test_an_active_task_id_conflicts_unless_forced_and_is_cancelled_first():
    table = make()
    first = submit(table, 5)
    spec = TaskSpec(task_id="5", payload={"v": 2})
    with pytest.raises(Conflict, match="force"):
        table.replaced(spec, force=False)
    assert table.replaced(spec, force=True) is first
    replacement = table.new_task(spec, 1.0, WALL)
    assert replacement.seq == first.seq + 1
    with pytest.raises(Conflict, match="still pending"):
        table.keep(replacement, 1.0)  # the old record must end first
    assert table.get(5) is first
    settle(table, table.finished(first, TaskState.CANCELLED, WALL, error="replaced"))
    assert settle(table, replacement, 1.0).types() == ["task.queued"]
    assert table.get(5).spec.payload == {"v": 2}
    assert [t.key for t in table.pending(10)] == ["5"]
    stats = table.stats()
    assert (stats["total_tasks_submitted"], stats["total_tasks_cancelled"]) == (2, 1)
    assert table.replaced(TaskSpec(task_id=6, payload={}), force=False) is None


def test_a_named_agent_must_be_ready_free_and_able():
    table = make()
    with pytest.raises(Conflict, match="not started"):
        table.named_slot("a", TaskSpec(task_id=1, payload={}))
    agent(table, "a", caps=("code",))
    with pytest.raises(Conflict, match="does not meet"):
        table.named_slot("a", TaskSpec(task_id=1, payload={}, capabilities=frozenset({"gpu"})))
    slot = table.named_slot("a", TaskSpec(task_id=1, payload={}))
    task = table.new_task(TaskSpec(task_id=1, payload={}), 0.0, WALL)
    applied = settle(table, table.leased(task, slot, {}, 0.0, WALL))
    assert applied.types() == ["task.queued", "task.assigned"]  # submitted leased
    with pytest.raises(Conflict, match="busy"):
        table.named_slot("a", TaskSpec(task_id=2, payload={}))


def test_a_submitter_is_capped_but_may_replace_its_own_queued_task():
    table = make(max_queued_tasks_per_submitter=2)
    first = submit(table, "a", submitter="client")
    submit(table, "b", submitter="client")
    with pytest.raises(TooManyRequests):
        table.refuse_if_queue_full("client", None)
    table.refuse_if_queue_full("client", first)
    table.refuse_if_queue_full("someone-else", None)


# ------------------------------------------------------------- transitions


def test_every_change_is_checked_and_an_illegal_one_changes_nothing():
    table = make()
    agent(table, "a")
    submit(table, "t")
    dispatch(table)
    done = table.finished(table.get("t"), TaskState.COMPLETED, WALL, result=1)
    settle(table, done)
    before = table.stats()
    with pytest.raises(Conflict, match="from completed to running"):
        table.keep(evolve(done, state=TaskState.RUNNING), 0.0)
    with pytest.raises(Conflict, match="cannot be submitted failed"):
        table.keep(evolve(done, seq=99, state=TaskState.FAILED), 0.0)
    assert table.get("t") is done
    assert table.stats() == before
    assert table.plan.events == []


# ---------------------------------------------------------------- recovery


def test_loading_gives_leases_a_fresh_deadline_and_due_retries_now():
    table = make(task_timeout_s=100.0)
    spec = TaskSpec(task_id="run", payload={}, timeout_s=20.0)
    stored = [
        Task(spec=spec, seq=3, state=TaskState.RUNNING, attempts=1, agent_id="a"),
        Task(spec=TaskSpec(task_id="wait", payload={}), seq=4, state=TaskState.FAILED, attempts=1),
        Task(spec=TaskSpec(task_id="q", payload={}), seq=5),
        Task(spec=TaskSpec(task_id="old", payload={}), seq=1, state=TaskState.COMPLETED),
    ]
    table.load(stored, 500.0, initial=True)
    assert table.get("run").lease_deadline == 520.0
    assert table.seq == 5
    assert table.stats()["total_tasks_submitted"] == 4
    assert table.stats()["total_tasks_completed"] == 1
    retried, _ = table.due(500.0, WALL)
    assert retried.key == "wait"
    assert [t.key for t in table.pending(10)] == ["q"]
    slot = AgentSlot("a", 1, None, "impl", frozenset(), 1, 60.0)
    plan = table.agent_ready(slot)  # its recovered lease is handed to it again
    assert [(m, a.key) for _, m, a in plan.tells] == [("assign", "run")]


def test_orphaned_leases_are_requeued_without_counting():
    table = make()
    spec = TaskSpec(task_id="t", payload={})
    table.load(
        [Task(spec=spec, seq=1, state=TaskState.ASSIGNED, attempts=1, agent_id="x")],
        0.0,
        initial=True,
    )
    assert table.orphans(["x"], 0.0, WALL) == []
    [(task, reason)] = table.orphans([], 0.0, WALL)
    assert (task.state, task.attempts, reason) == (TaskState.PENDING, 0, ORPHANED)


def test_a_rebuild_keeps_counts_hands_agents_what_is_stored_and_frees_lost_locks():
    table = make()
    agent(table, "a", slots=2)
    submit(table, "kept", resources=("r1",))
    submit(table, "lost", resources=("r2",))
    dispatch(table)
    stored = [table.get("kept")]  # the write of "lost" failed after it was kept
    plan = table.rebuild(stored, 50.0)
    assert plan.releases == ["lost#2"]
    [(slot, message, held)] = plan.tells
    assert (slot.agent_id, message, [a.key for a in held]) == ("a", "sync_assignments", ["kept"])
    assert plan.events == [("scheduler.rebuilt", {"tasks": 1})]
    with pytest.raises(NotFound):
        table.get("lost")
    assert table.stats()["total_tasks_submitted"] == 2  # totals are not rebuilt
    assert table.matcher.agent("a").load == 1


# ----------------------------------------------------------------- pruning


def test_finished_tasks_past_retention_are_forgotten_at_most_once_a_minute():
    table = make(task_retention_s=100.0)
    agent(table, "a", slots=3)
    for task_id in ("old", "new", "running"):
        submit(table, task_id)
    dispatch(table)
    settle(table, table.finished(table.get("old"), TaskState.COMPLETED, WALL))
    settle(table, table.finished(table.get("new"), TaskState.COMPLETED, WALL + 60))
    assert table.prune_due(0.0)
    assert not table.prune_due(PRUNE_INTERVAL_S - 1)
    assert table.prune_due(PRUNE_INTERVAL_S)
    assert table.prune(WALL + 150) == (1, WALL + 50)
    assert {t.key for t in table.list_tasks(None, None, 0)} == {"new", "running"}
    assert table.stats()["tasks_by_state"]["completed"] == 1


# ------------------------------------------------------------------ reading


def test_reads_and_counts():
    table = make()
    agent(table, "a")
    for n, priority in enumerate((3, 7, 0)):
        submit(table, n, priority=priority)
    dispatch(table)
    assert [t.spec.task_id for t in table.list_tasks(None, None, 2)] == [1, 2]
    assert [t.spec.task_id for t in table.list_tasks(TaskState.PENDING, None, 0)] == [0, 2]
    assert [t.spec.task_id for t in table.list_tasks(None, "a", 0)] == [1]
    stats = table.stats()
    assert stats["tasks_by_state"]["pending"] == 2
    assert stats["tasks_by_state"]["assigned"] == 1
    assert stats["pending_by_priority"] == {"3": 1, "0": 1}
    assert (stats["total_tasks_submitted"], stats["total_tasks_assigned"]) == (3, 1)


def test_a_proposal_is_admitted_before_it_is_stored_and_a_refused_one_changes_nothing():
    """The actor asks ``admit`` before it stores a proposal, so one ``keep`` would
    refuse (a lease whose agent left meanwhile) never reaches the store."""
    table = make()
    agent(table, "a")
    submit(table, "t")
    key, slot = table.matcher.next_match()
    leased = table.leased(table.tasks[key], slot, {}, 1.0, WALL)
    table.agent_gone("a", 1, "released", None, frozenset(), 1.0, WALL)  # it leaves meanwhile
    before = table.stats()
    with pytest.raises(Conflict, match="left before the lease was kept"):
        table.admit(leased)
    assert table.get("t").state is TaskState.PENDING and table.stats() == before

    agent(table, "b")
    table.enqueue(table.get("t"))
    key, slot = table.matcher.next_match()
    leased = table.leased(table.tasks[key], slot, {}, 2.0, WALL)
    admitted = table.admit(leased)
    plan = table.keep(leased, 2.0, None, admitted)  # kept as admitted, not checked twice
    assert [event_type for event_type, _ in plan.events] == ["task.assigned"]
    assert table.get("t").agent_id == "b"


# --------------------------------------------------------------------- progress


def test_a_progress_report_changes_the_record_not_its_state_and_events_are_thinned():
    table = make(progress_event_interval_s=5.0)
    agent(table, "a")
    submit(table, "long")
    dispatch(table)
    leased = table.get("long")
    noted = table.progressed("a", "long", "step 1", 10, WALL)
    assert (noted.state, noted.attempts, noted.progress.message) == (leased.state, 1, "step 1")
    assert table.get("long").progress is None  # a proposal changes nothing until kept
    applied = settle(table, noted, now=0.0)
    assert applied.types() == ["task.progress"] and applied.tells == []
    assert table.get("long").progress.percent == 10.0
    assert table.stats()["tasks_by_state"]["assigned"] == 1  # counted once, as before

    for n, now in ((2, 1.0), (3, 4.9)):  # within the interval: kept, no event
        assert (
            settle(table, table.progressed("a", "long", f"step {n}", None, WALL), now).events == []
        )
    assert table.get("long").progress.message == "step 3"
    applied = settle(table, table.progressed("a", "long", "step 4", 40, WALL), now=5.0)
    assert applied.events == [
        (
            "task.progress",
            {
                "task_id": "long",
                "agent_id": "a",
                "attempt": 1,
                "message": "step 4",
                "percent": 40.0,
                "reports_not_sent": 2,
            },
        )
    ]


def test_the_last_report_of_a_burst_reaches_the_feed_once_its_interval_runs_out():
    table = make(progress_event_interval_s=5.0)
    agent(table, "a")
    submit(table, "long")
    dispatch(table)
    settle(table, table.progressed("a", "long", "step 1", 10, WALL), now=0.0)
    for n, now in ((2, 1.0), (3, 2.0)):  # held back: within the interval
        settle(table, table.progressed("a", "long", f"step {n}", 10 * n, WALL), now)
    assert table.held_progress_events(4.9) == []  # not yet due
    [(event_type, data)] = table.held_progress_events(5.0)
    assert event_type == "task.progress"
    assert (data["message"], data["percent"], data["reports_not_sent"]) == ("step 3", 30.0, 1)
    assert table.held_progress_events(20.0) == []  # sent once
    # A report after that goes out at once, counting nothing held back.
    applied = settle(table, table.progressed("a", "long", "step 4", 40, WALL), now=10.0)
    assert [data.get("reports_not_sent") for _, data in applied.events] == [None]


def test_a_held_report_is_dropped_when_its_attempt_ends():
    table = make(progress_event_interval_s=5.0)
    agent(table, "a")
    submit(table, "long")
    dispatch(table)
    settle(table, table.progressed("a", "long", "step 1", 10, WALL), now=0.0)
    settle(table, table.progressed("a", "long", "step 2", 20, WALL), now=1.0)
    settle(table, table.finished(table.get("long"), TaskState.COMPLETED, WALL, result=1), now=2.0)
    assert table.held_progress_events(10.0) == []


def test_only_the_holder_may_report_progress():
    table = make()
    agent(table, "a")
    agent(table, "b")
    submit(table, "t")
    submit(table, "queued", agent_type="nobody")
    dispatch(table)
    holder = table.get("t").agent_id
    other = "b" if holder == "a" else "a"
    with pytest.raises(Forbidden, match="does not hold"):
        table.progressed(other, "t", "m", None, WALL)
    with pytest.raises(Forbidden, match="pending"):
        table.progressed(holder, "queued", "m", None, WALL)
    with pytest.raises(NotFound):
        table.progressed(holder, "nope", "m", None, WALL)
    with pytest.raises(Invalid) as bad:
        table.progressed(holder, "t", "m", 101, WALL)
    assert bad.value.field == "percent"
