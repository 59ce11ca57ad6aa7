"""orch/actors/lock_broker.py: the LockBroker on its own (FIFO without barging, waits,
task locks, store failures, restart), then through the facade (many threads on one
exclusive lock, leases, the fate of a holder's locks)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pykka
import pytest

from orch import Conflict, ManualClock
from orch.actors.lock_broker import LockBroker
from orch.errors import NotFound, StoreError
from orch.events import Events
from orch.model import LockMode
from orch.store import MemoryStore
from tests.conftest import wait_until

X, S = LockMode.EXCLUSIVE, LockMode.SHARED


class FakeScheduler:
    """Stands in for the Scheduler proxy: records what the broker tells it."""

    def __init__(self) -> None:
        self.freed: list[list[str]] = []

        class _Method:
            def defer(inner, resources: list[str]) -> None:
                self.freed.append(resources)

        self.resources_freed = _Method()


@pytest.fixture
def broker(store: MemoryStore, clock: ManualClock) -> Iterator[Any]:
    ref = LockBroker.start(store, clock, Events(clock), max_ttl_s=3600)
    try:
        yield ref.proxy()
    finally:
        ref.stop()


def acquire(broker: Any, agent: str, requests, ttl_s: float = 30, wait_s: float = 0):
    reply: pykka.ThreadingFuture[Any] = pykka.ThreadingFuture()
    broker.acquire(agent, requests, ttl_s, wait_s, reply).get(timeout=5)
    return reply


def granted(reply) -> list[int]:
    return [g.fencing_token for g in reply.get(timeout=5)]


def pending(reply) -> bool:
    try:
        reply.get(timeout=0)
    except pykka.Timeout:
        return True
    return False


def test_waiters_are_served_fifo_and_later_requests_do_not_barge(broker):
    first = acquire(broker, "a", [("r", X)])
    (token,) = granted(first)
    writer = acquire(broker, "w", [("r", X)], wait_s=10)
    # A shared request would fit nothing now, and must not jump the writer later either.
    reader = acquire(broker, "s", [("r", S)], wait_s=10)
    assert pending(writer) and pending(reader)
    broker.release("a", "r", token).get(timeout=5)
    (writer_token,) = granted(writer)
    assert writer_token == token + 1
    assert pending(reader)
    broker.release("w", "r", writer_token).get(timeout=5)
    assert granted(reader) == [token + 2]


def test_a_compatible_newcomer_does_not_jump_the_queue(broker):
    reader = acquire(broker, "a", [("r", S)])
    granted(reader)
    writer = acquire(broker, "w", [("r", X)], wait_s=10)
    # Shared would fit the shared holder, but the writer is first in line.
    with pytest.raises(Conflict, match="waiting"):
        acquire(broker, "b", [("r", S)]).get(timeout=5)
    assert pending(writer)


def test_a_wait_that_runs_out_is_refused_naming_the_holder(broker, clock):
    granted(acquire(broker, "a", [("r", X)]))
    waiting = acquire(broker, "b", [("r", X)], wait_s=2)
    clock.advance(2.5)
    broker.tick().get(timeout=5)
    with pytest.raises(Conflict) as info:
        waiting.get(timeout=5)
    assert [h["agent_id"] for h in info.value.details["holders"]] == ["a"]
    assert broker.stats().get(timeout=5)["waiters"] == 0


def test_multi_resource_waiter_gets_everything_at_once(broker):
    (t1,) = granted(acquire(broker, "a", [("r1", X)]))
    (t2,) = granted(acquire(broker, "b", [("r2", X)]))
    both = acquire(broker, "c", [("r1", X), ("r2", X)], wait_s=10)
    broker.release("a", "r1", t1).get(timeout=5)
    assert pending(both)
    assert not broker.holders_of("r1").get(timeout=5)  # nothing half-granted
    broker.release("b", "r2", t2).get(timeout=5)
    assert [g.resource for g in both.get(timeout=5)] == ["r1", "r2"]


def test_reacquire_refreshes_the_lease_and_keeps_the_token(broker, clock):
    (token,) = granted(acquire(broker, "a", [("r", X)], ttl_s=5))
    clock.advance(4)
    (again,) = granted(acquire(broker, "a", [("r", X)], ttl_s=5))
    assert again == token
    clock.advance(4)
    assert broker.tick().get(timeout=5) == 0
    assert [g.agent_id for g in broker.holders_of("r").get(timeout=5)] == ["a"]


def test_release_of_a_lock_never_held_is_not_found(broker):
    with pytest.raises(NotFound, match="holds no lock"):
        broker.release("a", "r", 1).get(timeout=5)


def test_releasing_an_agent_frees_its_grants_and_ends_its_waits(broker):
    granted(acquire(broker, "a", [("r1", X), ("r2", S)]))
    granted(acquire(broker, "b", [("r3", X)]))
    waiting = acquire(broker, "a", [("r3", X)], wait_s=10)
    assert broker.release_agent("a").get(timeout=5) == 2
    with pytest.raises(Conflict, match="left"):
        waiting.get(timeout=5)
    assert {row["resource"] for row in broker.locks().get(timeout=5)} == {"r3"}


def test_task_locks_tell_the_scheduler_when_resources_come_free(broker):
    scheduler = FakeScheduler()
    broker.set_scheduler(scheduler).get(timeout=5)
    (token,) = granted(acquire(broker, "a", [("repo", X)]))
    assert broker.try_acquire_for_task("b", "t1#1", ["repo"], 60).get(timeout=5) is None
    broker.release("a", "repo", token).get(timeout=5)
    assert scheduler.freed == [["repo"]]
    tokens = broker.try_acquire_for_task("b", "t1#1", ["repo"], 60).get(timeout=5)
    assert tokens == {"repo": token + 1}
    assert broker.release_task("t1#1").get(timeout=5) == 1
    assert broker.locks().get(timeout=5) == []


def test_a_failed_store_write_grants_nothing(broker, store):
    store.fail_writes = "disk full"
    with pytest.raises(StoreError):
        acquire(broker, "a", [("r1", X), ("r2", X)]).get(timeout=5)
    store.fail_writes = None
    assert broker.locks().get(timeout=5) == []
    assert store.load_grants() == []


def test_fencing_tokens_and_grants_survive_a_restart(store, clock):
    first = LockBroker.start(store, clock, Events(clock), max_ttl_s=3600).proxy()
    reply: pykka.ThreadingFuture[Any] = pykka.ThreadingFuture()
    first.acquire("a", [("r", X)], 30, 0, reply).get(timeout=5)
    (token,) = granted(reply)
    first.actor_ref.stop()
    second = LockBroker.start(store, clock, Events(clock), max_ttl_s=3600).proxy()
    try:
        with pytest.raises(Conflict):
            acquire(second, "b", [("r", X)]).get(timeout=5)
        second.release("a", "r", token).get(timeout=5)
        assert granted(acquire(second, "b", [("r", X)])) == [token + 1]
    finally:
        second.actor_ref.stop()


# ------------------------------------------------------------ through the facade


def test_hammering_one_exclusive_lock_never_overlaps_and_tokens_increase(live_orch):
    orch = live_orch
    agents = [f"w{i}" for i in range(12)]
    for agent_id in agents:
        orch.register_agent(agent_id, "implementation")
    guard = threading.Lock()
    holders = 0
    max_holders = 0
    tokens: list[int] = []
    errors: list[BaseException] = []

    def work(agent_id: str) -> None:
        nonlocal holders, max_holders
        try:
            for _ in range(40):
                grant = orch.acquire_lock(agent_id, "repo:june", ttl_s=30, wait_s=20)
                with guard:
                    holders += 1
                    max_holders = max(max_holders, holders)
                    tokens.append(grant["fencing_token"])
                # Hold it a moment (releasing the GIL), so a grant that overlaps this
                # one would be counted; without it the window is a few bytecodes wide.
                time.sleep(0.001)
                with guard:
                    holders -= 1
                orch.release_lock(agent_id, "repo:june", grant["fencing_token"])
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(a,)) for a in agents]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert not errors
    assert max_holders == 1
    assert len(tokens) == 12 * 40
    assert tokens == sorted(tokens) and len(set(tokens)) == len(tokens)


def test_refusal_names_the_holder_and_shared_locks_coexist(orch):
    for agent_id in ("a", "b", "c"):
        orch.register_agent(agent_id, "implementation")
    first = orch.acquire_lock("a", "db", mode="shared")
    second = orch.acquire_lock("b", "db", mode="shared")
    assert second["fencing_token"] > first["fencing_token"]
    with pytest.raises(Conflict) as info:
        orch.acquire_lock("c", "db")
    assert {h["agent_id"] for h in info.value.details["holders"]} == {"a", "b"}


def test_lease_expiry_frees_the_lock(orch, clock):
    orch.register_agent("a", "implementation")
    orch.register_agent("b", "implementation")
    grant = orch.acquire_lock("a", "deploy", ttl_s=5)
    assert grant["expires_at"] == pytest.approx(clock.time() + 5)
    clock.advance(5.1)
    orch.tick()
    later = orch.acquire_lock("b", "deploy")
    assert later["fencing_token"] > grant["fencing_token"]
    with pytest.raises((Conflict, NotFound)):
        orch.renew_lock("a", "deploy", grant["fencing_token"])


def test_renew_and_release_need_the_fencing_token(orch, clock):
    orch.register_agent("a", "implementation")
    grant = orch.acquire_lock("a", "deploy", ttl_s=5)
    with pytest.raises(Conflict, match="fencing"):
        orch.renew_lock("a", "deploy", grant["fencing_token"] + 1)
    renewed = orch.renew_lock("a", "deploy", grant["fencing_token"], ttl_s=60)
    assert renewed["expires_at"] > grant["expires_at"]
    clock.advance(30)
    orch.tick()
    with pytest.raises(Conflict):
        orch.release_lock("a", "deploy", grant["fencing_token"] + 1)
    orch.release_lock("a", "deploy", grant["fencing_token"])
    assert all(not r["holders"] for r in orch.locks())


def test_multi_resource_acquire_is_all_or_nothing(orch):
    orch.register_agent("a", "implementation")
    orch.register_agent("b", "implementation")
    orch.acquire_lock("a", "r2")
    with pytest.raises(Conflict):
        orch.acquire_locks("b", [("r1", "exclusive"), ("r2", "exclusive")])
    held = {r["resource"] for r in orch.locks() if r["holders"]}
    assert held == {"r2"}
    grants = orch.acquire_locks("b", [("r1", "exclusive"), ("r3", "shared")])
    assert [g["resource"] for g in grants] == ["r1", "r3"]


def test_stopping_an_agent_releases_its_locks(orch):
    orch.register_agent("a", "implementation")
    orch.start_agent("a")
    orch.acquire_lock("a", "deploy")
    orch.stop_agent("a")
    wait_until(lambda: all(not r["holders"] for r in orch.locks()))
