"""``Idempotency-Key`` over the app (falcon.testing): a retried write is applied once.

The same key and request answer the first answer again, byte for byte, and apply
nothing; another request under the key is 422; a retry that overtakes its original
is 409; keys are per credential, expire, and a bad one is 400 naming the header.
"""

from __future__ import annotations

import threading

import falcon.testing
import pytest

from orch import ManualClock, Orchestrator, Settings
from orch.errors import StoreError
from orch.http.app import create_app
from orch.http.idempotency import REPLAYED_HEADER
from orch.idempotency import key_digest
from orch.model import IdempotentAnswer
from orch.store import MemoryStore
from tests.api.conftest import assert_problem, bearer, register
from tests.conftest import wait_until

KEY = "Idempotency-Key"


def keyed(key: str, **headers: str) -> dict[str, str]:
    return {KEY: key, **headers}


def task_count(client: falcon.testing.TestClient) -> int:
    return len(client.simulate_get("/tasks").json["tasks"])


def metric(client: falcon.testing.TestClient, name: str) -> float:
    for line in client.simulate_get("/metrics").text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def test_a_retry_gets_the_first_answer_byte_for_byte_and_creates_one_task(client):
    body = {"capabilities": ["nobody-has-this"], "payload": {"n": 1}}
    first = client.simulate_post("/tasks/assign", json=body, headers=keyed("k-1"))
    assert first.status_code == 202, first.text
    assert REPLAYED_HEADER.lower() not in {name.lower() for name in first.headers}
    again = client.simulate_post("/tasks/assign", json=body, headers=keyed("k-1"))
    assert again.status_code == 202
    assert again.content == first.content  # the same generated task id, the same bytes
    assert again.headers["content-type"] == first.headers["content-type"]
    assert again.headers[REPLAYED_HEADER] == "true"
    assert task_count(client) == 1
    assert metric(client, "orchestrator_idempotent_replays_total") == 1.0
    # Without a key, the same body is a new task, as it always was.
    assert client.simulate_post("/tasks/assign", json=body).status_code == 202
    assert task_count(client) == 2


def test_a_retried_registration_keeps_the_first_token(client):
    body = {"agent_id": "a1", "agent_type": "implementation", "capabilities": ["code"]}
    first = client.simulate_post("/agents/register", json=body, headers=keyed("reg-a1"))
    again = client.simulate_post("/agents/register", json=body, headers=keyed("reg-a1"))
    assert (first.status_code, again.status_code) == (200, 200)
    assert again.content == first.content
    token = first.json["token"]
    # The first token is the agent's: the retry did not register it again.
    started = client.simulate_post("/agents/a1/start")
    assert started.status_code == 200
    beat = client.simulate_post("/agents/a1/heartbeat", headers=bearer(token))
    assert beat.status_code == 200, beat.text
    events = client.simulate_get("/events", params={"after": 0}).json["events"]
    assert [e["type"] for e in events].count("agent.registered") == 1


def test_a_token_that_is_nobodys_now_gets_no_replay(client):
    token = register(client, "a1", start=True)
    assigned = client.simulate_post("/tasks/assign", json={"task_id": "t1", "agent_id": "a1"})
    assert assigned.status_code == 200
    headers = keyed("done", **bearer(token))
    done = client.simulate_post("/tasks/t1/complete", json={}, headers=headers)
    assert done.status_code == 200, done.text
    assert client.simulate_delete("/agents/a1").status_code == 200  # the token dies with it
    assert_problem(client.simulate_post("/tasks/t1/complete", json={}, headers=headers), 401)


def test_a_retried_completion_is_not_a_conflict(client, agent):
    assigned = client.simulate_post("/tasks/assign", json={"task_id": "t1", "payload": {}})
    assert assigned.json["status"] == "assigned"
    client.simulate_post("/agents/my-agent/heartbeat", headers=bearer(agent))
    headers = keyed("done-t1", **bearer(agent))
    done = client.simulate_post("/tasks/t1/complete", json={"result": 1}, headers=headers)
    assert done.status_code == 200, done.text
    again = client.simulate_post("/tasks/t1/complete", json={"result": 1}, headers=headers)
    assert again.status_code == 200 and again.content == done.content
    # Without the key the second report is what it always was: the task is not held.
    unkeyed = client.simulate_post("/tasks/t1/complete", json={"result": 1}, headers=bearer(agent))
    assert unkeyed.status_code == 409


def test_the_same_key_for_another_request_is_422_and_changes_nothing(client):
    first = client.simulate_post("/tasks/assign", json={"task_id": "t1"}, headers=keyed("k"))
    assert first.status_code == 202
    other_body = client.simulate_post("/tasks/assign", json={"task_id": "t2"}, headers=keyed("k"))
    assert_problem(other_body, 422, "idempotency_key_reused")
    other_path = client.simulate_post("/tasks/t1/cancel", headers=keyed("k"))
    assert_problem(other_path, 422, "idempotency_key_reused")
    other_method = client.simulate_delete("/agents/nobody", headers=keyed("k"))
    assert_problem(other_method, 422, "idempotency_key_reused")
    tasks = client.simulate_get("/tasks").json["tasks"]
    assert [(t["task_id"], t["status"]) for t in tasks] == [("t1", "pending")]


def test_a_retry_while_the_first_is_still_answered_is_409(client, orch):
    holder = register(client, "a1", start=True)
    waiter = register(client, "a2", start=True)
    held = client.simulate_post("/locks/repo/acquire", json={}, headers=bearer(holder))
    assert held.status_code == 200
    headers = keyed("wait-1", **bearer(waiter))
    body = {"wait_s": 20}
    answers: list[falcon.testing.Result] = []
    first = threading.Thread(
        target=lambda: answers.append(
            client.simulate_post("/locks/repo/acquire", json=body, headers=headers)
        )
    )
    first.start()
    try:
        wait_until(lambda: orch.idempotency.in_flight == 1, message="the first request waits")
        overtaking = client.simulate_post("/locks/repo/acquire", json=body, headers=headers)
        problem = assert_problem(overtaking, 409, "idempotency_key_in_use")
        assert overtaking.headers["retry-after"] == "1"
        assert "still being answered" in problem["detail"]
        # Another body under the key is still a misuse, even while the first runs.
        assert_problem(
            client.simulate_post("/locks/repo/acquire", json={"wait_s": 1}, headers=headers),
            422,
            "idempotency_key_reused",
        )
    finally:
        released = client.simulate_post(
            "/locks/repo/release",
            json={"fencing_token": held.json["fencing_token"]},
            headers=bearer(holder),
        )
        first.join(10)
    assert released.status_code == 200
    [granted] = answers
    assert granted.status_code == 200, granted.text
    replay = client.simulate_post("/locks/repo/acquire", json=body, headers=headers)
    assert replay.status_code == 200 and replay.content == granted.content
    assert orch.idempotency.in_flight == 0


def test_keys_are_scoped_by_credential(client):
    body = {"capabilities": ["nobody-has-this"]}
    mine = client.simulate_post("/tasks/assign", json=body, headers=keyed("k", **bearer("one")))
    theirs = client.simulate_post("/tasks/assign", json=body, headers=keyed("k", **bearer("two")))
    anonymous = client.simulate_post("/tasks/assign", json=body, headers=keyed("k"))
    ids = {answer.json["task_id"] for answer in (mine, theirs, anonymous)}
    assert len(ids) == 3  # three requests applied: nobody saw another's answer
    assert REPLAYED_HEADER not in theirs.headers
    assert task_count(client) == 3


def test_an_answer_is_kept_for_the_ttl_and_then_the_key_is_new(store: MemoryStore):
    clock = ManualClock()
    orch = Orchestrator(
        Settings(idempotency_ttl_s=60.0), store=store, clock=clock, auto_tick=False
    ).start()
    try:
        client = falcon.testing.TestClient(create_app(orch))
        body = {"capabilities": ["nobody-has-this"]}
        first = client.simulate_post("/tasks/assign", json=body, headers=keyed("k"))
        clock.advance(59.0)
        assert client.simulate_post("/tasks/assign", json=body, headers=keyed("k")).content == (
            first.content
        )
        assert orch.idempotency.prune() == 0
        clock.advance(1.0)
        later = client.simulate_post("/tasks/assign", json=body, headers=keyed("k"))
        assert later.status_code == 202 and later.json["task_id"] != first.json["task_id"]
        assert REPLAYED_HEADER not in later.headers
        assert task_count(client) == 2
        [stored] = [store.load_idempotent_answer("", key_digest("k"))]
        assert stored is not None and later.json["task_id"].encode() not in stored.body  # sealed
        assert stored.expires_at == clock.time() + 60.0
        clock.advance(61.0)
        assert orch.idempotency.prune() == 1
        assert store.load_idempotent_answer("", key_digest("k")) is None
    finally:
        orch.stop()


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("", "must not be empty"),
        ("   ", "must not be empty"),
        ("k" * 256, "at most 255"),
        ('"' + "k" * 254 + '"', "at most 255"),  # the limit is the header's value
        ("ключ", "printable ASCII"),
        ("a\x7fb", "printable ASCII"),
    ],
)
def test_a_bad_key_is_400_naming_the_header_and_changes_nothing(client, value, message):
    answer = client.simulate_post("/tasks/assign", json={"task_id": "t1"}, headers={KEY: value})
    problem = assert_problem(answer, 400, "invalid", field=KEY)
    assert message in problem["detail"]
    assert task_count(client) == 0


def test_a_quoted_key_and_its_bare_form_are_the_same_key(client):
    body = {"task_id": "t1"}
    longest = "k" * 253
    first = client.simulate_post("/tasks/assign", json=body, headers={KEY: f'"{longest}"'})
    again = client.simulate_post("/tasks/assign", json=body, headers={KEY: longest})
    assert (first.status_code, again.status_code) == (202, 202)
    assert again.headers[REPLAYED_HEADER] == "true"
    escaped = client.simulate_post(
        "/tasks/assign", json={"task_id": "t2"}, headers={KEY: '"a\\"b"'}
    )
    bare = client.simulate_post("/tasks/assign", json={"task_id": "t2"}, headers={KEY: 'a"b'})
    assert bare.headers[REPLAYED_HEADER] == "true" and bare.content == escaped.content
    # What is not a well-formed quoted string is a key as it stands.
    for odd in ('"a"b"', '""', '"a\\'):
        answer = client.simulate_post(
            "/tasks/assign", json={"payload": {odd: 1}}, headers={KEY: odd}
        )
        assert answer.status_code == 202, answer.text
    assert task_count(client) == 5


def test_a_key_on_a_read_is_ignored(client):
    register(client, "a1")
    first = client.simulate_get("/agents/a1", headers=keyed("k"))
    client.simulate_post("/agents/a1/start")
    second = client.simulate_get("/agents/a1", headers=keyed("k"))
    assert first.json["status"] != second.json["status"]  # read afresh, not replayed


def test_an_answer_that_says_not_applied_is_not_kept(client, store):
    body = {"task_id": "t1"}
    store.fail_writes = "disk full"
    refused = client.simulate_post("/tasks/assign", json=body, headers=keyed("k"))
    assert_problem(refused, 503, "store_unavailable")
    store.fail_writes = None
    retried = client.simulate_post("/tasks/assign", json=body, headers=keyed("k"))
    assert retried.status_code == 202, retried.text
    assert REPLAYED_HEADER not in retried.headers
    assert task_count(client) == 1


def test_an_auth_failure_is_not_kept(admin_client):
    body = {"agent_id": "a1", "agent_type": "implementation"}
    headers = keyed("k", **bearer("admin-secret"))
    refused = admin_client.simulate_post("/agents/register", json=body, headers={KEY: "k"})
    assert_problem(refused, 401)
    # A 401 is not kept, and the credential is part of the scope anyway: the right
    # token with the key registers.
    assert (
        admin_client.simulate_post("/agents/register", json=body, headers=headers).status_code
        == 200
    )
    no_token_again = admin_client.simulate_post("/agents/register", json=body, headers={KEY: "k"})
    assert_problem(no_token_again, 401)


class AnswersRefused(MemoryStore):
    """A store whose disk fills up for answers only: the change before them is kept."""

    def put_idempotent_answer(self, answer: IdempotentAnswer) -> None:
        raise StoreError("store write failed: disk full")


def test_an_answer_the_store_cannot_keep_is_still_given_and_counted():
    orch = Orchestrator(store=AnswersRefused(), clock=ManualClock(), auto_tick=False).start()
    try:
        client = falcon.testing.TestClient(create_app(orch))
        first = client.simulate_post("/tasks/assign", json={"task_id": "t1"}, headers=keyed("k"))
        assert first.status_code == 202  # the task is stored: its answer is true
        assert metric(client, "orchestrator_idempotent_answers_unkept_total") == 1.0
        assert orch.idempotency.in_flight == 0
    finally:
        orch.stop()


def test_the_openapi_document_declares_the_header_on_every_write(client):
    document = client.simulate_get("/openapi.json").json
    for template, item in document["paths"].items():
        for method, operation in item.items():
            if method == "parameters":
                continue
            names = [p["name"] for p in operation.get("parameters", []) if p["in"] == "header"]
            if method.upper() in ("POST", "PUT", "PATCH", "DELETE"):
                assert names == [KEY], (method, template)
                assert {"409", "422"} <= operation["responses"].keys()
            else:
                assert KEY not in names


def test_an_undeclared_method_with_a_key_is_405_not_a_key_refusal(client):
    # schemathesis --checks all: PUT /tasks/0/progress with a reused key answered 422.
    assert client.simulate_post("/tasks/assign", json={}, headers=keyed("k")).status_code == 202
    answer = client.simulate_put("/tasks/t1/cancel", json={}, headers=keyed("k"))
    assert_problem(answer, 405, "method_not_allowed")
