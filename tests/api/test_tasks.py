"""Tasks over HTTP: assignment and queueing, outcomes, retries, cancel and the reads."""

from tests.api.conftest import assert_problem, bearer, register
from tests.conftest import wait_until

SEED_STATS_KEYS = {
    "total_agents",
    "active_agents",
    "idle_agents",
    "pending_tasks",
    "assigned_tasks",
    "total_tasks_completed",
    "total_tasks_failed",
}


def test_assign_to_a_named_agent_echoes_an_integer_id(client, agent):
    answer = client.simulate_post("/tasks/assign", json={"task_id": 123, "agent_id": "my-agent"})
    assert answer.status_code == 200
    assert answer.json["status"] == "assigned"
    assert answer.json["agent_id"] == "my-agent"
    assert answer.json["task_id"] == 123 and isinstance(answer.json["task_id"], int)
    task = client.simulate_get("/tasks/123").json
    assert task["task_id"] == 123 and task["status"] == "assigned"


def test_a_string_id_is_echoed_as_a_string(client, agent):
    answer = client.simulate_post("/tasks/assign", json={"task_id": "456", "agent_id": "my-agent"})
    assert answer.status_code == 200
    assert answer.json["task_id"] == "456"
    assert client.simulate_get("/tasks/456").json["task_id"] == "456"
    beat = client.simulate_post("/agents/my-agent/heartbeat", headers=bearer(agent)).json
    assert beat["assignments"][0]["task_id"] == "456"


def test_an_integer_id_and_its_string_name_the_same_task(client, agent):
    client.simulate_post("/tasks/assign", json={"task_id": 123, "agent_id": "my-agent"})
    clash = client.simulate_post("/tasks/assign", json={"task_id": "123"})
    assert_problem(clash, 409, "conflict")
    assert client.simulate_get("/tasks/123").json["task_id"] == 123


def test_assign_without_an_id_gets_one(client, agent):
    answer = client.simulate_post("/tasks/assign", json={"payload": {"k": "v"}})
    assert answer.status_code == 200
    task_id = answer.json["task_id"]
    assert isinstance(task_id, str) and task_id
    assert client.simulate_get(f"/tasks/{task_id}").json["payload"] == {"k": "v"}


def test_a_task_with_no_free_agent_is_queued(client):
    answer = client.simulate_post("/tasks/assign", json={"task_id": "t1", "priority": 3})
    assert answer.status_code == 202
    assert answer.json == {"task_id": "t1", "status": "queued", "agent_id": None}
    pending = client.simulate_get("/tasks/pending")
    assert pending.status_code == 200
    assert pending.json["count"] == 1
    [task] = pending.json["pending_tasks"]
    assert task["task_id"] == "t1" and task["status"] == "pending" and task["priority"] == 3


def test_pending_tasks_come_highest_priority_first_then_fifo(client):
    for task_id, priority in [("low", 0), ("high-1", 9), ("mid", 5), ("high-2", 9)]:
        client.simulate_post("/tasks/assign", json={"task_id": task_id, "priority": priority})
    pending = client.simulate_get("/tasks/pending").json
    assert [t["task_id"] for t in pending["pending_tasks"]] == ["high-1", "high-2", "mid", "low"]
    assert pending["count"] == 4
    limited = client.simulate_get("/tasks/pending", params={"limit": 2}).json
    assert [t["task_id"] for t in limited["pending_tasks"]] == ["high-1", "high-2"]


def test_queued_tasks_go_to_an_agent_that_matches(client):
    client.simulate_post(
        "/tasks/assign",
        json={"task_id": "t1", "agent_type": "breakdown", "capabilities": ["planning"]},
    )
    register(client, "impl", "implementation", ("planning",), start=True)
    register(client, "brk-poor", "breakdown", ("code",), start=True)
    assert client.simulate_get("/tasks/t1").json["status"] == "pending"
    register(client, "brk", "breakdown", ("planning", "code"), start=True)
    wait_until(lambda: client.simulate_get("/tasks/t1").json["agent_id"] == "brk")


def test_assign_to_an_agent_that_cannot_take_it_is_409(client, agent):
    register(client, "not-started")
    assert_problem(
        client.simulate_post("/tasks/assign", json={"task_id": "a", "agent_id": "not-started"}),
        409,
        "conflict",
    )
    client.simulate_post("/tasks/assign", json={"task_id": "b", "agent_id": "my-agent"})
    busy = client.simulate_post("/tasks/assign", json={"task_id": "c", "agent_id": "my-agent"})
    assert "busy" in assert_problem(busy, 409, "conflict")["detail"]
    mismatch = client.simulate_post(
        "/tasks/assign", json={"task_id": "d", "agent_id": "not-started", "agent_type": "other"}
    )
    assert_problem(mismatch, 409, "conflict")
    for task_id in ("a", "c", "d"):
        assert_problem(client.simulate_get(f"/tasks/{task_id}"), 404, "not_found")


def test_assign_to_an_unknown_agent_is_404(client):
    answer = client.simulate_post("/tasks/assign", json={"task_id": "t1", "agent_id": "ghost"})
    assert_problem(answer, 404, "not_found")
    assert_problem(client.simulate_get("/tasks/t1"), 404, "not_found")


def test_an_active_task_id_is_409_unless_forced(client):
    client.simulate_post("/tasks/assign", json={"task_id": "t1", "payload": {"v": 1}})
    again = client.simulate_post("/tasks/assign", json={"task_id": "t1", "payload": {"v": 2}})
    assert_problem(again, 409, "conflict")
    assert client.simulate_get("/tasks/t1").json["payload"] == {"v": 1}
    forced = client.simulate_post(
        "/tasks/assign", json={"task_id": "t1", "payload": {"v": 2}, "force": True}
    )
    assert forced.status_code == 202
    assert client.simulate_get("/tasks/t1").json["payload"] == {"v": 2}
    assert client.simulate_get("/tasks/pending").json["count"] == 1


def test_a_finished_task_id_may_be_used_again(client, agent):
    client.simulate_post("/tasks/assign", json={"task_id": "t1", "agent_id": "my-agent"})
    client.simulate_post("/tasks/t1/complete", json={}, headers=bearer(agent))
    again = client.simulate_post("/tasks/assign", json={"task_id": "t1"})
    assert again.status_code in (200, 202)
    assert client.simulate_get("/tasks/t1").json["status"] in ("pending", "assigned")


def test_stats_carry_the_seed_keys_and_count(client, agent):
    register(client, "idle-one", start=True)
    register(client, "never-started")
    client.simulate_post("/tasks/assign", json={"task_id": 1, "agent_id": "my-agent"})
    client.simulate_post("/tasks/assign", json={"task_id": 2, "agent_type": "nobody"})
    stats = client.simulate_get("/stats")
    assert stats.status_code == 200
    body = stats.json
    assert body.keys() >= SEED_STATS_KEYS
    wait_until(lambda: client.simulate_get("/stats").json["idle_agents"] == 1)
    body = client.simulate_get("/stats").json
    assert body["total_agents"] == 3
    assert body["active_agents"] == 2
    assert body["pending_tasks"] == 1
    assert body["assigned_tasks"] == 1
    assert body["total_tasks_completed"] == 0 and body["total_tasks_failed"] == 0


def test_complete_with_the_agents_token(client, agent):
    client.simulate_post("/tasks/assign", json={"task_id": 9, "agent_id": "my-agent"})
    done = client.simulate_post(
        "/tasks/9/complete", json={"result": {"ok": True}}, headers=bearer(agent)
    )
    assert done.status_code == 200
    assert done.json == {"task_id": 9, "status": "completed"}
    task = client.simulate_get("/tasks/9").json
    assert task["status"] == "completed" and task["result"] == {"ok": True}
    assert client.simulate_get("/stats").json["total_tasks_completed"] == 1
    wait_until(lambda: client.simulate_get("/agents/my-agent").json["status"] == "idle")
    twice = client.simulate_post("/tasks/9/complete", json={}, headers=bearer(agent))
    assert_problem(twice, 409, "conflict")


def test_complete_naming_the_agent_in_the_body(client, agent):
    client.simulate_post("/tasks/assign", json={"task_id": "t1", "agent_id": "my-agent"})
    done = client.simulate_post(
        "/tasks/t1/complete", json={"agent_id": "my-agent"}, headers=bearer(agent)
    )
    assert done.status_code == 200 and done.json["status"] == "completed"


def test_complete_by_an_agent_not_holding_the_task_is_refused(client, agent):
    other = register(client, "other", start=True)
    client.simulate_post("/tasks/assign", json={"task_id": "t1", "agent_id": "my-agent"})
    refused = client.simulate_post("/tasks/t1/complete", json={}, headers=bearer(other))
    assert_problem(refused, 409, "conflict")
    assert client.simulate_get("/tasks/t1").json["status"] == "assigned"


def test_complete_of_an_unknown_or_pending_task(client, agent):
    assert_problem(
        client.simulate_post("/tasks/ghost/complete", json={}, headers=bearer(agent)), 404
    )
    client.simulate_post("/tasks/assign", json={"task_id": "queued", "agent_type": "nobody"})
    pending = client.simulate_post("/tasks/queued/complete", json={}, headers=bearer(agent))
    assert_problem(pending, 409, "conflict")
    bad_id = client.simulate_post("/tasks/a%20b/complete", json={}, headers=bearer(agent))
    assert_problem(bad_id, 400, "invalid", "task_id")


def test_a_retryable_failure_goes_back_to_pending_after_the_backoff(client, agent, clock, orch):
    client.simulate_post("/tasks/assign", json={"task_id": "t1", "agent_id": "my-agent"})
    failed = client.simulate_post("/tasks/t1/fail", json={"error": "flaky"}, headers=bearer(agent))
    assert failed.status_code == 200
    assert failed.json == {"task_id": "t1", "status": "failed", "attempts": 1}
    task = client.simulate_get("/tasks/t1").json
    assert task["status"] == "failed" and task["error"] == "flaky" and task["agent_id"] is None
    assert client.simulate_get("/stats").json["total_tasks_failed"] == 1
    # Keep the agent out of the way so "pending" is observable.
    assert client.simulate_post("/agents/my-agent/stop").json["status"] == "stopped"
    clock.advance(0.9)
    orch.tick()
    assert client.simulate_get("/tasks/t1").json["status"] == "failed"
    clock.advance(0.2)
    orch.tick()
    assert client.simulate_get("/tasks/t1").json["status"] == "pending"
    assert [t["task_id"] for t in client.simulate_get("/tasks/pending").json["pending_tasks"]] == [
        "t1"
    ]
    client.simulate_post("/agents/my-agent/start")
    wait_until(lambda: client.simulate_get("/tasks/t1").json["status"] == "assigned")
    beat = client.simulate_post("/agents/my-agent/heartbeat", headers=bearer(agent)).json
    assert beat["assignments"][0]["attempt"] == 2


def test_a_non_retryable_failure_is_dead(client, agent):
    client.simulate_post("/tasks/assign", json={"task_id": "t1", "agent_id": "my-agent"})
    dead = client.simulate_post(
        "/tasks/t1/fail", json={"error": "bad input", "retryable": False}, headers=bearer(agent)
    )
    assert dead.status_code == 200 and dead.json["status"] == "dead"
    assert client.simulate_get("/tasks/t1").json["status"] == "dead"


def test_the_last_attempt_failing_is_dead(client, agent, clock, orch):
    client.simulate_post(
        "/tasks/assign", json={"task_id": "t1", "agent_id": "my-agent", "max_attempts": 1}
    )
    dead = client.simulate_post("/tasks/t1/fail", json={"error": "boom"}, headers=bearer(agent))
    assert dead.json["status"] == "dead"
    clock.advance(120)
    orch.tick()
    assert client.simulate_get("/tasks/t1").json["status"] == "dead"


def test_fail_refuses_bad_bodies(client, agent):
    client.simulate_post("/tasks/assign", json={"task_id": "t1", "agent_id": "my-agent"})
    for body, field in [
        ({}, "error"),
        ({"error": ""}, "error"),
        ({"error": 5}, "error"),
        ({"error": "x", "retryable": "yes"}, "retryable"),
    ]:
        answer = client.simulate_post("/tasks/t1/fail", json=body, headers=bearer(agent))
        assert_problem(answer, 400, "invalid", field)
    assert client.simulate_get("/tasks/t1").json["status"] == "assigned"


def test_a_task_past_its_timeout_is_requeued(client, agent, clock, orch):
    client.simulate_post(
        "/tasks/assign", json={"task_id": "t1", "agent_id": "my-agent", "timeout_s": 5}
    )
    client.simulate_post("/agents/my-agent/stop", json={"drain": True})
    clock.advance(4)
    orch.tick()
    assert client.simulate_get("/tasks/t1").json["status"] == "assigned"
    clock.advance(1.5)
    orch.tick()
    task = client.simulate_get("/tasks/t1").json
    assert task["status"] == "pending" and task["attempts"] == 1
    assert "timed out" in task["error"]


def test_cancel_a_pending_task(client):
    client.simulate_post("/tasks/assign", json={"task_id": "t1"})
    cancelled = client.simulate_post("/tasks/t1/cancel")
    assert cancelled.status_code == 200
    assert cancelled.json == {"task_id": "t1", "status": "cancelled"}
    assert client.simulate_get("/tasks/pending").json["count"] == 0
    assert_problem(client.simulate_post("/tasks/t1/cancel"), 409, "conflict")


def test_cancel_an_assigned_task_frees_its_agent(client, agent):
    client.simulate_post("/tasks/assign", json={"task_id": "t1", "agent_id": "my-agent"})
    assert client.simulate_post("/tasks/t1/cancel").json["status"] == "cancelled"
    wait_until(lambda: client.simulate_get("/agents/my-agent/tasks").json["tasks"] == [])
    late = client.simulate_post("/tasks/t1/complete", json={}, headers=bearer(agent))
    assert_problem(late, 409, "conflict")
    wait_until(lambda: client.simulate_get("/agents/my-agent").json["status"] == "idle")
    assert client.simulate_post("/tasks/assign", json={"agent_id": "my-agent"}).status_code == 200


def test_cancel_of_an_unknown_task_is_404(client):
    assert_problem(client.simulate_post("/tasks/ghost/cancel"), 404, "not_found")


def test_get_task_and_its_errors(client):
    client.simulate_post(
        "/tasks/assign",
        json={
            "task_id": "t1",
            "priority": 4,
            "capabilities": ["code"],
            "payload": {"a": [1, "two"]},
            "resources": ["repo"],
            "max_attempts": 5,
            "timeout_s": 30,
        },
    )
    task = client.simulate_get("/tasks/t1").json
    assert task["status"] == "pending" and task["priority"] == 4
    assert task["capabilities"] == ["code"] and task["resources"] == ["repo"]
    assert task["payload"] == {"a": [1, "two"]}
    assert task["max_attempts"] == 5 and task["timeout_s"] == 30
    assert_problem(client.simulate_get("/tasks/ghost"), 404, "not_found")
    assert_problem(client.simulate_get("/tasks/" + "x" * 129), 400, "invalid", "task_id")


def test_list_tasks_with_filters(client, agent):
    client.simulate_post("/tasks/assign", json={"task_id": "a", "agent_id": "my-agent"})
    client.simulate_post("/tasks/assign", json={"task_id": "b", "agent_type": "nobody"})
    client.simulate_post("/tasks/assign", json={"task_id": "c", "agent_type": "nobody"})
    listing = client.simulate_get("/tasks")
    assert listing.status_code == 200
    assert [t["task_id"] for t in listing.json["tasks"]] == ["a", "b", "c"]
    assert listing.json["count"] == 3

    def ids(**params):
        answer = client.simulate_get("/tasks", params=params)
        assert answer.status_code == 200, answer.text
        return [t["task_id"] for t in answer.json["tasks"]]

    assert ids(status="pending") == ["b", "c"]
    assert ids(agent_id="my-agent") == ["a"]
    assert len(ids(limit=2)) == 2
    assert_problem(client.simulate_get("/tasks", params={"status": "sleepy"}), 400, field="status")
    assert_problem(client.simulate_get("/tasks", params={"limit": "-1"}), 400, field="limit")
    assert_problem(client.simulate_get("/tasks/pending", params={"limit": "x"}), 400, field="limit")


def test_a_task_with_resources_holds_their_locks_until_it_ends(client, agent):
    answer = client.simulate_post(
        "/tasks/assign", json={"task_id": "t1", "agent_id": "my-agent", "resources": ["repo"]}
    )
    assert answer.status_code == 200
    [lock] = client.simulate_get("/locks").json["locks"]
    assert lock["resource"] == "repo"
    assert lock["holders"][0]["agent_id"] == "my-agent"
    beat = client.simulate_post("/agents/my-agent/heartbeat", headers=bearer(agent)).json
    assert beat["assignments"][0]["fencing_tokens"] == {"repo": lock["fencing_token"]}
    client.simulate_post("/tasks/t1/complete", json={}, headers=bearer(agent))
    wait_until(lambda: client.simulate_get("/locks").json["locks"] == [])


def test_a_task_lock_names_the_task_by_its_id_as_given(client, agent):
    answer = client.simulate_post(
        "/tasks/assign", json={"task_id": 123, "agent_id": "my-agent", "resources": ["db"]}
    )
    assert answer.status_code == 200
    [lock] = client.simulate_get("/locks").json["locks"]
    assert lock["holders"][0]["task_id"] == 123  # an integer stays an integer


def test_assign_refuses_bad_bodies_naming_the_field(client, agent):
    cases = [
        ({"priority": "high"}, "priority"),
        ({"priority": 11}, "priority"),
        ({"priority": -1}, "priority"),
        ({"task_id": 1.5}, "task_id"),
        ({"task_id": True}, "task_id"),
        ({"task_id": "a b"}, "task_id"),
        ({"task_id": 2**63}, "task_id"),
        ({"agent_id": "a b"}, "agent_id"),
        ({"payload": [1]}, "payload"),
        ({"capabilities": ["ok", "not ok"]}, "capabilities[1]"),
        ({"resources": ["r"] * 33}, "resources"),
        ({"resources": ["r", "r"]}, "resources"),
        ({"max_attempts": 0}, "max_attempts"),
        ({"timeout_s": 0}, "timeout_s"),
        ({"timeout_s": 10 * 86_400}, "timeout_s"),
        ({"force": "yes"}, "force"),
    ]
    for body, field in cases:
        answer = client.simulate_post("/tasks/assign", json=body)
        assert_problem(answer, 400, "invalid", field)
    assert client.simulate_get("/tasks").json["count"] == 0
