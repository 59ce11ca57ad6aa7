"""Property test: no body makes a write answer 5xx, and a refused write changes nothing.

Every POST/PUT/PATCH route gets arbitrary JSON: objects with arbitrary keys, objects
with the real field names mapped to arbitrary values, and JSON that is not an object;
path parameters name an existing agent, task or resource or a random one; calls go
with the agent's token, another agent's, a token that is nobody's, or none.
"""

from __future__ import annotations

import json
import urllib.parse
from typing import Any

import falcon.testing
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from orch import Orchestrator
from orch.http.app import ROUTES
from tests.api.conftest import bearer, differences, register, snapshot

WRITE_METHODS = ("POST", "PUT", "PATCH")
EXISTING = {"agent_id": "a1", "task_id": "t1", "resource": "repo"}
KNOWN_NAMES = ["a1", "a2", "t1", "repo", "exclusive", "shared", "implementation", "code"]

ids = st.sampled_from(KNOWN_NAMES) | st.from_regex(r"[A-Za-z0-9._:-]{1,12}", fullmatch=True)
scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=16)
    | ids
)
json_values = st.recursive(
    scalars,
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(st.text(max_size=8) | ids, children, max_size=4)
    ),
    max_leaves=12,
)


def _not_a_positive_number(value: Any) -> bool:
    # A positive wait_s on a contested lock waits in real time (tested in test_locks);
    # on a ManualClock nothing would end the wait but the ask time-out.
    return isinstance(value, bool) or not isinstance(value, int | float) or value <= 0


lock_requests = st.lists(
    st.fixed_dictionaries({}, optional={"resource": ids | json_values, "mode": ids | json_values}),
    max_size=4,
)


def field_values(name: str) -> st.SearchStrategy[Any]:
    """Arbitrary values for a real field, biased towards ones that might be accepted."""
    if name == "wait_s":
        return json_values.filter(_not_a_positive_number)
    if name == "resources":
        return lock_requests | st.lists(ids, max_size=4) | json_values
    if name in ("capabilities",):
        return st.lists(ids, max_size=4) | json_values
    return ids | json_values


config_changes = st.fixed_dictionaries(
    {},
    optional={
        "max_concurrent_tasks": st.integers(1, 4),
        "task_timeout_s": st.floats(1, 100),
        "auto_restart": st.booleans(),
        "settings": st.dictionaries(ids, scalars, max_size=2),
    },
)

#: Bodies that may well be accepted, per route and method; the fuzz mutates them.
VALID_BODIES: dict[tuple[str, str], st.SearchStrategy[dict[str, Any]]] = {
    ("/agents/register", "POST"): st.fixed_dictionaries(
        {"agent_id": ids, "agent_type": st.just("implementation")},
        optional={"capabilities": st.lists(ids, max_size=3), "max_concurrent_tasks": st.just(2)},
    ),
    ("/agents/{agent_id}/stop", "POST"): st.fixed_dictionaries(
        {}, optional={"drain": st.booleans()}
    ),
    ("/agents/{agent_id}/config", "PUT"): config_changes,
    ("/agents/{agent_id}/config", "PATCH"): config_changes,
    ("/config/defaults", "PUT"): config_changes,
    ("/tasks/assign", "POST"): st.fixed_dictionaries(
        {},
        optional={
            "task_id": ids | st.integers(),
            "agent_id": st.sampled_from(["a1", "a2"]),
            "priority": st.integers(0, 10),
            "capabilities": st.lists(ids, max_size=2),
            "resources": st.lists(ids, max_size=2, unique=True),
            "payload": st.dictionaries(ids, json_values, max_size=3),
            "force": st.booleans(),
        },
    ),
    ("/tasks/{task_id}/complete", "POST"): st.fixed_dictionaries(
        {}, optional={"result": json_values, "agent_id": st.just("a1")}
    ),
    ("/tasks/{task_id}/fail", "POST"): st.fixed_dictionaries(
        {"error": st.text(min_size=1, max_size=20)}, optional={"retryable": st.booleans()}
    ),
    ("/tasks/{task_id}/progress", "POST"): st.fixed_dictionaries(
        {"message": st.text(min_size=1, max_size=40)},
        optional={"percent": st.floats(0, 100), "agent_id": st.just("a1")},
    ),
    ("/locks/acquire", "POST"): st.fixed_dictionaries(
        {
            "resources": st.lists(
                st.fixed_dictionaries(
                    {"resource": ids}, optional={"mode": st.sampled_from(["exclusive", "shared"])}
                ),
                min_size=1,
                max_size=3,
                unique_by=lambda r: r["resource"],
            )
        },
        optional={"ttl_s": st.floats(0.5, 100)},
    ),
    ("/locks/{resource}/acquire", "POST"): st.fixed_dictionaries(
        {},
        optional={"mode": st.sampled_from(["exclusive", "shared"]), "ttl_s": st.floats(0.5, 100)},
    ),
    ("/locks/{resource}/renew", "POST"): st.fixed_dictionaries(
        {"fencing_token": st.integers(1, 3)}, optional={"ttl_s": st.floats(0.5, 100)}
    ),
    ("/locks/{resource}/release", "POST"): st.fixed_dictionaries(
        {"fencing_token": st.integers(1, 3)}
    ),
}


@st.composite
def mutated(draw: st.DrawFn, valid: st.SearchStrategy[dict[str, Any]], fields: tuple[str, ...]):
    """A plausible body with a field or two replaced, dropped or added."""
    body = dict(draw(valid))
    for name in draw(st.lists(st.sampled_from(fields), max_size=2)) if fields else ():
        if draw(st.booleans()):
            body[name] = draw(field_values(name))
        else:
            body.pop(name, None)
    if draw(st.booleans()):
        body[draw(st.text(max_size=8))] = draw(json_values)
    return body


def bodies(template: str, method: str, fields: tuple[str, ...]) -> st.SearchStrategy[Any]:
    real_names = st.fixed_dictionaries({}, optional={f: field_values(f) for f in fields})
    arbitrary_keys = st.dictionaries(st.text(max_size=12), json_values, max_size=5)
    valid = VALID_BODIES.get((template, method), st.just({}))
    return valid | mutated(valid, fields) | real_names | arbitrary_keys | json_values


def write_routes() -> list[Any]:
    return [
        pytest.param(
            template,
            method,
            tuple(body.__struct_fields__) if (body := resource.bodies.get(method)) else (),
            id=f"{method} {template}",
        )
        for template, resource in ROUTES
        for method in resource.scopes
        if method in WRITE_METHODS
    ]


def path_values(name: str) -> st.SearchStrategy[str]:
    """Mostly the existing agent, task or resource; else a known name, an id or any text."""
    return st.one_of(
        st.just(EXISTING[name]), st.sampled_from(KNOWN_NAMES), ids, st.text(max_size=20)
    )


# Printable ASCII: non-ASCII digits in If-Match have their own test in test_config.
if_match_headers = (
    st.none()
    | st.sampled_from(['"1"', '"2"', "*", 'W/"1"'])
    | st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0x7E), max_size=6)
)


@pytest.fixture
def world(client: falcon.testing.TestClient) -> dict[str, str]:
    """``a1`` holding task ``t1`` and lock ``repo``, and ``a2``: the fuzz's tokens."""
    tokens = {
        "own": register(client, "a1", start=True),
        "other": register(client, "a2", start=True),
        "nobody's": "not-a-token",
    }
    client.simulate_post("/tasks/assign", json={"task_id": "t1", "agent_id": "a1"})
    client.simulate_post("/locks/repo/acquire", json={}, headers=bearer(tokens["own"]))
    return tokens


@pytest.mark.parametrize(("template", "method", "fields"), write_routes())
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
@given(data=st.data())
def test_arbitrary_bodies_never_crash_and_refusals_change_nothing(
    client: falcon.testing.TestClient,
    orch: Orchestrator,
    world: dict[str, str],
    template: str,
    method: str,
    fields: tuple[str, ...],
    data: st.DataObject,
) -> None:
    params = {
        name: data.draw(path_values(name), label=name)
        for name in ("agent_id", "task_id", "resource")
        if "{" + name + "}" in template
    }
    path = template.format(**{k: urllib.parse.quote(v, safe="") for k, v in params.items()})
    body = data.draw(bodies(template, method, fields), label="body")
    who = data.draw(st.sampled_from(["own", None, "other", "nobody's"]), label="token")
    headers = {"Content-Type": "application/json"}
    if who is not None:
        headers.update(bearer(world[who]))
    if template.endswith("/config") and (etag := data.draw(if_match_headers, label="If-Match")):
        headers["If-Match"] = etag

    before = snapshot(client, orch)
    answer = client.simulate_request(method, path, body=json.dumps(body), headers=headers)

    event(f"status {answer.status_code}")
    assert answer.status_code < 500, (method, path, body, answer.text)
    if 400 <= answer.status_code < 500:
        assert answer.headers["content-type"] == "application/problem+json"
        assert differences(before, snapshot(client, orch)) == {}, (method, path, body, answer.text)
