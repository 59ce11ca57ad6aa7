"""The mechanisms that keep hot paths short (issue 8) keep their guarantees.

* The gate (``orch/runtime/gate.py``, tested in ``test_runtime_gate.py``): an
  AgentActor message runs in the caller's thread only when the actor is idle with an
  empty inbox, so an assignment sent before a heartbeat is in its answer.
* Registration is pipelined: a registration whose commit fails is refused and undone.
* An agent's ``LightProxy`` sends Pykka's own messages; ``TaskView`` answers ended tasks.
"""

from __future__ import annotations

import threading
from typing import Any

import pykka
import pytest

from orch import Agent, ManualClock, Orchestrator, Settings
from orch.actors.agent import AgentActor
from orch.actors.scheduler import Scheduler
from orch.actors.supervisor import Supervisor
from orch.errors import Conflict, StoreError, Timeout
from orch.model import TaskState
from orch.runtime import LightProxy, gate_safe_messages
from orch.store import SQLiteStore
from tests.conftest import wait_until
from tests.store.faults import SQLITE_BUSY_TIMEOUT_S, LockedElsewhere


def test_exactly_the_hot_messages_are_declared_gate_safe():
    assert gate_safe_messages(AgentActor) == {
        "heartbeat",
        "start_agent",
        "assign",
        "release",
        "sync_assignments",
        "task_done",
    }
    assert gate_safe_messages(Scheduler) == {
        "submit",
        "complete",
        "fail",
        "report_progress",  # a chatty agent's reports: same shape as complete, no asks
        "cancel",
        "get",
        "mark_running",
    }
    # A registration may block in the store, where only an ask's timeout gives a 503.
    assert gate_safe_messages(Supervisor) == frozenset()


def test_a_heartbeat_without_a_hop_delivers_an_assignment_made_just_before(orch):
    token = orch.register_agent("a1", "implementation")["token"]
    orch.start_agent("a1")
    orch.authenticate("a1", token)
    gate = orch.directory.get("a1").gate
    for n in range(50):
        # The Scheduler answers once the assignment is sent to the agent's actor;
        # the heartbeat right after must list it, hop or no hop.
        orch.assign_task({}, task_id=f"t{n}", agent_id="a1")
        answer = orch.heartbeat("a1")
        assert [a["task_id"] for a in answer["assignments"]] == [f"t{n}"]
        orch.complete_task("a1", f"t{n}", None)
    assert gate.direct_calls > 0  # the fast path was taken, not just the ask


def test_a_heartbeat_waits_behind_mail_the_actor_has_not_handled():
    orch = Orchestrator(Settings(heartbeat_interval_s=1.0), clock=ManualClock(), auto_tick=False)
    orch.start()
    try:
        orch.register_agent("a1", "implementation")
        orch.start_agent("a1")
        entry = orch.directory.get("a1")
        entry.gate.lock.acquire()  # the actor is "busy": mail queues behind it
        try:
            orch.assign_task({}, task_id="t", agent_id="a1")
            answer: dict[str, Any] = {}
            beat = threading.Thread(target=lambda: answer.update(orch.heartbeat("a1")))
            beat.start()
            beat.join(0.2)
            assert beat.is_alive()  # declined the direct path; asked, queued behind
        finally:
            entry.gate.lock.release()
        beat.join(5)
        assert [a["task_id"] for a in answer["assignments"]] == ["t"]
    finally:
        orch.stop()


def test_submit_and_complete_skip_the_schedulers_inbox_when_it_is_idle(orch):
    orch.register_agent("a1", "implementation")
    orch.start_agent("a1")
    gate = orch.actors.scheduler_gate
    inbox = orch.actors.scheduler.actor_ref.actor_inbox

    def when_idle() -> int:  # the agent tells the Scheduler things too; let it finish
        wait_until(lambda: not inbox.unfinished_tasks, message="the Scheduler is idle")
        return gate.direct_calls

    before = when_idle()
    assert orch.assign_task({}, task_id="t", agent_id="a1")["status"] == "assigned"
    assert when_idle() == before + 1  # no thread hand-off
    assert orch.complete_task("a1", "t", {"ok": True}) == {"task_id": "t", "status": "completed"}
    assert when_idle() == before + 2
    assert orch.task("t")["result"] == {"ok": True}
    assert gate.direct_calls == before + 3
    with pytest.raises(Conflict):  # a refusal raised in this thread is the ask's refusal
        orch.complete_task("a1", "t")


def test_a_busy_scheduler_is_asked_and_answers_in_turn(orch):
    orch.assign_task({}, task_id="queued")
    gate = orch.actors.scheduler_gate
    before = gate.direct_calls
    answer: dict[str, Any] = {}
    gate.lock.acquire()  # the Scheduler is handling a message
    try:
        reader = threading.Thread(target=lambda: answer.update(orch.task("queued")))
        reader.start()
        reader.join(0.2)
        assert reader.is_alive()  # it could not take the gate, so it asked and waits
    finally:
        gate.lock.release()
    reader.join(5)
    assert answer["status"] == "pending" and gate.direct_calls == before


def test_a_delivering_heartbeat_marks_the_task_running_with_or_without_a_hand_off(orch):
    orch.register_agent("a1", "implementation")
    orch.start_agent("a1")
    gate = orch.actors.scheduler_gate
    inbox = orch.actors.scheduler.actor_ref.actor_inbox
    orch.assign_task({}, task_id="direct", agent_id="a1")
    wait_until(lambda: not inbox.unfinished_tasks, message="the Scheduler is idle")
    before = gate.direct_calls
    orch.heartbeat("a1")
    assert gate.direct_calls == before + 1  # marked in the heartbeat's own thread
    assert orch.actors.task_view.get("direct").state is TaskState.RUNNING
    orch.complete_task("a1", "direct")
    orch.assign_task({}, task_id="queued", agent_id="a1")
    with gate.lock:  # the Scheduler is busy: the mark waits in its inbox
        orch.heartbeat("a1")
        assert orch.actors.task_view.get("queued").state is TaskState.ASSIGNED
    wait_until(
        lambda: orch.actors.task_view.get("queued").state is TaskState.RUNNING, message="marked"
    )


def test_a_direct_call_whose_own_ask_times_out_is_a_timeout_error(monkeypatch):
    from orch.actors.lock_broker import LockBroker

    stuck = threading.Event()
    monkeypatch.setattr(LockBroker, "try_acquire_for_task", lambda *args: stuck.wait(5))
    orch = Orchestrator(Settings(ask_timeout_s=0.2), clock=ManualClock(), auto_tick=False)
    orch.start()
    try:
        orch.register_agent("a1", "implementation")
        orch.start_agent("a1")
        inbox = orch.actors.scheduler.actor_ref.actor_inbox
        wait_until(lambda: not inbox.unfinished_tasks, message="the Scheduler is idle")
        with pytest.raises(Timeout, match=r"0\.2s"):  # not Pykka's own exception: a 503
            orch.assign_task({}, task_id="t", agent_id="a1", resources=["repo"])
        assert orch.actors.scheduler_gate.direct_calls > 0 and orch.tasks() == []
    finally:
        stuck.set()
        orch.stop()


def test_agent_proxy_sends_pykka_messages():
    orch = Orchestrator(Settings(), auto_tick=False).start()
    try:
        orch.register_agent("a1", "implementation")
        proxy = orch.directory.get("a1").actor
        assert isinstance(proxy, LightProxy)
        assert proxy.describe().get(timeout=5).agent_id == "a1"
        proxy.check_liveness.defer()
        with pytest.raises(AttributeError):
            proxy.no_such_message  # noqa: B018
        with pytest.raises(AttributeError):
            proxy._record  # noqa: B018
    finally:
        orch.stop()


def test_a_registration_whose_commit_fails_is_refused_and_undone(tmp_path):
    store = SQLiteStore(str(tmp_path / "orch.db"), busy_timeout_s=SQLITE_BUSY_TIMEOUT_S)
    orch = Orchestrator(Settings(), store=store, clock=ManualClock(), auto_tick=False).start()
    try:
        with LockedElsewhere(store.path), pytest.raises(StoreError, match="database is locked"):
            orch.register_agent("a1", "implementation")
        wait_until(lambda: orch.directory.get("a1") is None, message="registration undone")
        assert store.load_agents() == [] and store.load_credentials() == {}
        # The store works again: the id is free and the agent is kept.
        orch.register_agent("a1", "implementation")
        assert orch.start_agent("a1")["status"] == "started"
        assert [r.agent_id for r in store.load_agents()] == ["a1"]
    finally:
        orch.stop()


def test_an_agents_first_write_waits_for_its_registration(tmp_path):
    store = SQLiteStore(str(tmp_path / "orch.db"))
    orch = Orchestrator(Settings(), store=store, clock=ManualClock(), auto_tick=False).start()
    try:
        orch.register_agent("a1", "implementation")
        orch.start_agent("a1")
        assert store.load_credentials().keys() == {"a1"}
        assert [str(r.state) for r in store.load_agents()] == ["idle"]
    finally:
        orch.stop()


class _Echo(Agent):
    agent_type = "implementation"

    def handle(self, task: Any) -> Any:
        return task.payload


def test_in_process_work_is_leased_running_and_results_need_no_ask():
    with Orchestrator(Settings()) as orch:
        orch.attach(_Echo("w1"))
        handles = [orch.submit({"n": n}) for n in range(20)]
        assert [h.result(timeout=10) for h in handles] == [{"n": n} for n in range(20)]
        # Handed to the worker at once, so never left waiting for a delivery report.
        assert {t["status"] for t in orch.tasks()} == {"completed"}
        assert orch.stats()["tasks"]["total_tasks_assigned"] == 20
        # Ended tasks are answered from the published view, without a Scheduler ask.
        asked: list[str] = []
        scheduler = orch.actors.scheduler
        orch.actors.scheduler = _Spy(scheduler, asked)
        try:
            assert handles[0].result(timeout=1) == {"n": 0}
        finally:
            orch.actors.scheduler = scheduler
        assert asked == []


class _Spy:
    def __init__(self, inner: Any, calls: list[str]) -> None:
        self._inner = inner
        self._calls = calls

    def __getattr__(self, name: str) -> Any:
        self._calls.append(name)
        return getattr(self._inner, name)


def test_a_gate_that_raises_crashes_the_agent_like_a_message_would():
    orch = Orchestrator(Settings(restart_backoff_initial_s=0.01), auto_tick=True).start()
    try:
        orch.attach(_Echo("w1"))
        entry = orch.directory.get("w1")
        entry.gate.tell(entry.actor, "assign", "not an assignment")  # raises inside
        wait_until(lambda: orch.agent("w1")["restarts"] == 1, message="restarted")
    finally:
        orch.stop()


def test_pykka_messages_still_queue_when_the_gate_is_busy():
    orch = Orchestrator(Settings(), auto_tick=False).start()
    try:
        orch.register_agent("a1", "implementation")
        entry = orch.directory.get("a1")
        with entry.gate.lock:
            future = entry.actor.describe()
            with pytest.raises(pykka.Timeout):
                future.get(timeout=0.1)
        assert future.get(timeout=5).agent_id == "a1"
    finally:
        orch.stop()


def test_directory_counts_match_a_recount(orch):
    from collections import Counter

    def recount() -> tuple[dict[Any, int], int, int]:
        records = [e.record for e in orch.directory.entries()]
        by_state = Counter(r.state for r in records)
        return dict(by_state), sum(r.restarts for r in records), len(records)

    def counted() -> tuple[dict[Any, int], int, int]:
        by_state, restarts, total = orch.directory.counts()
        return {s: n for s, n in by_state.items() if n}, restarts, total

    for n in range(6):
        orch.register_agent(f"a{n}", "implementation")
    for n in range(4):
        orch.start_agent(f"a{n}")
    orch.assign_task({}, task_id="t", agent_id="a0")  # a0 busy
    orch.stop_agent("a1", drain=False)
    orch.deregister_agent("a2")
    wait_until(lambda: counted() == recount(), message="counts follow every change")
    assert counted()[2] == 5
    assert orch.stats()["busy_agents"] == 1 and orch.stats()["idle_agents"] == 1
