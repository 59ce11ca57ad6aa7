"""Ids and names are validated everywhere: path parameters, body fields, query filters.

An id is 1-128 letters, digits or ``._:-`` and not only dots. Everything else — path
tricks (``..``, encoded ``/`` or ``\\``), control characters, over-long ids — is refused
with a 400 problem naming the field, before authentication or any responder runs,
and changes nothing.
"""

from __future__ import annotations

import re

import pytest

from orch.http.app import ROUTES
from tests.api.conftest import assert_problem, bearer, register, snapshot
from tests.security.conftest import ADMIN_TOKEN, AppFactory

ADMIN = bearer(ADMIN_TOKEN)

#: Bad values for a path segment, as sent (percent-encoded), and the field blamed.
BAD_SEGMENTS = {
    "dot-dot": ("..", None),
    "dot": (".", None),
    "encoded-dot-dot": ("%2E%2E", None),
    "encoded-slash": ("a%2Fb", "path"),
    "encoded-slash-lower": ("a%2fstart", "path"),
    "encoded-backslash": ("a%5Cb", "path"),
    "nul": ("a%00b", None),
    "newline": ("a%0Ab", None),
    "escape": ("a%1Bb", None),
    "delete": ("a%7Fb", None),
    "space": ("a%20b", None),
    "double-encoded-slash": ("a%252Fb", None),
    "too-long": ("x" * 129, None),
    "far-too-long": ("x" * 8000, None),
}

PARAMETERISED = [
    (template, method)
    for template, resource in ROUTES
    if "{" in template
    for method in resource.scopes
]


@pytest.mark.parametrize(("template", "method"), PARAMETERISED)
def test_bad_ids_in_paths_are_refused_naming_the_parameter(
    make_app: AppFactory, template: str, method: str
) -> None:
    orch, client = make_app()
    token = register(client, "a1", start=True, headers=ADMIN)
    before = snapshot(client, orch, ADMIN)
    match = re.search(r"{(\w+)}", template)
    assert match is not None
    parameter = match.group(1)
    for case, (segment, blamed) in BAD_SEGMENTS.items():
        path = template.replace("{" + parameter + "}", segment)
        for headers in (ADMIN, bearer(token), None):
            answer = client.simulate_request(method, path, json={}, headers=headers)
            problem = assert_problem(answer, 400, "invalid")
            assert problem["field"] == (blamed or parameter), (case, problem)
    assert snapshot(client, orch, ADMIN) == before


def test_an_encoded_slash_cannot_reroute_a_request(make_app: AppFactory) -> None:
    # Decoded, /agents/a1%2Fstart would be /agents/a1/start: a different endpoint.
    orch, client = make_app()
    register(client, "a1", headers=ADMIN)
    answer = client.simulate_delete("/agents/a1%2Fstart", headers=ADMIN)
    assert_problem(answer, 400, "invalid", field="path")
    assert orch.agent("a1")["status"] == "registered"


BAD_IDS = ["..", ".", "a/b", "a\\b", "a\nb", "ab\n", "a\x00b", "a b", "é", "", "x" * 129]

REGISTER = {"agent_id": "n1", "agent_type": "impl"}

#: (path, body builder, field) for every body field that holds an id.
BODY_FIELDS = [
    ("/agents/register", lambda v: {**REGISTER, "agent_id": v}, "agent_id"),
    ("/agents/register", lambda v: {**REGISTER, "agent_type": v}, "agent_type"),
    ("/agents/register", lambda v: {**REGISTER, "project_id": v}, "project_id"),
    ("/agents/register", lambda v: {**REGISTER, "capabilities": ["ok", v]}, "capabilities"),
    ("/tasks/assign", lambda v: {"task_id": v}, "task_id"),
    ("/tasks/assign", lambda v: {"agent_id": v}, "agent_id"),
    ("/tasks/assign", lambda v: {"agent_type": v}, "agent_type"),
    ("/tasks/assign", lambda v: {"capabilities": [v]}, "capabilities"),
    ("/tasks/assign", lambda v: {"resources": [v]}, "resources"),
]

AGENT_BODY_FIELDS = [
    ("/locks/acquire", lambda v: {"resources": [{"resource": v}]}, "resources"),
    ("/locks/repo/acquire", lambda v: {"agent_id": v}, "agent_id"),
    ("/tasks/t1/complete", lambda v: {"agent_id": v}, "agent_id"),
    ("/tasks/t1/fail", lambda v: {"agent_id": v, "error": "x"}, "agent_id"),
    ("/locks/repo/release", lambda v: {"agent_id": v, "fencing_token": 1}, "agent_id"),
]


def _blames(body: dict, field: str) -> bool:
    named = body.get("field", "")
    return named == field or named.startswith((field + "[", field + "."))


@pytest.mark.parametrize("value", BAD_IDS, ids=repr)
def test_bad_ids_in_bodies_are_refused_naming_the_field(make_app: AppFactory, value: str) -> None:
    orch, client = make_app()
    token = register(client, "a1", start=True, headers=ADMIN)
    client.simulate_post("/tasks/assign", json={"task_id": "t1", "agent_id": "a1"}, headers=ADMIN)
    before = snapshot(client, orch, ADMIN)
    calls = [(p, b, f, ADMIN) for p, b, f in BODY_FIELDS]
    calls += [(p, b, f, bearer(token)) for p, b, f in AGENT_BODY_FIELDS]
    for path, body, field, headers in calls:
        answer = client.simulate_post(path, json=body(value), headers=headers)
        problem = assert_problem(answer, 400, "invalid")
        assert _blames(problem, field), (path, field, problem)
    assert snapshot(client, orch, ADMIN) == before


@pytest.mark.parametrize(
    ("path", "field"),
    [
        ("/agents?capability=a/b", "capability"),
        ("/agents?agent_type=..", "agent_type"),
        ("/agents?status=nonsense", "status"),
        ("/tasks?agent_id=a%0Ab", "agent_id"),
        ("/tasks?status=..", "status"),
        ("/agents?limit=-1", "limit"),
        ("/events?after=-1", "after"),
    ],
)
def test_bad_query_filters_are_refused_naming_the_parameter(
    make_app: AppFactory, path: str, field: str
) -> None:
    _, client = make_app()
    assert_problem(client.simulate_get(path, headers=ADMIN), 400, "invalid", field=field)


def test_a_valid_id_of_128_characters_with_every_allowed_character_is_accepted(
    make_app: AppFactory,
) -> None:
    orch, client = make_app()
    agent_id = ("Az09._:-" * 16)[:128]
    register(client, agent_id, headers=ADMIN)
    assert client.simulate_get(f"/agents/{agent_id}", headers=ADMIN).status_code == 200
    assert orch.agent(agent_id)["agent_id"] == agent_id
