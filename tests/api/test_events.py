"""GET /events: numbered, paged, and a bounded long-poll."""

import threading
import time

import falcon.testing

from orch import Settings
from tests.api.conftest import assert_problem, bearer, build, register


def event_types(answer):
    return [e["type"] for e in answer.json["events"]]


def test_events_are_numbered_and_paged_with_after_and_limit(client):
    register(client, "a1", start=True)
    first = client.simulate_get("/events", params={"after": 0, "limit": 1, "wait": 0})
    assert first.status_code == 200
    assert event_types(first) == ["agent.registered"]
    [event] = first.json["events"]
    assert event["seq"] == 1 and event["agent_id"] == "a1" and "at" in event
    assert first.json["next"] == 1
    rest = client.simulate_get("/events", params={"after": first.json["next"]})
    assert event_types(rest) == ["agent.started"]
    assert [e["seq"] for e in rest.json["events"]] == [2]
    empty = client.simulate_get("/events", params={"after": rest.json["next"], "wait": 0})
    assert empty.json == {"events": [], "next": 2, "epoch": first.json["epoch"]}


def test_task_lifecycle_shows_in_the_feed(client):
    token = register(client, "a1", start=True)
    after = client.simulate_get("/events").json["next"]
    client.simulate_post("/tasks/assign", json={"task_id": 5, "agent_id": "a1"})
    client.simulate_post("/tasks/5/complete", json={}, headers=bearer(token))
    answer = client.simulate_get("/events", params={"after": after})
    assert event_types(answer)[:3] == ["task.queued", "task.assigned", "task.completed"]
    assert all(e["task_id"] == 5 for e in answer.json["events"][:3])
    seqs = [e["seq"] for e in answer.json["events"]]
    assert seqs == sorted(seqs) and seqs[0] == after + 1


def test_a_long_poll_returns_when_an_event_arrives(client):
    after = client.simulate_get("/events").json["next"]
    answers = []
    poll = threading.Thread(
        target=lambda: answers.append(
            client.simulate_get("/events", params={"after": after, "wait": 10})
        ),
        daemon=True,
    )
    poll.start()
    register(client, "late")
    poll.join(10)
    [answer] = answers
    assert answer.status_code == 200
    assert event_types(answer) == ["agent.registered"]
    assert answer.json["events"][0]["agent_id"] == "late"


def test_a_long_poll_with_nothing_new_ends_empty(client):
    register(client, "a1")
    after = client.simulate_get("/events").json["next"]
    answer = client.simulate_get("/events", params={"after": after, "wait": 0.05})
    assert answer.status_code == 200
    assert answer.json["events"] == [] and answer.json["next"] == after


def test_every_answer_names_its_numbering(client):
    register(client, "a1")
    first = client.simulate_get("/events").json
    again = client.simulate_get("/events", params={"after": first["next"]}).json
    assert isinstance(first["epoch"], str) and first["epoch"]
    assert again == {"events": [], "next": 1, "epoch": first["epoch"]}


def test_a_poll_beyond_the_newest_event_is_ahead_not_a_replay(client):
    # An `after` past the newest event in this numbering: nothing to replay, at once.
    register(client, "a1", start=True)
    epoch = client.simulate_get("/events").json["epoch"]
    for params in ({"after": 10_000, "wait": 10}, {"after": 3, "wait": 10, "epoch": epoch}):
        started = time.monotonic()
        answer = client.simulate_get("/events", params=params)
        assert time.monotonic() - started < 5  # not the 10 s it was allowed to wait
        assert answer.status_code == 200
        assert answer.json == {"events": [], "next": 2, "epoch": epoch, "ahead": True}


def test_a_poll_with_an_earlier_numbering_says_the_server_restarted(client):
    # The follower's epoch came from an earlier server process: numbering restarted.
    register(client, "a1", start=True)
    started = time.monotonic()
    answer = client.simulate_get("/events", params={"after": 1, "wait": 10, "epoch": "earlier"})
    assert time.monotonic() - started < 5
    assert answer.json["reset"] is True and "ahead" not in answer.json
    assert event_types(answer) == ["agent.registered", "agent.started"]
    assert answer.json["next"] == 2  # the new numbering: pass it on and carry on
    carry_on = {"after": 2, "epoch": answer.json["epoch"]}
    assert client.simulate_get("/events", params=carry_on).json["events"] == []


def test_openapi_documents_the_epoch_and_both_flags(client):
    document = client.simulate_get("/openapi.json").json
    operation = document["paths"]["/events"]["get"]
    schema = operation["responses"]["200"]["content"]["application/json"]["schema"]
    assert schema["required"] == ["epoch", "events", "next"]
    assert schema["properties"]["reset"]["const"] is True
    assert schema["properties"]["ahead"]["const"] is True
    parameters = {p["name"]: p["schema"] for p in operation["parameters"]}
    assert parameters["after"] == {"type": "integer", "minimum": 0, "maximum": 2**63 - 1}
    assert parameters["epoch"]["maxLength"] == 128


def test_only_half_the_threads_may_wait():
    orch, client = build(Settings(heartbeat_interval_s=1.0, http_threads=2))
    try:
        answers: list[falcon.testing.Result] = []

        def park() -> threading.Thread:
            answers.clear()
            thread = threading.Thread(
                target=lambda: answers.append(client.simulate_get("/events", params={"wait": 10})),
                daemon=True,
            )
            thread.start()
            return thread

        # With two threads there is one waiting slot. Once the first poll is parked in
        # it, another long-poll is refused at once instead of parking a second thread.
        poll = park()
        refused = None
        for _ in range(10_000):
            if not poll.is_alive():  # the probe held the slot when it came; park again
                poll = park()
            probe = client.simulate_get("/events", params={"wait": 0.001})
            if probe.status_code == 503 and poll.is_alive():
                refused = probe
                break
        assert refused is not None
        assert_problem(refused, 503, "unavailable")
        assert refused.headers["retry-after"] == "1"
        # A poll that does not wait is always answered.
        assert client.simulate_get("/events", params={"wait": 0}).status_code == 200
        orch.register_agent("wake", "implementation")
        poll.join(10)
        [answer] = answers
        assert answer.status_code == 200
        assert [e["type"] for e in answer.json["events"]] == ["agent.registered"]
    finally:
        orch.stop()


def test_bad_parameters_are_400_naming_them(client: falcon.testing.TestClient):
    for params, field in [
        ({"after": "-1"}, "after"),
        ({"after": "first"}, "after"),
        ({"after": str(2**70)}, "after"),
        ({"limit": "0"}, "limit"),
        ({"limit": "1001"}, "limit"),
        ({"wait": "-1"}, "wait"),
        ({"wait": "21"}, "wait"),
        ({"wait": "soon"}, "wait"),
        ({"epoch": "a b"}, "epoch"),
        ({"epoch": "e" * 129}, "epoch"),
    ]:
        assert_problem(client.simulate_get("/events", params=params), 400, "invalid", field)
