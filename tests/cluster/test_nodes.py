"""Election and forwarding between real server processes on one PostgreSQL database.

Any node answers any request: the leader itself, a standby by forwarding it whole
(method, path, query, headers with Authorization, body; status, headers and body
back), long polls and lock waits included. A standby answers its own ``/health``,
``/health/ready`` and ``/metrics``.
"""

from __future__ import annotations

import threading

import pytest
import requests

from orch.client import OrchestratorClient
from orch.errors import Conflict, NotFound, Unauthorized
from tests.cluster.conftest import health, leader_of

ADMIN = "cluster-admin-token-0123456789"


def test_three_nodes_elect_one_leader_and_agree_on_it(cluster):
    nodes = [cluster() for _ in range(3)]
    leader = leader_of(nodes)
    standbys = [node for node in nodes if node is not leader]
    assert requests.get(f"{leader.url}/health/ready", timeout=5).status_code == 200
    for node in standbys:
        assert health(node) == {"status": "healthy", "role": "standby", "leader": leader.url}
        ready = requests.get(f"{node.url}/health/ready", timeout=5)
        assert ready.status_code == 503 and ready.json()["role"] == "standby"
    metrics = {node.url: requests.get(f"{node.url}/metrics", timeout=5).text for node in nodes}
    assert "orchestrator_leader 1.0" in metrics[leader.url]
    assert "orchestrator_pending_tasks" in metrics[leader.url]  # the term's own metrics too
    for node in standbys:
        assert "orchestrator_leader 0.0" in metrics[node.url]


def test_two_nodes_one_leads_and_the_standby_forwards(cluster):
    first, second = cluster(), cluster()
    leader = leader_of([first, second])
    standby = second if leader is first else first
    answer = requests.post(
        f"{standby.url}/tasks/assign",
        params={"unused": "kept"},
        json={"task_id": "via-standby", "payload": {"n": 1}},
        timeout=10,
    )
    assert answer.status_code == 202, answer.text
    assert answer.json() == {"task_id": "via-standby", "status": "queued", "agent_id": None}
    assert "Via" not in answer.headers
    seen = requests.get(f"{leader.url}/tasks/via-standby", timeout=5).json()
    assert seen["payload"] == {"n": 1}
    metrics = requests.get(f"{standby.url}/metrics", timeout=5).text
    assert 'orchestrator_forwarded_requests_total{outcome="2xx"} 1.0' in metrics
    # A path that is not ASCII reaches the leader as the client sent it.
    odd = requests.get(f"{standby.url}/tasks/t%C3%BCr%20x", timeout=5)
    direct = requests.get(f"{leader.url}/tasks/t%C3%BCr%20x", timeout=5)
    assert (odd.status_code, odd.json()) == (direct.status_code, direct.json())
    assert "'tür x'" in odd.json()["detail"]


def test_every_kind_of_request_is_forwarded(cluster):
    first, second = cluster(ORCH_ADMIN_TOKEN=ADMIN), cluster(ORCH_ADMIN_TOKEN=ADMIN)
    leader = leader_of([first, second])
    standby = second if leader is first else first
    client = OrchestratorClient(standby.url, token=ADMIN, failover_wait_s=5)

    # Authorization travels with the request: a wrong token is refused by the leader.
    with pytest.raises(Unauthorized):
        OrchestratorClient(standby.url, token="wrong-" + ADMIN).tasks()
    refused = requests.get(f"{standby.url}/tasks", timeout=5)
    assert refused.status_code == 401
    assert refused.headers["Content-Type"].startswith("application/problem+json")

    # Problem answers come back as the leader gave them.
    with pytest.raises(NotFound):
        client.task("nothing-here")
    one = client.register_agent("a1", "worker")
    two = client.register_agent("a2", "worker")
    with pytest.raises(Conflict):
        client.register_agent("a1", "worker")

    # A lock wait: a2 waits at the leader, through the standby, until a1 releases.
    held = client.acquire_lock("a1", "disk", token=one.token, ttl_s=30)
    got: list = []
    waiter = threading.Thread(
        target=lambda: got.append(
            client.acquire_lock("a2", "disk", token=two.token, ttl_s=30, wait_s=20)
        )
    )
    waiter.start()
    try:
        pending = OrchestratorClient(leader.url, token=ADMIN)
        assert pending.events(wait_s=0)["events"]  # the leader's feed is there
        client.release_lock("a1", "disk", held.fencing_token, token=one.token)
    finally:
        waiter.join(30)
    assert got and got[0].agent_id == "a2"
    assert got[0].fencing_token > held.fencing_token

    # A long poll: it waits at the leader and is answered when an event comes.
    last = client.events(wait_s=0)["next"]
    polled: list = []
    poller = threading.Thread(target=lambda: polled.append(client.events(last, wait_s=15)))
    poller.start()
    try:
        client.assign_task({"n": 2}, task_id="wakes-the-poll")
    finally:
        poller.join(30)
    assert polled and any(event.get("task_id") == "wakes-the-poll" for event in polled[0]["events"])
