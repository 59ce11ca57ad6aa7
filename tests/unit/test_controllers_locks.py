"""orch/controllers/locks.py: leases, their checks, and lock owners named as submitted."""

from __future__ import annotations

import pytest

from orch import Conflict, Invalid, NotFound, Orchestrator
from orch.controllers import LocksController


@pytest.fixture
def locks(orch: Orchestrator) -> LocksController:
    for agent_id in ("a1", "a2"):
        orch.register_agent(agent_id, "implementation")
        orch.start_agent(agent_id)
    return orch.controllers.locks


def test_acquire_renew_release(locks, clock):
    grant = locks.acquire_lock("a1", "db", ttl_s=10)
    assert (grant["resource"], grant["mode"], grant["agent_id"]) == ("db", "exclusive", "a1")
    clock.advance(5)
    renewed = locks.renew_lock("a1", "db", grant["fencing_token"], ttl_s=10)
    assert renewed["expires_at"] > grant["expires_at"]
    assert locks.release_lock("a1", "db", grant["fencing_token"]) == {
        "resource": "db",
        "status": "released",
    }
    assert locks.locks() == []


def test_a_refusal_is_signalled_and_names_the_holder(orch, locks):
    signals: list[str] = []
    orch.events_log.subscribe_signals(lambda kind, data: signals.append(kind))
    locks.acquire_lock("a1", "db")
    with pytest.raises(Conflict, match="a1"):
        locks.acquire_lock("a2", "db")
    assert signals == ["lock.waited", "lock.refused"]


def test_bad_leases_are_refused_before_the_broker_is_asked(orch, locks, store):
    writes = store.writes
    for call, field in [
        (lambda: locks.acquire_lock("a1", "db", wait_s=-1), "wait_s"),
        (lambda: locks.acquire_lock("a1", "db", wait_s=True), "wait_s"),
        (lambda: locks.acquire_lock("a1", "db", ttl_s=orch.settings.lock_max_ttl_s + 1), "ttl_s"),
        (lambda: locks.renew_lock("a1", "db", 0), "fencing_token"),
        (lambda: locks.release_lock("a1", "bad name", 1), "resource"),
        (lambda: locks.acquire_locks("a1", [("db", "exclusive")] * 2), "resources"),
    ]:
        with pytest.raises(Invalid) as info:
            call()
        assert info.value.field == field
    with pytest.raises(NotFound):
        locks.acquire_lock("ghost", "db")
    assert store.writes == writes


def test_a_lock_taken_for_a_task_names_the_task_as_submitted(orch, locks):
    orch.assign_task({}, task_id=42, agent_id="a1", resources=["repo"])
    [lock] = locks.locks()
    assert lock["resource"] == "repo"
    assert [h["task_id"] for h in lock["holders"]] == [42]  # the id, not the key "42"
