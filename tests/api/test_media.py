"""orch/http/media.py: bodies are refused by size and media type before they are read.

Every refusal is a problem (``orch/http/errors.py``) and changes nothing.
"""

import pytest

from orch.http.app import ROUTES
from orch.http.media import MAX_BODY_BYTES
from tests.api.conftest import assert_problem, bearer, register

JSON = {"Content-Type": "application/json"}


def test_a_declared_body_over_one_mebibyte_is_413_unread(client):
    headers = {**JSON, "Content-Length": str(MAX_BODY_BYTES + 1)}
    answer = client.simulate_post("/tasks/assign", body=b"{}", headers=headers)
    assert_problem(answer, 413, "payload_too_large")
    assert client.simulate_get("/tasks").json["count"] == 0


def test_every_write_route_refuses_a_body_over_one_mebibyte(client):
    token = register(client, "a1", start=True)
    client.simulate_post("/tasks/assign", json={"task_id": "t1", "agent_id": "a1"})
    before = snapshot_of(client)
    headers = {**JSON, **bearer(token), "Content-Length": str(MAX_BODY_BYTES + 1)}
    statuses = {}
    for template, resource in ROUTES:
        for method in resource.scopes:
            if method in ("POST", "PUT", "PATCH"):
                path = template.format(agent_id="a1", task_id="t1", resource="repo")
                answer = client.simulate_request(method, path, body=b"{}", headers=headers)
                statuses[f"{method} {template}"] = answer.status_code
    assert statuses == dict.fromkeys(statuses, 413)
    assert snapshot_of(client) == before


def snapshot_of(client):
    return [client.simulate_get(path).json for path in ("/agents", "/tasks", "/locks")]


def test_a_body_over_one_mebibyte_is_413(client):
    padding = "x" * MAX_BODY_BYTES
    raw = '{"payload": {"pad": "' + padding + '"}}'
    answer = client.simulate_post("/tasks/assign", body=raw, headers=JSON)
    assert_problem(answer, 413, "payload_too_large")


@pytest.mark.parametrize(
    ("content_type", "raw"),
    [
        ("text/plain", '{"task_id": "t1"}'),
        ("application/x-www-form-urlencoded", "task_id=t1"),
        ("multipart/form-data; boundary=x", "--x--"),
        ("application/xml", "<task/>"),
    ],
)
def test_a_body_that_is_not_json_is_415(client, content_type, raw):
    answer = client.simulate_post("/tasks/assign", body=raw, headers={"Content-Type": content_type})
    body = assert_problem(answer, 415, "unsupported_media_type")
    assert body["accepted"] == ["application/json"]
    assert client.simulate_get("/tasks").json["count"] == 0


@pytest.mark.parametrize(
    "content_type", ["application/json; charset=utf-8", "application/problem+json", None]
)
def test_json_media_types_are_accepted(client, content_type):
    headers = {"Content-Type": content_type} if content_type else {}
    answer = client.simulate_post("/tasks/assign", body='{"task_id": "t1"}', headers=headers)
    assert answer.status_code == 202, answer.text


def test_an_empty_body_means_an_empty_object(client):
    answer = client.simulate_post("/tasks/assign", body="", headers=JSON)
    assert answer.status_code == 202


@pytest.mark.parametrize(
    ("path", "template"),
    [
        ("/tasks/assign", '{"payload": {"deep": %s}}'),
        ("/agents/register", '{"agent_id": "a", "agent_type": "b", "metadata": {"d": %s}}'),
        ("/tasks/t1/complete", '{"result": %s}'),
    ],
    ids=["payload", "metadata", "result"],
)
def test_deeply_nested_json_is_a_client_error_not_a_crash(client, path, template):
    token = register(client, "agent", start=True)
    depth = 5_000  # 10 KB, far under the size limit
    raw = template % ("[" * depth + "]" * depth)
    answer = client.simulate_post(path, body=raw, headers={**JSON, **bearer(token)})
    assert_problem(answer, 400, "invalid")
    assert client.simulate_get("/agents").json["total"] == 1
