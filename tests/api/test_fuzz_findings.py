"""Regressions for what schema fuzzing (tests/fuzz) found: the server and its document agree.

Each test pins one disagreement between ``/openapi.json`` and what the server did: a
number the document allows refused, a limit enforced but not stated, a body marked
optional that is required, a status answered but not documented.
"""

from __future__ import annotations

import re
from typing import Any

import falcon.testing
import pytest

from orch import ManualClock, Orchestrator, Settings
from orch.http.app import ROUTES
from orch.http.openapi import build_document
from tests.api.conftest import ADMIN_TOKEN, assert_problem, bearer, build, register


def test_integral_floats_are_accepted_where_integers_are_expected(client):
    # JSON has one number type: to the document's JSON Schema, 2.0 is an integer.
    answer = client.simulate_post(
        "/tasks/assign",
        json={"task_id": 7.0, "max_attempts": 2.0, "priority": 5.0, "payload": {"x": 1.0}},
    )
    assert answer.status_code == 202, answer.text
    assert answer.json["task_id"] == 7
    task = client.simulate_get("/tasks/7").json
    assert (task["max_attempts"], task["priority"]) == (2, 5)
    assert isinstance(task["payload"]["x"], float)  # free-form values keep their numbers


def test_fractional_or_textual_numbers_are_still_refused_for_integers(client):
    fractional = client.simulate_post("/tasks/assign", json={"max_attempts": 2.5})
    assert_problem(fractional, 400, "invalid", field="max_attempts")
    textual = client.simulate_post("/tasks/assign", json={"max_attempts": "2"})
    assert_problem(textual, 400, "invalid", field="max_attempts")
    too_big = client.simulate_post("/tasks/assign", json={"priority": 11.0})
    assert_problem(too_big, 400, "invalid", field="priority")


def test_an_integral_float_fencing_token_releases_the_lease(client, agent):
    grant = client.simulate_post("/locks/repo/acquire", json={}, headers=bearer(agent)).json
    released = client.simulate_post(
        "/locks/repo/release",
        json={"fencing_token": float(grant["fencing_token"])},
        headers=bearer(agent),
    )
    assert released.status_code == 200, released.text
    assert released.json == {"resource": "repo", "status": "released"}


def _operations(document: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {
        operation["operationId"]: operation
        for item in document["paths"].values()
        for key, operation in item.items()
        if key != "parameters"
    }


@pytest.fixture
def document() -> dict[str, Any]:
    return build_document(ROUTES, "test", Settings(lock_max_ttl_s=120.0, lock_max_wait_s=5.0))


def test_bodies_with_required_fields_are_marked_required(document):
    operations = _operations(document)
    assert operations["post_AgentRegistration"]["requestBody"]["required"] is True
    assert operations["post_LockRelease"]["requestBody"]["required"] is True
    # An empty body means {}: bodies whose every field has a default may be left out.
    assert operations["post_AgentStop"]["requestBody"]["required"] is False


def test_path_parameters_state_the_id_pattern(document):
    parameter = document["paths"]["/agents/{agent_id}"]["parameters"][0]
    assert parameter["schema"]["maxLength"] == 128
    assert re.fullmatch(parameter["schema"]["pattern"], "worker-1")
    assert not re.fullmatch(parameter["schema"]["pattern"], "no spaces")


def test_lock_limits_come_from_the_settings(document):
    schemas = document["components"]["schemas"]
    assert schemas["AcquireLock"]["properties"]["ttl_s"]["maximum"] == 120.0
    assert schemas["AcquireLock"]["properties"]["wait_s"]["maximum"] == 5.0
    assert schemas["AcquireLocks"]["properties"]["wait_s"]["maximum"] == 5.0
    assert schemas["RenewLock"]["properties"]["ttl_s"]["maximum"] == 120.0
    assign = schemas["AssignTask"]["properties"]
    assert assign["timeout_s"]["anyOf"][0]["maximum"] == 7 * 86_400
    assert assign["resources"]["uniqueItems"] is True


def test_out_of_range_lock_ttl_is_the_documented_400():
    orch, client = build(Settings(lock_max_ttl_s=120.0), clock=ManualClock())
    try:
        token = client.simulate_post(
            "/agents/register", json={"agent_id": "a1", "agent_type": "t"}
        ).json["token"]
        refused = client.simulate_post(
            "/locks/repo/acquire", json={"ttl_s": 121.0}, headers=bearer(token)
        )
        assert_problem(refused, 400, "invalid", field="ttl_s")
        document = client.simulate_get("/openapi.json").json
        ttl = document["components"]["schemas"]["AcquireLock"]["properties"]["ttl_s"]
        assert ttl["maximum"] == 120.0
    finally:
        orch.stop()


def test_every_answer_is_documented_with_its_media_type(document):
    for operation_id, operation in _operations(document).items():
        responses = operation["responses"]
        for status, response in responses.items():
            media = set(response["content"])
            if (operation_id, status) == ("get_Health", "503"):
                assert media == {"application/json", "application/problem+json"}
            elif int(status) >= 400:
                assert media == {"application/problem+json"}, (operation_id, status)
            elif operation_id == "get_Metrics":
                assert "text/plain" in media
            else:
                assert media == {"application/json"}, (operation_id, status)
        if "security" in operation:
            assert {"401", "403", "429"} <= set(responses), operation_id
        if "requestBody" in operation:
            assert {"400", "413", "415"} <= set(responses), operation_id


def test_admin_calls_require_the_token_only_when_one_is_set():
    open_document = build_document(ROUTES, "test", Settings())
    guarded = build_document(ROUTES, "test", Settings(admin_token=ADMIN_TOKEN))
    assert _operations(open_document)["get_Stats"]["security"] == [{"adminToken": []}, {}]
    assert _operations(guarded)["get_Stats"]["security"] == [{"adminToken": []}]
    assert _operations(guarded)["get_AgentTasks"]["security"] == [
        {"adminToken": []},
        {"agentToken": []},
    ]


def test_links_name_existing_operations_and_parameters(document):
    operations = _operations(document)
    links = [
        link
        for operation in operations.values()
        for response in operation["responses"].values()
        for link in response.get("links", {}).values()
    ]
    assert len(links) >= 20
    paths = {
        operation["operationId"]: template
        for template, item in document["paths"].items()
        for key, operation in item.items()
        if key != "parameters"
    }
    for link in links:
        path = paths[link["operationId"]]
        for name in link.get("parameters", {}):
            location, _, bare = name.rpartition(".")
            assert location == "header" or "{" + bare + "}" in path, (link, path)


def test_the_served_document_is_the_one_built_for_the_settings(
    admin_orch: Orchestrator, admin_client: falcon.testing.TestClient
):
    served = admin_client.simulate_get("/openapi.json", headers=bearer(ADMIN_TOKEN)).json
    built = build_document(ROUTES, served["info"]["version"], admin_orch.settings)
    assert served == built


def test_the_document_says_a_multi_lock_names_each_resource_once(client):
    # schemathesis --checks all (ST202) sent the same {"resource": "0"} 31 times, which
    # the document allowed and the server refused.
    document = client.simulate_get("/openapi.json").json
    resources = document["components"]["schemas"]["AcquireLocks"]["properties"]["resources"]
    assert resources["uniqueItems"] is True
    token = register(client, "a1", start=True)
    twice = {"resources": [{"resource": "r"}, {"resource": "r"}]}
    answer = client.simulate_post("/locks/acquire", json=twice, headers=bearer(token))
    assert_problem(answer, 400, "invalid", "resources")


def test_the_document_states_the_largest_event_seq_the_server_takes(client):
    # ST202: GET /events?after=273291305533032858910720 was refused, the document
    # having no maximum.
    document = client.simulate_get("/openapi.json").json
    [after] = [p for p in document["paths"]["/events"]["get"]["parameters"] if p["name"] == "after"]
    assert after["schema"]["maximum"] == 2**63 - 1
    assert client.simulate_get("/events", params={"after": 2**63 - 1}).status_code == 200
    assert_problem(client.simulate_get("/events", params={"after": 2**63}), 400, "invalid", "after")
