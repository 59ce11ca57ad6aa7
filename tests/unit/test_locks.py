"""Locks through the facade: many threads on one exclusive lock, leases, holders' fate."""

import threading
import time

import pytest

from orch import Conflict, NotFound
from tests.conftest import wait_until


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
