"""Agent configuration over HTTP: versions as ETags, If-Match, PATCH/PUT and defaults."""

import pytest

from tests.api.conftest import assert_problem, bearer, register
from tests.conftest import wait_until

CONFIG_KEYS = {
    "version",
    "max_concurrent_tasks",
    "heartbeat_interval_s",
    "task_timeout_s",
    "auto_restart",
    "resource_limits",
    "settings",
}


def test_get_config_carries_its_version_as_etag(client):
    register(client, "a1")
    answer = client.simulate_get("/agents/a1/config")
    assert answer.status_code == 200
    assert answer.json.keys() == CONFIG_KEYS
    assert answer.json["version"] == 1
    assert answer.json["heartbeat_interval_s"] == 1.0  # from Settings
    assert answer.headers["etag"] == '"1"'


def test_patch_changes_one_field_and_bumps_the_version(client):
    register(client, "a1")
    patched = client.simulate_patch(
        "/agents/a1/config", json={"max_concurrent_tasks": 3, "settings": {"model": "x"}}
    )
    assert patched.status_code == 200
    assert patched.json["version"] == 2
    assert patched.json["max_concurrent_tasks"] == 3
    assert patched.json["settings"] == {"model": "x"}
    assert patched.headers["etag"] == '"2"'
    again = client.simulate_patch("/agents/a1/config", json={"auto_restart": False}).json
    assert again["version"] == 3
    assert again["max_concurrent_tasks"] == 3 and again["auto_restart"] is False
    current = client.simulate_get("/agents/a1/config")
    assert current.json == again and current.headers["etag"] == '"3"'
    assert client.simulate_get("/agents/a1").json["config"]["version"] == 3


def test_if_match_guards_against_lost_updates(client):
    register(client, "a1")
    etag = client.simulate_get("/agents/a1/config").headers["etag"]
    first = client.simulate_patch(
        "/agents/a1/config", json={"task_timeout_s": 60}, headers={"If-Match": etag}
    )
    assert first.status_code == 200 and first.json["version"] == 2
    late = client.simulate_patch(
        "/agents/a1/config", json={"task_timeout_s": 90}, headers={"If-Match": etag}
    )
    body = assert_problem(late, 412, "version_mismatch")
    assert body["version"] == 2
    assert client.simulate_get("/agents/a1/config").json["task_timeout_s"] == 60
    put_late = client.simulate_put("/agents/a1/config", json={}, headers={"If-Match": etag})
    assert_problem(put_late, 412, "version_mismatch")


@pytest.mark.parametrize("header", ['"1"', 'W/"1"', "*"])
def test_if_match_forms_that_match(client, header):
    register(client, "a1")
    answer = client.simulate_patch(
        "/agents/a1/config", json={"max_concurrent_tasks": 2}, headers={"If-Match": header}
    )
    assert answer.status_code == 200 and answer.json["version"] == 2


@pytest.mark.parametrize(
    "header",
    ["abc", '"1", "2"', '"0"', '"-1"', '"1.0"', '"²"', '"¹"'],
    ids=["word", "two-etags", "zero", "negative", "decimal", "superscript-2", "superscript-1"],
)
def test_a_malformed_if_match_is_400(client, header):
    register(client, "a1")
    answer = client.simulate_patch(
        "/agents/a1/config", json={"max_concurrent_tasks": 2}, headers={"If-Match": header}
    )
    assert_problem(answer, 400, "invalid", "If-Match")
    assert client.simulate_get("/agents/a1/config").json["version"] == 1


def test_put_resets_fields_not_sent_to_the_defaults(client):
    register(client, "a1")
    client.simulate_patch(
        "/agents/a1/config",
        json={"max_concurrent_tasks": 5, "auto_restart": False, "settings": {"k": 1}},
    )
    replaced = client.simulate_put("/agents/a1/config", json={"task_timeout_s": 120})
    assert replaced.status_code == 200
    body = replaced.json
    assert body["version"] == 3
    assert body["task_timeout_s"] == 120
    assert body["max_concurrent_tasks"] == 1
    assert body["auto_restart"] is True
    assert body["settings"] == {}
    assert body["heartbeat_interval_s"] == 1.0
    assert replaced.headers["etag"] == '"3"'


def test_an_unknown_field_is_400_naming_it(client):
    register(client, "a1")
    for method in ("PATCH", "PUT"):
        answer = client.simulate_request(
            method, "/agents/a1/config", json={"max_concurent_tasks": 3}
        )
        body = assert_problem(answer, 400, "invalid", "max_concurent_tasks")
        assert "max_concurent_tasks" in body["detail"]
    assert client.simulate_get("/agents/a1/config").json["version"] == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"max_concurrent_tasks": 0}, "max_concurrent_tasks"),
        ({"max_concurrent_tasks": "2"}, "max_concurrent_tasks"),
        ({"heartbeat_interval_s": 0.05}, "heartbeat_interval_s"),
        ({"task_timeout_s": 0}, "task_timeout_s"),
        ({"auto_restart": "yes"}, "auto_restart"),
        ({"resource_limits": [1]}, "resource_limits"),
        ({"settings": "x"}, "settings"),
    ],
)
def test_bad_values_are_400_naming_the_field(client, body, field):
    register(client, "a1")
    assert_problem(client.simulate_patch("/agents/a1/config", json=body), 400, "invalid", field)
    assert_problem(client.simulate_put("/config/defaults", json=body), 400, "invalid", field)
    assert client.simulate_get("/agents/a1/config").json["version"] == 1


def test_config_of_an_unknown_agent_is_404(client):
    assert_problem(client.simulate_get("/agents/ghost/config"), 404, "not_found")
    assert_problem(client.simulate_patch("/agents/ghost/config", json={}), 404, "not_found")
    assert_problem(client.simulate_put("/agents/ghost/config", json={}), 404, "not_found")


def test_the_heartbeat_carries_the_config_version(client):
    token = register(client, "a1", start=True)
    client.simulate_patch("/agents/a1/config", json={"heartbeat_interval_s": 5})
    beat = client.simulate_post("/agents/a1/heartbeat", headers=bearer(token)).json
    assert beat["config_version"] == 2 and beat["heartbeat_interval_s"] == 5


def test_more_slots_let_an_agent_take_more_tasks(client):
    register(client, "a1", start=True)
    client.simulate_post("/tasks/assign", json={"task_id": "t1", "agent_id": "a1"})
    assert client.simulate_post("/tasks/assign", json={"task_id": "t2"}).status_code == 202
    client.simulate_patch("/agents/a1/config", json={"max_concurrent_tasks": 2})
    wait_until(
        lambda: len(client.simulate_get("/agents/a1/tasks").json["tasks"]) == 2,
        message="second task assigned after the slot count grew",
    )


def test_defaults_apply_to_agents_registered_afterwards(client):
    register(client, "before")
    defaults = client.simulate_get("/config/defaults")
    assert defaults.status_code == 200
    assert defaults.json["max_concurrent_tasks"] == 1
    assert defaults.json["heartbeat_interval_s"] == 1.0
    changed = client.simulate_put(
        "/config/defaults", json={"max_concurrent_tasks": 4, "settings": {"tier": "gold"}}
    )
    assert changed.status_code == 200
    assert changed.json["max_concurrent_tasks"] == 4
    assert changed.json["settings"] == {"tier": "gold"}
    # Fields not sent are kept (the defaults change field by field).
    client.simulate_put("/config/defaults", json={"task_timeout_s": 99})
    current = client.simulate_get("/config/defaults").json
    assert current["max_concurrent_tasks"] == 4 and current["task_timeout_s"] == 99
    register(client, "after")
    after = client.simulate_get("/agents/after/config").json
    assert after["max_concurrent_tasks"] == 4 and after["task_timeout_s"] == 99
    assert after["settings"] == {"tier": "gold"} and after["version"] == 1
    before = client.simulate_get("/agents/before/config").json
    assert before["max_concurrent_tasks"] == 1 and before["version"] == 1
    # PUT on an agent resets to the *current* defaults.
    reset = client.simulate_put("/agents/before/config", json={}).json
    assert reset["max_concurrent_tasks"] == 4 and reset["task_timeout_s"] == 99


def test_defaults_refuse_an_unknown_field(client):
    answer = client.simulate_put("/config/defaults", json={"colour": "blue"})
    assert_problem(answer, 400, "invalid", "colour")
    assert "colour" not in client.simulate_get("/config/defaults").json
