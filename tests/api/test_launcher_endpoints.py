"""The launcher's endpoints: PUT /agents/{id}/metadata and POST /agents/{id}/exits."""

from tests.api.conftest import ADMIN_TOKEN, assert_problem, bearer, register, settle
from tests.conftest import wait_until


def _task_on(client, token, agent_id="my-agent"):
    """Submit a task to ``agent_id`` and have its heartbeat deliver it (running)."""
    assigned = client.simulate_post(
        "/tasks/assign", json={"task_id": "t1", "agent_id": agent_id, "max_attempts": 3}
    )
    assert assigned.status_code == 200, assigned.text
    beat = client.simulate_post(f"/agents/{agent_id}/heartbeat", headers=bearer(token))
    assert [a["task_id"] for a in beat.json["assignments"]] == ["t1"]


def test_metadata_is_replaced_and_kept(client, agent):
    answer = client.simulate_put(
        "/agents/my-agent/metadata",
        json={"metadata": {"pid": 42, "host": "h1", "program": "worker", "launcher": "l1"}},
    )
    assert answer.status_code == 200, answer.text
    assert answer.json["metadata"]["pid"] == 42
    again = client.simulate_put("/agents/my-agent/metadata", json={"metadata": {"pid": 43}})
    assert again.json["metadata"] == {"pid": 43}
    assert client.simulate_get("/agents/my-agent").json["metadata"] == {"pid": 43}


def test_bad_metadata_is_refused_naming_the_field_and_changes_nothing(client, agent):
    assert_problem(
        client.simulate_put("/agents/my-agent/metadata", json={"metadata": [1]}),
        400,
        "invalid",
        "metadata",
    )
    assert_problem(
        client.simulate_put("/agents/my-agent/metadata", json={"metadata": {"x": "y" * 20000}}),
        400,
        "invalid",
        "metadata",
    )
    assert_problem(
        client.simulate_put("/agents/ghost/metadata", json={"metadata": {}}), 404, "not_found"
    )
    assert client.simulate_get("/agents/my-agent").json["metadata"] == {}


def test_an_exit_while_restarting_fails_the_task_by_policy_and_counts_a_restart(
    client, orch, agent
):
    _task_on(client, agent)
    answer = client.simulate_post(
        "/agents/my-agent/exits", json={"signal": "SIGKILL", "restarting": True}
    )
    assert answer.status_code == 200, answer.text
    assert answer.json == {"agent_id": "my-agent", "status": "idle", "restarts": 1}
    settle(orch)
    task = wait_until(lambda: (t := client.simulate_get("/tasks/t1").json)["attempts"] and t)
    assert task["status"] in ("failed", "pending")
    assert task["error"] == "process killed by SIGKILL"
    agent_now = client.simulate_get("/agents/my-agent").json
    assert agent_now["restarts"] == 1 and agent_now["last_error"] == "process killed by SIGKILL"
    types = [e["type"] for e in client.simulate_get("/events?after=0").json["events"]]
    assert "agent.crashed" in types and "agent.restarted" in types
    metrics = client.simulate_get("/metrics").text
    assert "orchestrator_agent_restarts_total 1.0" in metrics


def test_the_agent_takes_no_work_until_its_new_process_beats(client, orch, clock, agent):
    client.simulate_post("/agents/my-agent/exits", json={"exit_code": 1, "restarting": True})
    settle(orch)
    queued = client.simulate_post("/tasks/assign", json={"task_id": "t2", "capabilities": ["code"]})
    assert queued.status_code == 202 and queued.json["status"] == "queued"
    client.simulate_post("/agents/my-agent/heartbeat", headers=bearer(agent))
    settle(orch)
    wait_until(lambda: client.simulate_get("/tasks/t2").json["status"] != "pending")
    beat = client.simulate_post("/agents/my-agent/heartbeat", headers=bearer(agent))
    assert [a["task_id"] for a in beat.json["assignments"]] == ["t2"]


def test_an_exit_when_giving_up_marks_the_agent_failed_and_start_revives_it(client, orch, agent):
    _task_on(client, agent)
    answer = client.simulate_post(
        "/agents/my-agent/exits", json={"exit_code": 3, "restarting": False}
    )
    assert answer.json["status"] == "failed"
    settle(orch)
    task = client.simulate_get("/tasks/t1").json
    assert task["error"] == "process exited with status 3" and task["agent_id"] != "my-agent"
    assert client.simulate_get("/agents/my-agent").json["status"] == "failed"
    types = [e["type"] for e in client.simulate_get("/events?after=0").json["events"]]
    assert "agent.failed" in types
    started = client.simulate_post("/agents/my-agent/start")
    assert started.json["status"] == "started"
    assert client.simulate_get("/agents/my-agent").json["status"] == "idle"


def test_an_exit_of_a_stopped_agent_changes_nothing(client, agent):
    client.simulate_post("/agents/my-agent/stop")
    answer = client.simulate_post(
        "/agents/my-agent/exits", json={"signal": "SIGTERM", "restarting": False}
    )
    assert answer.json == {"agent_id": "my-agent", "status": "stopped", "restarts": 0}


def test_bad_exit_reports_are_refused_and_change_nothing(client, agent):
    for body, field in [
        ({"restarting": True}, "exit_code"),
        ({"restarting": True, "exit_code": 1, "signal": "SIGKILL"}, "exit_code"),
        ({"exit_code": 1}, "restarting"),
        ({"restarting": True, "signal": "kill -9"}, "signal"),
        ({"restarting": "yes", "exit_code": 1}, "restarting"),
    ]:
        assert_problem(
            client.simulate_post("/agents/my-agent/exits", json=body), 400, "invalid", field
        )
    assert_problem(
        client.simulate_post("/agents/ghost/exits", json={"exit_code": 1, "restarting": True}),
        404,
        "not_found",
    )
    agent_now = client.simulate_get("/agents/my-agent").json
    assert agent_now["restarts"] == 0 and agent_now["status"] == "idle"


def test_an_in_process_agent_has_no_process_to_exit(client, orch):
    from orch import Agent

    class Echo(Agent):
        def handle(self, task):
            return task.payload

    orch.attach(Echo("inproc"))
    assert_problem(
        client.simulate_post("/agents/inproc/exits", json={"exit_code": 1, "restarting": True}),
        409,
        "conflict",
    )


def test_both_endpoints_are_admin_calls(admin_client):
    token = register(admin_client, "a1", headers=bearer(ADMIN_TOKEN), start=True)
    for method, path, body in [
        ("PUT", "/agents/a1/metadata", {"metadata": {}}),
        ("POST", "/agents/a1/exits", {"exit_code": 1, "restarting": True}),
    ]:
        assert_problem(admin_client.simulate_request(method, path, json=body), 401)
        assert_problem(
            admin_client.simulate_request(method, path, json=body, headers=bearer(token)), 403
        )
        ok = admin_client.simulate_request(method, path, json=body, headers=bearer(ADMIN_TOKEN))
        assert ok.status_code == 200, ok.text


def test_the_openapi_document_describes_both(client):
    paths = client.simulate_get("/openapi.json").json["paths"]
    assert "put" in paths["/agents/{agent_id}/metadata"]
    assert "post" in paths["/agents/{agent_id}/exits"]
