"""``HeldLock`` (orch/client/leases.py) against the real server: renewal, loss, release."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest

from orch.client import LockLost, OrchestratorClient
from tests.conftest import wait_until
from tests.sdk.conftest import Line, agent_client


def test_a_lock_is_renewed_past_its_ttl_and_released_on_exit(
    url: str, admin: OrchestratorClient, name: Callable
):
    resource = name("renewed")
    with agent_client(url, name("holder")) as agent:
        started = time.monotonic()
        with agent.lock(resource, ttl_s=0.6) as held:
            wait_until(lambda: held.renewals >= 4, message="not renewed")
            assert time.monotonic() - started > 0.6  # held for longer than one lease
            holders = next(lk for lk in admin.locks() if lk["resource"] == resource)["holders"]
            assert [h["fencing_token"] for h in holders] == [held.fencing_token]
            assert held.held
        assert not held.held
        assert [lk for lk in admin.locks() if lk["resource"] == resource] == []
    lock_events = [e["type"] for e in admin.events(0)["events"] if e.get("resource") == resource]
    assert "lock.expired" not in lock_events
    assert lock_events[0] == "lock.granted" and lock_events[-1] == "lock.released"


def test_a_lock_lost_mid_hold_raises_in_the_holders_thread(
    url: str, admin: OrchestratorClient, name: Callable
):
    agent_id, capability = name("loser"), name("cap")
    admin.assign_task({"n": 1}, capabilities=[capability])
    outcome: dict[str, Any] = {}
    lost = threading.Event()
    check_now = threading.Event()

    with agent_client(url, agent_id, capability) as agent:
        task = agent.next_task(timeout=5)
        assert task is not None

        def holder() -> None:
            with agent.lock(name("contested"), ttl_s=0.6) as held:
                outcome["held"] = held
                lost.set()
                check_now.wait(10)
                try:
                    agent.complete(task, result="done without the lock")
                except LockLost as exc:
                    outcome["raised"] = exc
            outcome["exited"] = True  # the with block did not raise it a second time

        thread = threading.Thread(target=holder)
        thread.start()
        lost.wait(5)
        admin.stop_agent(agent_id, drain=False)  # the orchestrator frees the agent's locks
        wait_until(lambda: outcome["held"].lost is not None, message="loss not noticed")
        # Other threads are not the holder: their SDK calls are unaffected.
        assert agent.next_task(timeout=0) is None
        check_now.set()
        thread.join(5)

    assert isinstance(outcome["raised"], LockLost)
    assert "renewal was refused" in outcome["raised"].message
    assert outcome["exited"] is True


def test_a_lock_lost_while_renewals_cannot_get_through_raises_at_the_end_of_the_block(
    server_factory: Callable, line_to: Callable[[str], Line], name: Callable
):
    server = server_factory(ORCH_HEARTBEAT_INTERVAL_S="5")
    line = line_to(server.url)
    with agent_client(line.url, name("cut-off")) as agent:
        with pytest.raises(LockLost) as raised, agent.lock(name("leased"), ttl_s=0.5) as held:
            line.cut()
            wait_until(lambda: held.lost is not None, message="lease end not noticed")
        assert "lease ran out" in raised.value.message
        line.heal()
