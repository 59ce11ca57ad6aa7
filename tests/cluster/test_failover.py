"""Failover between real server processes: a leader killed, a leader frozen and woken.

A standby that takes over rebuilds from the store as after kill -9: every write a
client saw acknowledged is there, fencing tokens keep growing, agents' tokens keep
working, and an answer kept for an Idempotency-Key is replayed by the new leader. A
frozen leader that wakes acknowledges nothing the cluster does not have (its commits
are fenced) and steps down. Times are measured by the bench, not asserted here.
"""

from __future__ import annotations

import os
import signal
import threading
import uuid

import requests

from orch.client import OrchestratorClient
from orch.errors import OrchestratorError
from tests.cluster.conftest import health, leader_of
from tests.conftest import wait_until

WRITERS = 4


def test_sigkill_of_the_leader_under_concurrent_writes_loses_nothing_acknowledged(cluster):
    nodes = [cluster() for _ in range(3)]
    leader = leader_of(nodes)
    urls = [node.url for node in nodes]
    admin = OrchestratorClient(urls, failover_wait_s=30)
    agent = admin.register_agent("a1", "worker")
    before = admin.acquire_lock("a1", "disk", token=agent.token, ttl_s=60)

    acknowledged: list[str] = []
    refused: list[str] = []
    stop = threading.Event()

    def write(worker: int) -> None:
        client = OrchestratorClient(urls, failover_wait_s=30)
        n = 0
        while not stop.is_set():
            task_id = f"w{worker}-{n}"
            n += 1
            try:
                client.assign_task({"n": n}, task_id=task_id)
            except OrchestratorError as exc:
                refused.append(f"{task_id}: {exc}")  # not acknowledged: nothing promised
            else:
                acknowledged.append(task_id)

    writers = [threading.Thread(target=write, args=(w,)) for w in range(WRITERS)]
    for thread in writers:
        thread.start()
    try:
        wait_until(lambda: len(acknowledged) >= 20, timeout_s=30, message="writes before")
        leader.process.kill()
        at_kill = len(acknowledged)
        survivors = [node for node in nodes if node is not leader]
        new_leader = leader_of(survivors, timeout_s=30)
        wait_until(lambda: len(acknowledged) >= at_kill + 20, timeout_s=30, message="writes after")
    finally:
        stop.set()
        for thread in writers:
            thread.join(60)
    assert new_leader is not leader

    stored = {
        task["task_id"]
        for task in requests.get(
            f"{new_leader.url}/tasks", params={"limit": 10_000}, timeout=10
        ).json()["tasks"]
    }
    assert [task_id for task_id in acknowledged if task_id not in stored] == []

    # The agent's token still works, and the lock's fencing token keeps growing.
    admin.heartbeat("a1", token=agent.token)
    admin.release_lock("a1", "disk", before.fencing_token, token=agent.token)
    after = admin.acquire_lock("a1", "disk", token=agent.token, ttl_s=60)
    assert after.fencing_token > before.fencing_token


def test_a_frozen_leader_is_replaced_and_on_waking_acknowledges_nothing(cluster):
    first, second = cluster(), cluster()
    leader = leader_of([first, second])
    standby = second if leader is first else first
    requests.post(
        f"{leader.url}/tasks/assign", json={"task_id": "before", "payload": {}}, timeout=10
    ).raise_for_status()

    os.kill(leader.process.pid, signal.SIGSTOP)
    late: list[requests.Response | Exception] = []

    def write_to_the_frozen_one() -> None:
        try:
            late.append(
                requests.post(
                    f"{leader.url}/tasks/assign",
                    json={"task_id": "sent-while-frozen", "payload": {}},
                    timeout=60,
                )
            )
        except requests.RequestException as exc:
            late.append(exc)

    sender = threading.Thread(target=write_to_the_frozen_one)
    sender.start()
    try:
        wait_until(
            lambda: health(standby).get("role") == "leader",
            timeout_s=30,
            message="the standby takes over from the frozen leader",
        )
        taken = requests.post(
            f"{standby.url}/tasks/assign", json={"task_id": "after", "payload": {}}, timeout=10
        )
        assert taken.status_code == 202, taken.text
    finally:
        os.kill(leader.process.pid, signal.SIGCONT)
        sender.join(90)

    # It wakes, finds the lease taken over and steps down; it forwards from then on.
    wait_until(
        lambda: health(leader) == {"status": "healthy", "role": "standby", "leader": standby.url},
        timeout_s=30,
        message="the woken leader steps down",
    )
    stored = {
        task["task_id"] for task in requests.get(f"{standby.url}/tasks", timeout=10).json()["tasks"]
    }
    assert {"before", "after"} <= stored
    [answer] = late
    if isinstance(answer, requests.Response) and answer.status_code < 300:
        # Answered only if the cluster has it (forwarded after stepping down).
        assert "sent-while-frozen" in stored
    via_old = requests.post(
        f"{leader.url}/tasks/assign", json={"task_id": "via-old", "payload": {}}, timeout=10
    )
    assert via_old.status_code == 202, via_old.text
    assert requests.get(f"{standby.url}/tasks/via-old", timeout=5).status_code == 200


def test_an_idempotent_retry_after_failover_is_answered_as_the_first_time(cluster):
    first, second = cluster(), cluster()
    leader = leader_of([first, second])
    standby = second if leader is first else first
    key = {"Idempotency-Key": str(uuid.uuid4())}
    body = {"task_id": "once", "payload": {"n": 1}}
    answer = requests.post(f"{leader.url}/tasks/assign", json=body, headers=key, timeout=10)
    assert answer.status_code == 202, answer.text

    leader.process.kill()
    leader_of([standby], timeout_s=30)
    retried = requests.post(f"{standby.url}/tasks/assign", json=body, headers=key, timeout=10)
    assert retried.status_code == 202, retried.text
    assert retried.json() == answer.json()
    assert retried.headers.get("Idempotent-Replayed") == "true"
    tasks = requests.get(f"{standby.url}/tasks", timeout=10).json()["tasks"]
    assert [task["task_id"] for task in tasks] == ["once"]
