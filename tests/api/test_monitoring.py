"""/health, /metrics, /stats and /openapi.json."""

import re

from orch.http.app import ROUTES
from orch.http.schemas import REQUEST_BODIES
from tests.api.conftest import assert_problem, register
from tests.conftest import wait_until


def test_health_answers_status_checks_and_the_seed_counts(client):
    register(client, "a1", start=True)
    register(client, "a2")
    client.simulate_post("/tasks/assign", json={"task_id": "t1", "agent_type": "nobody"})
    answer = client.simulate_get("/health")
    assert answer.status_code == 200
    body = answer.json
    assert body["status"] == "healthy"
    assert body["checks"]["actors"]["status"] == "ok"
    assert body["checks"]["store"]["status"] == "ok"
    assert body["total_agents"] == 2
    assert body["active_agents"] == 1
    assert body["pending_tasks"] == 1


def test_health_is_503_unhealthy_while_the_store_fails(client, orch, store):
    store.fail_writes = "disk full"
    orch.dependencies.run_once()  # what the background checker does every interval
    answer = client.simulate_get("/health")
    assert answer.status_code == 503
    assert answer.json["status"] == "unhealthy"
    assert answer.json["checks"]["store"]["status"] == "failing"
    assert "disk full" in str(answer.json["checks"]["store"])
    store.fail_writes = None
    orch.dependencies.run_once()
    answer = client.simulate_get("/health")
    assert answer.status_code == 200 and answer.json["status"] == "healthy"


def test_metrics_are_prometheus_text(client):
    register(client, "a1", start=True)
    register(client, "a2")
    answer = client.simulate_get("/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    text = answer.text
    assert "# TYPE orchestrator_agents gauge" in text
    assert 'orchestrator_agents{state="idle"} 1.0' in text
    assert 'orchestrator_agents{state="registered"} 1.0' in text
    assert "orchestrator_tasks" in text and "orchestrator_locks_held" in text
    assert "# EOF" not in text
    # No label carries an agent id.
    assert "a1" not in text and "a2" not in text


def test_metrics_follow_what_happens(client):
    token = register(client, "a1", start=True)
    client.simulate_post("/tasks/assign", json={"task_id": "t1", "agent_id": "a1"})
    client.simulate_post(
        "/tasks/t1/complete", json={}, headers={"Authorization": f"Bearer {token}"}
    )
    text = client.simulate_get("/metrics").text
    assert 'orchestrator_tasks{state="completed"} 1.0' in text
    assert 'orchestrator_tasks{state="assigned"} 0.0' in text


def test_metrics_speak_openmetrics_when_asked(client):
    answer = client.simulate_get("/metrics", headers={"Accept": "application/openmetrics-text"})
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("application/openmetrics-text")
    assert answer.text.rstrip().endswith("# EOF")
    assert "orchestrator_agents" in answer.text


def test_stats_count_agents_tasks_and_locks(client):
    token = register(client, "a1", start=True)
    register(client, "a2", start=True)
    client.simulate_post("/tasks/assign", json={"task_id": "t1", "agent_id": "a1"})
    client.simulate_post("/tasks/assign", json={"task_id": "t2", "agent_type": "nobody"})
    client.simulate_post(
        "/locks/repo/acquire", json={}, headers={"Authorization": f"Bearer {token}"}
    )
    wait_until(lambda: client.simulate_get("/stats").json["idle_agents"] == 1)
    stats = client.simulate_get("/stats").json
    assert stats["total_agents"] == 2
    assert stats["active_agents"] == 2
    assert stats["busy_agents"] == 1
    assert stats["pending_tasks"] == 1
    assert stats["assigned_tasks"] == 1
    assert stats["total_tasks_completed"] == 0
    assert stats["total_tasks_failed"] == 0
    assert stats["locks"]["locks_held"] == 1


def route_methods():
    for template, resource in ROUTES:
        for method in resource.scopes:
            yield template, method.lower()


def test_openapi_documents_every_route_and_request_body(client):
    answer = client.simulate_get("/openapi.json")
    assert answer.status_code == 200
    document = answer.json
    assert document["openapi"].startswith("3.")
    assert set(document["paths"]) == {template for template, _ in ROUTES}
    for template, method in route_methods():
        operation = document["paths"][template][method]
        assert operation["responses"], (template, method)
    schemas = document["components"]["schemas"]
    for body in REQUEST_BODIES:
        assert body.__name__ in schemas, body.__name__
    refs = re.findall(r'"\$ref":\s*"#/components/schemas/([^"]+)"', answer.text)
    assert refs and set(refs) <= set(schemas)


def test_openapi_states_the_same_limits_as_validation(client):
    document = client.simulate_get("/openapi.json").json
    assign = document["components"]["schemas"]["AssignTask"]["properties"]
    assert assign["priority"]["minimum"] == 0 and assign["priority"]["maximum"] == 10
    register_body = document["paths"]["/agents/register"]["post"]["requestBody"]
    assert register_body["content"]["application/json"]["schema"]["$ref"].endswith("/RegisterAgent")
    heartbeat = document["paths"]["/agents/{agent_id}/heartbeat"]["post"]
    assert heartbeat["security"] == [{"agentToken": []}]
    assert "security" not in document["paths"]["/health"]["get"]
    assert document["paths"]["/agents/{agent_id}"]["parameters"][0]["name"] == "agent_id"


def test_monitoring_routes_refuse_writes(client):
    for path in ("/health", "/metrics", "/stats", "/openapi.json"):
        assert_problem(client.simulate_post(path, json={}), 405, "method_not_allowed")
