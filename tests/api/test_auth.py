"""Who may call what: agents' own tokens, the admin token, and the public reads."""

import pytest

from orch.http.app import ROUTES
from orch.http.auth import Scope
from orch.tokens import hash_token
from tests.api.conftest import ADMIN_TOKEN, assert_problem, bearer, register, snapshot

ADMIN = bearer(ADMIN_TOKEN)
MALFORMED_HEADERS = ["Basic YTpi", "Bearer", "Bearer    ", "Token abc", "abc"]

#: Bodies that succeed, for the routes whose body has required fields or side effects.
SAMPLE_BODIES = {
    ("/agents/register", "POST"): {"agent_id": "new-agent", "agent_type": "implementation"},
    ("/tasks/assign", "POST"): {"task_id": "t-new", "agent_type": "nobody"},
    ("/agents/{agent_id}/stop", "POST"): {},
    ("/agents/{agent_id}/config", "PUT"): {},
    ("/agents/{agent_id}/config", "PATCH"): {"max_concurrent_tasks": 2},
    ("/config/defaults", "PUT"): {"task_timeout_s": 60},
    ("/agents/{agent_id}/metadata", "PUT"): {"metadata": {"pid": 1}},
    ("/agents/{agent_id}/exits", "POST"): {"exit_code": 1, "restarting": True},
}
PATH_VALUES = {"agent_id": "a1", "task_id": "t1", "resource": "repo"}


def route_calls(*scopes):
    """(template, method) of every route method with one of ``scopes``."""
    return [
        (template, method)
        for template, resource in ROUTES
        for method, scope in resource.scopes.items()
        if scope in scopes
    ]


def calls_with_scope(*scopes):
    return [pytest.param(t, m, id=f"{m} {t}") for t, m in route_calls(*scopes)]


def fill(template):
    return template.format(**PATH_VALUES)


# ------------------------------------------------------- agent-scoped calls


def agent_calls(task_id="t1", fencing_token=1):
    """Agent-scoped writes, each naming ``a1`` (in the path or the body)."""
    return [
        ("/agents/a1/heartbeat", None),
        (f"/tasks/{task_id}/progress", {"agent_id": "a1", "message": "half", "percent": 50}),
        (f"/tasks/{task_id}/complete", {"agent_id": "a1"}),
        (f"/tasks/{task_id}/fail", {"agent_id": "a1", "error": "x"}),
        ("/locks/repo/acquire", {"agent_id": "a1"}),
        ("/locks/acquire", {"agent_id": "a1", "resources": [{"resource": "other"}]}),
        ("/locks/held/renew", {"agent_id": "a1", "fencing_token": fencing_token}),
        ("/locks/held/release", {"agent_id": "a1", "fencing_token": fencing_token}),
    ]


@pytest.fixture
def two_agents(client):
    """``a1`` holding task ``t1`` and lock ``held``, and ``a2``; their tokens."""
    first = register(client, "a1", start=True)
    second = register(client, "a2", start=True)
    client.simulate_post("/tasks/assign", json={"task_id": "t1", "agent_id": "a1"})
    grant = client.simulate_post("/locks/held/acquire", json={}, headers=bearer(first))
    assert grant.json["fencing_token"] == 1
    return first, second


def test_agent_calls_without_a_token_are_401(client, orch, two_agents):
    before = snapshot(client, orch)
    for path, body in agent_calls():
        answer = client.simulate_post(path, json=body)
        assert_problem(answer, 401, "unauthorized")
    assert snapshot(client, orch) == before


def test_agent_calls_with_another_agents_token_are_403(client, orch, two_agents):
    _, second = two_agents
    before = snapshot(client, orch)
    for path, body in agent_calls():
        answer = client.simulate_post(path, json=body, headers=bearer(second))
        body = assert_problem(answer, 403, "forbidden")
        assert "a2" in body["detail"]
    assert snapshot(client, orch) == before


@pytest.mark.parametrize("header", MALFORMED_HEADERS)
def test_agent_calls_with_a_malformed_header_are_401(client, orch, two_agents, header):
    before = snapshot(client, orch)
    for path, body in agent_calls():
        answer = client.simulate_post(path, json=body, headers={"Authorization": header})
        assert_problem(answer, 401, "unauthorized")
    assert snapshot(client, orch) == before


def test_agent_calls_with_a_token_that_is_nobodys_are_401(client, orch, two_agents):
    for path, body in agent_calls():
        answer = client.simulate_post(path, json=body, headers=bearer("not-a-token"))
        assert_problem(answer, 401, "unauthorized")


def test_agent_calls_with_their_own_token_succeed(client, two_agents):
    first, _ = two_agents
    statuses = {}
    for path, body in agent_calls():
        if path.endswith("/fail"):
            continue  # complete comes first and ends the task
        answer = client.simulate_post(path, json=body, headers=bearer(first))
        statuses[path] = answer.status_code
    assert set(statuses.values()) == {200}, statuses


def test_the_token_alone_says_who_is_calling(client, two_agents):
    first, _ = two_agents
    grant = client.simulate_post("/locks/free/acquire", json={}, headers=bearer(first))
    assert grant.status_code == 200 and grant.json["agent_id"] == "a1"


def test_a_bearer_scheme_is_case_insensitive(client, two_agents):
    first, _ = two_agents
    answer = client.simulate_post(
        "/agents/a1/heartbeat", headers={"Authorization": "bearer " + first}
    )
    assert answer.status_code == 200


# --------------------------------------------------------- the admin token


@pytest.fixture
def admin_world(admin_client):
    """``a1`` started and holding task ``t1`` and lock ``repo``; ``a2``; their tokens."""
    first = register(admin_client, "a1", start=True, headers=ADMIN)
    second = register(admin_client, "a2", headers=ADMIN)
    assigned = admin_client.simulate_post(
        "/tasks/assign", json={"task_id": "t1", "agent_id": "a1"}, headers=ADMIN
    )
    assert assigned.status_code == 200
    grant = admin_client.simulate_post("/locks/repo/acquire", json={}, headers=bearer(first))
    assert grant.status_code == 200
    return first, second


@pytest.mark.parametrize(("template", "method"), calls_with_scope(Scope.ADMIN))
def test_admin_calls_need_the_admin_token(admin_client, admin_orch, admin_world, template, method):
    first, _ = admin_world
    path = fill(template)
    body = SAMPLE_BODIES.get((template, method))
    before = snapshot(admin_client, admin_orch, ADMIN)
    anonymous = admin_client.simulate_request(method, path, json=body)
    assert_problem(anonymous, 401, "unauthorized")
    as_agent = admin_client.simulate_request(method, path, json=body, headers=bearer(first))
    assert_problem(as_agent, 403, "forbidden")
    assert snapshot(admin_client, admin_orch, ADMIN) == before
    as_admin = admin_client.simulate_request(method, path, json=body, headers=ADMIN)
    assert as_admin.status_code < 300, as_admin.text


def test_admin_calls_with_a_token_that_is_nobodys_are_401(admin_client, admin_world):
    # 401 is "missing or unknown token" (see /openapi.json); 403 is for a known
    # identity that may not do this. A wrong admin token identifies nobody.
    statuses = {}
    for template, method in route_calls(Scope.ADMIN):
        body = SAMPLE_BODIES.get((template, method))
        answer = admin_client.simulate_request(
            method, fill(template), json=body, headers=bearer("admin-secret-but-wrong")
        )
        statuses[f"{method} {template}"] = answer.status_code
    assert statuses == dict.fromkeys(statuses, 401)
    stats = admin_client.simulate_get("/stats", headers=bearer("admin-secret-but-wrong"))
    assert_problem(stats, 401, "unauthorized")


@pytest.mark.parametrize("header", MALFORMED_HEADERS)
def test_admin_calls_with_a_malformed_header_are_401(admin_client, admin_world, header):
    answer = admin_client.simulate_get("/stats", headers={"Authorization": header})
    assert_problem(answer, 401, "unauthorized")


@pytest.mark.parametrize(("template", "method"), calls_with_scope(Scope.PUBLIC))
def test_health_and_metrics_are_open(admin_client, admin_world, template, method):
    assert (template, method) in {("/health", "GET"), ("/health/ready", "GET"), ("/metrics", "GET")}
    for headers in (None, {"Authorization": "Basic YTpi"}, bearer("nobody")):
        answer = admin_client.simulate_request(method, template, headers=headers)
        assert answer.status_code == 200, answer.text


def test_an_agent_reads_its_own_tasks_but_not_anothers(admin_client, admin_world):
    first, second = admin_world
    own = admin_client.simulate_get("/agents/a1/tasks", headers=bearer(first))
    assert own.status_code == 200
    assert [t["task_id"] for t in own.json["tasks"]] == ["t1"]
    assert_problem(admin_client.simulate_get("/agents/a1/tasks", headers=bearer(second)), 403)
    assert_problem(admin_client.simulate_get("/agents/a2/tasks", headers=bearer(first)), 403)
    assert_problem(admin_client.simulate_get("/agents/a1/tasks"), 401, "unauthorized")
    assert_problem(admin_client.simulate_get("/agents/a1/tasks", headers=bearer("nobody")), 401)
    by_admin = admin_client.simulate_get("/agents/a1/tasks", headers=ADMIN)
    assert by_admin.status_code == 200 and by_admin.json["tasks"] == own.json["tasks"]


def test_agent_calls_still_take_the_agents_token(admin_client, admin_world):
    first, second = admin_world
    beat = admin_client.simulate_post("/agents/a1/heartbeat", headers=bearer(first))
    assert beat.status_code == 200 and beat.json["assignments"][0]["task_id"] == "t1"
    assert_problem(admin_client.simulate_post("/agents/a1/heartbeat", headers=bearer(second)), 403)
    assert_problem(admin_client.simulate_post("/agents/a1/heartbeat"), 401)


def test_the_admin_token_never_acts_as_an_agent(admin_client, admin_orch, admin_world):
    before = snapshot(admin_client, admin_orch, ADMIN)
    for path, body in agent_calls(fencing_token=1):
        answer = admin_client.simulate_post(path, json=body, headers=ADMIN)
        assert_problem(answer, 401, "unauthorized")
    assert snapshot(admin_client, admin_orch, ADMIN) == before


def test_tokens_never_appear_in_reads(admin_client, admin_world):
    tokens = [*admin_world, ADMIN_TOKEN]
    secrets = [*tokens, *(hash_token(t) for t in tokens)]
    reads = [fill(t) for t, method in route_calls(Scope.ADMIN) if method == "GET"]
    for path in ["/agents", "/agents/a1", "/agents/a1/tasks", "/events", "/stats", *reads]:
        answer = admin_client.simulate_get(path, headers=ADMIN)
        assert answer.status_code == 200, path
        for secret in secrets:
            assert secret not in answer.text, path
    for agent in admin_client.simulate_get("/agents", headers=ADMIN).json["agents"]:
        assert "token" not in agent and "token_hash" not in agent
    assert "token" not in admin_client.simulate_get("/agents/a1", headers=ADMIN).json


def test_without_an_admin_token_reads_and_writes_are_open(client):
    token = register(client, "a1")
    assert client.simulate_get("/stats").status_code == 200
    assert token not in client.simulate_get("/agents").text
    assert token not in client.simulate_get("/agents/a1").text
    assert "token" not in client.simulate_get("/agents/a1").json


def test_an_undeclared_method_is_405_before_any_token_is_asked_for(admin_client):
    # No responder would run, token or not: 401 would say a token could make it work.
    for method, path, allowed in [
        ("TRACE", "/health", "GET"),
        ("DELETE", "/stats", "GET"),
        ("PATCH", "/agents/a1", "DELETE, GET"),
    ]:
        answer = admin_client.simulate_request(method, path)
        assert_problem(answer, 405, "method_not_allowed")
        assert answer.headers["allow"].startswith(allowed), answer.headers
    # A declared method still needs the token.
    assert_problem(admin_client.simulate_get("/stats"), 401, "unauthorized")
