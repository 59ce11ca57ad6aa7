"""orch/http/errors.py: every failure is an RFC 9457 problem: validation, routing, 503s.

How bodies are read (size, media type, nesting) is in ``test_media.py``.
"""

import threading

import pytest

from orch import Settings, Timeout
from orch.store import MemoryStore
from tests.api.conftest import assert_problem, bearer, build, differences, register, snapshot
from tests.conftest import wait_until

JSON = {"Content-Type": "application/json"}


def test_malformed_json_is_400_naming_the_body(client):
    for raw in ("{bad", '{"agent_id": "a1",', '{"a": tru}', "{'single': 1}"):
        answer = client.simulate_post("/agents/register", body=raw, headers=JSON)
        body = assert_problem(answer, 400, "invalid", "body")
        assert "JSON" in body["detail"]


@pytest.mark.parametrize("raw", ["[]", '"text"', "42", "null", "true"])
def test_json_that_is_not_an_object_is_400(client, raw):
    answer = client.simulate_post("/tasks/assign", body=raw, headers=JSON)
    assert_problem(answer, 400, "invalid", "body")
    assert client.simulate_get("/tasks").json["count"] == 0


def test_a_wrong_type_is_400_naming_the_field(client):
    answer = client.simulate_post("/tasks/assign", json={"priority": "high"})
    body = assert_problem(answer, 400, "invalid", "priority")
    assert "priority" in body["detail"]


def test_out_of_range_is_400_naming_the_field(client):
    assert_problem(
        client.simulate_post("/tasks/assign", json={"priority": 11}), 400, "invalid", "priority"
    )
    assert client.simulate_post("/tasks/assign", json={"priority": 10}).status_code == 202


def test_a_missing_required_field_is_400_naming_it(client):
    token = register(client, "a1")
    assert_problem(
        client.simulate_post("/agents/register", json={"agent_id": "a2"}),
        400,
        "invalid",
        "agent_type",
    )
    assert_problem(
        client.simulate_post("/tasks/t1/fail", json={}, headers=bearer(token)),
        400,
        "invalid",
        "error",
    )
    assert_problem(
        client.simulate_post("/locks/r/renew", json={}, headers=bearer(token)),
        400,
        "invalid",
        "fencing_token",
    )
    nested = client.simulate_post(
        "/locks/acquire", json={"resources": [{"resource": "a"}, {}]}, headers=bearer(token)
    )
    assert_problem(nested, 400, "invalid", "resources[1].resource")


def test_bad_ids_are_400_in_bodies_and_paths(client):
    for bad in ("has spaces", "a" * 129, "", "slash/inside", "ünïcode"):
        answer = client.simulate_post(
            "/agents/register", json={"agent_id": bad, "agent_type": "implementation"}
        )
        assert_problem(answer, 400, "invalid", "agent_id")
    assert_problem(client.simulate_get("/agents/has%20spaces"), 400, "invalid", "agent_id")
    assert_problem(client.simulate_get("/agents/" + "a" * 129), 400, "invalid", "agent_id")
    assert_problem(client.simulate_post("/agents/has%20spaces/start"), 400, "invalid", "agent_id")
    assert_problem(client.simulate_get("/tasks/has%20spaces"), 400, "invalid", "task_id")
    assert client.simulate_get("/agents").json["total"] == 0


def test_an_unknown_route_is_a_404_problem(client):
    body = assert_problem(client.simulate_get("/nowhere"), 404, "not_found")
    assert "/nowhere" in body["detail"]
    assert_problem(client.simulate_post("/agents/a1/explode", json={}), 404, "not_found")


def test_a_wrong_method_is_a_405_problem(client):
    answer = client.simulate_delete("/stats")
    body = assert_problem(answer, 405, "method_not_allowed")
    assert "DELETE" in body["detail"]
    assert "GET" in answer.headers["allow"]
    assert_problem(client.simulate_get("/tasks/assign"), 405, "method_not_allowed")
    assert_problem(client.simulate_put("/agents/register", json={}), 405, "method_not_allowed")


def test_a_facade_timeout_is_503_with_retry_after(client, orch, monkeypatch):
    def slow_stats():
        raise Timeout("the orchestrator did not answer within 5s")

    monkeypatch.setattr(orch, "stats", slow_stats)
    answer = client.simulate_get("/stats")
    assert_problem(answer, 503, "timeout")
    assert answer.headers["retry-after"] == "1"


class GatedStore(MemoryStore):
    """A store whose credential writes wait for ``gate``: an actor stuck on slow I/O."""

    def __init__(self) -> None:
        super().__init__()
        self.gate = threading.Event()
        self.gate.set()

    def put_credential(self, agent_id: str, token_hash: str) -> None:
        self.gate.wait(10)
        super().put_credential(agent_id, token_hash)

    def register_agent_nowait(self, record, token_hash):  # registration writes both at once
        self.gate.wait(10)
        return super().register_agent_nowait(record, token_hash)


def test_a_slow_actor_makes_the_call_503_with_retry_after():
    store = GatedStore()
    orch, client = build(Settings(heartbeat_interval_s=1.0, ask_timeout_s=0.2), store=store)
    try:
        store.gate.clear()
        answer = client.simulate_post(
            "/agents/register", json={"agent_id": "a1", "agent_type": "implementation"}
        )
        body = assert_problem(answer, 503, "timeout")
        assert "0.2" in body["detail"]
        assert answer.headers["retry-after"] == "1"
        store.gate.set()
        wait_until(lambda: client.simulate_get("/stats").status_code == 200)
        assert client.simulate_get("/health").json["status"] == "healthy"
    finally:
        store.gate.set()
        orch.stop()


def test_an_unexpected_error_is_a_500_problem_without_internals(client, orch, monkeypatch):
    def broken_stats():
        raise RuntimeError("secret internals /etc/passwd")

    monkeypatch.setattr(orch, "stats", broken_stats)
    answer = client.simulate_get("/stats")
    body = assert_problem(answer, 500, "internal")
    assert "secret" not in answer.text and "passwd" not in body["detail"]


def write_requests(token):
    """One of each write, with a body that would succeed on a healthy store."""
    return [
        ("POST", "/agents/register", {"agent_id": "new", "agent_type": "implementation"}, None),
        ("POST", "/agents/idle/start", None, None),
        ("POST", "/agents/a1/stop", {"drain": True}, None),
        ("DELETE", "/agents/idle", None, None),
        ("POST", "/tasks/assign", {"task_id": "queued-2", "agent_type": "nobody"}, None),
        ("POST", "/tasks/assign", {"task_id": "direct"}, None),
        ("POST", "/tasks/queued/cancel", None, None),
        ("POST", "/tasks/held/complete", {}, token),
        ("POST", "/tasks/held/fail", {"error": "x"}, token),
        ("POST", "/locks/repo/acquire", {}, token),
        ("POST", "/locks/acquire", {"resources": [{"resource": "x"}]}, token),
        ("POST", "/locks/held-lock/renew", {"fencing_token": 1}, token),
        ("POST", "/locks/held-lock/release", {"fencing_token": 1}, token),
        ("PATCH", "/agents/a1/config", {"max_concurrent_tasks": 2}, None),
        ("PUT", "/agents/a1/config", {}, None),
        ("PUT", "/config/defaults", {"task_timeout_s": 5}, None),
    ]


def test_a_failing_store_is_503_and_changes_nothing(client, orch, store):
    token = register(client, "a1", start=True)
    register(client, "idle")
    client.simulate_post("/tasks/assign", json={"task_id": "held", "agent_id": "a1"})
    client.simulate_post("/tasks/assign", json={"task_id": "queued", "agent_type": "nobody"})
    client.simulate_post("/locks/held-lock/acquire", json={}, headers=bearer(token))
    wait_until(lambda: client.simulate_get("/agents/a1").json["status"] == "busy")
    defaults = client.simulate_get("/config/defaults").json
    store.fail_writes = "disk full"
    changed = []
    for method, path, body, agent_token in write_requests(token):
        before = snapshot(client, orch)
        headers = bearer(agent_token) if agent_token else None
        answer = client.simulate_request(method, path, json=body, headers=headers)
        problem = assert_problem(answer, 503, "store_unavailable")
        assert "disk full" in problem["detail"], (method, path)
        assert answer.headers["retry-after"] == "1"
        after = snapshot(client, orch)
        if after != before:
            changed.append((method, path, differences(before, after)))
    assert changed == []
    assert client.simulate_get("/config/defaults").json == defaults
    store.fail_writes = None
    # And the orchestrator carries on once the store is back.
    done = client.simulate_post("/tasks/held/complete", json={}, headers=bearer(token))
    assert done.status_code == 200
    assert client.simulate_get("/stats").json["total_tasks_completed"] == 1


def test_a_stop_refused_by_the_store_leaves_the_agent_working(client, orch, store):
    token = register(client, "a1", start=True)
    client.simulate_post("/tasks/assign", json={"task_id": "t1", "agent_id": "a1"})
    store.fail_writes = "disk full"
    answer = client.simulate_post("/agents/a1/stop", json={"drain": False})
    assert_problem(answer, 503, "store_unavailable")
    # Let whatever the refused stop set in motion run while the store is still down.
    snapshot(client, orch)
    store.fail_writes = None
    assert client.simulate_get("/agents/a1").json["status"] == "busy"
    beat = client.simulate_post("/agents/a1/heartbeat", headers=bearer(token)).json
    assert [a["task_id"] for a in beat["assignments"]] == ["t1"]
    assert (
        client.simulate_post("/tasks/t1/complete", json={}, headers=bearer(token)).status_code
        == 200
    )
    again = client.simulate_post("/tasks/assign", json={"task_id": "t2", "agent_id": "a1"})
    assert again.status_code == 200, again.text
