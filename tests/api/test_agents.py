"""Agents over HTTP: registration, listing, start/stop, heartbeats, their tasks, DELETE."""

from tests.api.conftest import assert_problem, bearer, register
from tests.conftest import wait_until

SEED_BODY = {
    "agent_id": "my-agent",
    "agent_type": "implementation",
    "capabilities": ["code", "git", "testing"],
}


def test_register_answers_the_seed_shape(client):
    answer = client.simulate_post("/agents/register", json=SEED_BODY)
    assert answer.status_code == 200
    body = answer.json
    assert body.keys() == {"agent_id", "status", "token"}
    assert body["agent_id"] == "my-agent" and body["status"] == "registered"
    assert isinstance(body["token"], str) and len(body["token"]) >= 32
    assert answer.headers["location"] == "/agents/my-agent"
    agent = client.simulate_get("/agents/my-agent").json
    assert agent["agent_type"] == "implementation"
    assert agent["capabilities"] == ["code", "git", "testing"]
    assert agent["status"] == "registered"


def test_register_keeps_metadata_project_and_concurrency(client):
    register(
        client,
        "a1",
        metadata={"team": "june", "n": [1, 2]},
        project_id="proj-1",
        max_concurrent_tasks=4,
    )
    agent = client.simulate_get("/agents/a1").json
    assert agent["metadata"] == {"team": "june", "n": [1, 2]}
    assert agent["project_id"] == "proj-1"
    assert agent["config"]["max_concurrent_tasks"] == 4


def test_tokens_are_distinct_per_registration(client):
    assert register(client, "a1") != register(client, "a2")


def test_start_then_already_active(client):
    register(client, "my-agent")
    first = client.simulate_post("/agents/my-agent/start")
    assert first.status_code == 200 and first.json["status"] == "started"
    assert client.simulate_get("/agents/my-agent").json["status"] == "idle"
    again = client.simulate_post("/agents/my-agent/start")
    assert again.status_code == 200 and again.json["status"] == "already_active"


def test_start_and_stop_of_an_unknown_agent_are_404(client):
    assert_problem(client.simulate_post("/agents/ghost/start"), 404, "not_found")
    assert_problem(client.simulate_post("/agents/ghost/stop"), 404, "not_found")


def test_reregistering_a_live_id_is_409_and_changes_nothing(client):
    token = register(client, "my-agent", start=True)
    body = assert_problem(client.simulate_post("/agents/register", json=SEED_BODY), 409, "conflict")
    assert "my-agent" in body["detail"]
    assert client.simulate_get("/agents/my-agent").json["status"] == "idle"
    assert (
        client.simulate_post("/agents/my-agent/heartbeat", headers=bearer(token)).status_code == 200
    )


def test_delete_then_reregister_the_same_id(client):
    old_token = register(client, "my-agent", start=True)
    gone = client.simulate_delete("/agents/my-agent")
    assert gone.status_code == 200 and gone.json["status"] == "deregistered"
    assert_problem(client.simulate_get("/agents/my-agent"), 404, "not_found")
    assert client.simulate_get("/agents").json["total"] == 0
    new_token = register(client, "my-agent")
    assert new_token != old_token
    stale = client.simulate_post("/agents/my-agent/heartbeat", headers=bearer(old_token))
    assert_problem(stale, 401, "unauthorized")
    fresh = client.simulate_post("/agents/my-agent/heartbeat", headers=bearer(new_token))
    assert fresh.status_code == 200 and fresh.json["status"] == "registered"


def test_delete_requeues_the_agents_tasks(client):
    register(client, "a1", start=True)
    client.simulate_post("/tasks/assign", json={"task_id": "t1", "agent_id": "a1"})
    assert client.simulate_delete("/agents/a1").status_code == 200
    wait_until(lambda: client.simulate_get("/tasks/t1").json["status"] == "pending")
    assert client.simulate_get("/tasks/t1").json["agent_id"] is None


def test_delete_of_an_unknown_agent_is_404(client):
    assert_problem(client.simulate_delete("/agents/ghost"), 404, "not_found")


def test_get_agent_404_and_bad_ids_400(client):
    assert_problem(client.simulate_get("/agents/ghost"), 404, "not_found")
    assert_problem(client.simulate_get("/agents/a%20b"), 400, "invalid", "agent_id")
    assert_problem(client.simulate_get("/agents/" + "a" * 129), 400, "invalid", "agent_id")
    register(client, "a" * 128)
    assert client.simulate_get("/agents/" + "a" * 128).status_code == 200


def test_list_agents_with_filters_and_limit(client):
    register(client, "impl-1", "implementation", ("code", "git"), start=True)
    register(client, "impl-2", "implementation", ("code",))
    register(client, "brk-1", "breakdown", ("planning",), start=True)
    listing = client.simulate_get("/agents").json
    assert listing.keys() >= {"agents", "total", "active"}
    assert [a["agent_id"] for a in listing["agents"]] == ["brk-1", "impl-1", "impl-2"]
    assert listing["total"] == 3 and listing["active"] == 2

    def ids(**params):
        answer = client.simulate_get("/agents", params=params)
        assert answer.status_code == 200, answer.text
        return [a["agent_id"] for a in answer.json["agents"]]

    assert ids(status="idle") == ["brk-1", "impl-1"]
    assert ids(status="registered") == ["impl-2"]
    assert ids(agent_type="implementation") == ["impl-1", "impl-2"]
    assert ids(capability="git") == ["impl-1"]
    assert ids(agent_type="implementation", status="idle") == ["impl-1"]
    assert ids(limit=2) == ["brk-1", "impl-1"]
    assert client.simulate_get("/agents", params={"limit": 1}).json["total"] == 3


def test_list_agents_pages_by_offset_and_counts_what_the_filters_match(client):
    for n in range(7):
        register(client, f"a{n}", "implementation" if n % 2 else "breakdown", start=n < 5)

    def page(**params):
        answer = client.simulate_get("/agents", params=params)
        assert answer.status_code == 200, answer.text
        return [a["agent_id"] for a in answer.json["agents"]], answer.json["matched"]

    assert page(limit=3) == (["a0", "a1", "a2"], 7)
    assert page(limit=3, offset=3) == (["a3", "a4", "a5"], 7)
    assert page(limit=3, offset=6) == (["a6"], 7)
    assert page(limit=3, offset=7) == ([], 7)
    assert page(agent_type="implementation", offset=1, limit=2) == (["a3", "a5"], 3)
    assert page(status="registered") == (["a5", "a6"], 2)
    listing = client.simulate_get("/agents", params={"offset": 5}).json
    assert listing["total"] == 7 and listing["active"] == 5
    assert_problem(client.simulate_get("/agents", params={"offset": "-1"}), 400, field="offset")
    assert_problem(client.simulate_get("/agents", params={"offset": "x"}), 400, field="offset")


def test_agents_tell_when_their_last_heartbeat_came(client, clock):
    token = register(client, "remote", start=True)
    register(client, "waiting")  # never started: no heartbeat expected yet
    started_at = clock.time()
    clock.advance(2.5)
    assert client.simulate_get("/agents/remote").json["last_heartbeat_at"] == started_at
    client.simulate_post("/agents/remote/heartbeat", headers=bearer(token))
    beat_at = clock.time()
    clock.advance(0.25)

    def seen():
        agents = client.simulate_get("/agents").json["agents"]
        return {a["agent_id"]: a["last_heartbeat_at"] for a in agents}

    assert wait_until(lambda: seen() == {"remote": beat_at, "waiting": None}, message=str(seen()))
    # Unchanged agents read the same twice (the CLI and clients compare answers).
    assert client.simulate_get("/agents/remote").json == client.simulate_get("/agents/remote").json


def test_list_agents_refuses_bad_filters(client):
    assert_problem(client.simulate_get("/agents", params={"status": "sleepy"}), 400, field="status")
    assert_problem(client.simulate_get("/agents", params={"limit": "0"}), 400, field="limit")
    assert_problem(client.simulate_get("/agents", params={"limit": "many"}), 400, field="limit")
    bad_type = client.simulate_get("/agents", params={"agent_type": "a b"})
    assert_problem(bad_type, 400, field="agent_type")


def test_stop_an_idle_agent_then_start_it_again(client):
    register(client, "a1", start=True)
    stopped = client.simulate_post("/agents/a1/stop")
    assert stopped.status_code == 200 and stopped.json["status"] == "stopped"
    assert client.simulate_get("/agents/a1").json["status"] == "stopped"
    queued = client.simulate_post("/tasks/assign", json={"task_id": "t1"})
    assert queued.status_code == 202
    assert client.simulate_post("/agents/a1/start").json["status"] == "started"
    wait_until(lambda: client.simulate_get("/tasks/t1").json["status"] == "assigned")


def test_stop_with_drain_waits_for_the_running_task(client):
    token = register(client, "a1", start=True)
    client.simulate_post("/tasks/assign", json={"task_id": "t1", "agent_id": "a1"})
    draining = client.simulate_post("/agents/a1/stop", json={"drain": True})
    assert draining.json["status"] == "stopping"
    assert client.simulate_get("/tasks/t1").json["status"] == "assigned"
    done = client.simulate_post("/tasks/t1/complete", json={}, headers=bearer(token))
    assert done.status_code == 200
    wait_until(lambda: client.simulate_get("/agents/a1").json["status"] == "stopped")


def test_stop_without_drain_requeues_at_once(client):
    register(client, "a1", start=True)
    client.simulate_post("/tasks/assign", json={"task_id": "t1", "agent_id": "a1"})
    stopped = client.simulate_post("/agents/a1/stop", json={"drain": False})
    assert stopped.json["status"] == "stopped"
    wait_until(lambda: client.simulate_get("/tasks/t1").json["status"] == "pending")
    assert client.simulate_get("/tasks/t1").json["attempts"] == 0


def test_stop_refuses_a_bad_body(client):
    register(client, "a1", start=True)
    assert_problem(
        client.simulate_post("/agents/a1/stop", json={"drain": "no"}), 400, field="drain"
    )
    assert client.simulate_get("/agents/a1").json["status"] == "idle"


def test_heartbeat_hands_over_assignments_and_marks_them_running(client, agent):
    assigned = client.simulate_post("/tasks/assign", json={"task_id": 7, "payload": {"x": 1}})
    assert assigned.status_code == 200 and assigned.json["agent_id"] == "my-agent"
    assert client.simulate_get("/tasks/7").json["status"] == "assigned"
    beat = client.simulate_post("/agents/my-agent/heartbeat", headers=bearer(agent))
    assert beat.status_code == 200
    body = beat.json
    assert body["agent_id"] == "my-agent" and body["status"] == "busy"
    assert body["config_version"] == 1
    assert body["heartbeat_interval_s"] == 1.0
    [assignment] = body["assignments"]
    assert assignment["task_id"] == 7 and assignment["payload"] == {"x": 1}
    assert assignment["attempt"] == 1
    wait_until(lambda: client.simulate_get("/tasks/7").json["status"] == "running")
    # Every current assignment is repeated, so a lost answer loses no work.
    again = client.simulate_post("/agents/my-agent/heartbeat", headers=bearer(agent)).json
    assert [a["task_id"] for a in again["assignments"]] == [7]


def test_heartbeat_of_an_idle_agent_has_no_assignments(client, agent):
    beat = client.simulate_post("/agents/my-agent/heartbeat", headers=bearer(agent))
    assert beat.json["status"] == "idle" and beat.json["assignments"] == []


def test_missed_heartbeats_make_an_agent_unhealthy_and_a_heartbeat_heals_it(
    client, agent, clock, orch
):
    clock.advance(3.5)
    orch.tick()
    wait_until(lambda: client.simulate_get("/agents/my-agent").json["status"] == "unhealthy")
    queued = client.simulate_post("/tasks/assign", json={"task_id": "t1"})
    assert queued.status_code == 202 and queued.json["status"] == "queued"
    beat = client.simulate_post("/agents/my-agent/heartbeat", headers=bearer(agent))
    assert beat.status_code == 200
    wait_until(lambda: client.simulate_get("/tasks/t1").json["status"] == "assigned")
    wait_until(lambda: client.simulate_get("/agents/my-agent").json["status"] == "busy")


def test_a_lost_agent_may_register_its_id_again(client, agent, clock, orch):
    client.simulate_post("/tasks/assign", json={"task_id": "t1", "agent_id": "my-agent"})
    clock.advance(10.5)
    orch.tick()
    wait_until(lambda: client.simulate_get("/agents/my-agent").json["status"] == "lost")
    wait_until(lambda: client.simulate_get("/tasks/t1").json["status"] == "pending")
    lost_beat = client.simulate_post("/agents/my-agent/heartbeat", headers=bearer(agent))
    assert_problem(lost_beat, 409, "conflict")
    again = client.simulate_post("/agents/register", json=SEED_BODY)
    assert again.status_code == 200
    assert client.simulate_get("/agents/my-agent").json["status"] == "registered"


def test_agent_tasks_lists_what_the_agent_holds(client, agent):
    register(client, "other", start=True)
    client.simulate_post("/tasks/assign", json={"task_id": "mine", "agent_id": "my-agent"})
    client.simulate_post("/tasks/assign", json={"task_id": "theirs", "agent_id": "other"})
    held = client.simulate_get("/agents/my-agent/tasks")
    assert held.status_code == 200
    assert held.json["agent_id"] == "my-agent"
    assert [t["task_id"] for t in held.json["tasks"]] == ["mine"]
    assert held.json["tasks"][0]["status"] == "assigned"
    client.simulate_post("/tasks/mine/complete", json={}, headers=bearer(agent))
    assert client.simulate_get("/agents/my-agent/tasks").json["tasks"] == []


def test_current_tasks_echo_task_ids_as_given(client):
    register(client, "a1", start=True, max_concurrent_tasks=3)
    for task_id in (123, "t-7", "456"):
        answer = client.simulate_post("/tasks/assign", json={"task_id": task_id, "agent_id": "a1"})
        assert answer.status_code == 200, answer.text
    # Sorted by key; the integer stays an integer and the digit string a string.
    expected = [123, "456", "t-7"]
    wait_until(lambda: client.simulate_get("/agents/a1").json["current_tasks"] == expected)
    [listed] = client.simulate_get("/agents").json["agents"]
    assert listed["current_tasks"] == expected


def test_agent_tasks_of_an_unknown_agent_is_404(client):
    assert_problem(client.simulate_get("/agents/ghost/tasks"), 404, "not_found")


def test_register_refuses_bad_bodies_naming_the_field(client):
    cases = [
        ({"agent_type": "implementation"}, "agent_id"),
        ({"agent_id": "a1"}, "agent_type"),
        ({"agent_id": "a b", "agent_type": "implementation"}, "agent_id"),
        ({"agent_id": "a" * 129, "agent_type": "implementation"}, "agent_id"),
        (
            {"agent_id": "a1", "agent_type": "implementation", "capabilities": "code"},
            "capabilities",
        ),
        ({"agent_id": "a1", "agent_type": "x", "capabilities": ["a b"]}, "capabilities[0]"),
        ({"agent_id": "a1", "agent_type": "x", "metadata": []}, "metadata"),
        ({"agent_id": "a1", "agent_type": "x", "metadata": {"k": "v" * 20_000}}, "metadata"),
        ({"agent_id": "a1", "agent_type": "x", "max_concurrent_tasks": 0}, "max_concurrent_tasks"),
        ({"agent_id": "a1", "agent_type": "x", "project_id": "p q"}, "project_id"),
    ]
    for body, field in cases:
        answer = client.simulate_post("/agents/register", json=body)
        assert_problem(answer, 400, "invalid", field)
    assert client.simulate_get("/agents").json["total"] == 0
