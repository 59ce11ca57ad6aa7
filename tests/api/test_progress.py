"""POST /tasks/{id}/progress: the holder's latest word on a long task, kept with the task."""

from __future__ import annotations

import pytest

from orch import Orchestrator, Settings
from orch.store import SQLiteStore
from tests.api.conftest import assert_problem, bearer, build, register, snapshot


@pytest.fixture
def holder(client):
    """``a1`` holding task ``t1`` (assigned to it by name), and ``a2``; their tokens."""
    first = register(client, "a1", start=True)
    second = register(client, "a2", start=True)
    assigned = client.simulate_post("/tasks/assign", json={"task_id": "t1", "agent_id": "a1"})
    assert assigned.json["status"] == "assigned"
    return first, second


def progress_events(orch):
    return [e for e in orch.events(0)["events"] if e["type"] == "task.progress"]


def test_the_holders_report_is_kept_with_the_task_and_shown_by_get(client, clock, holder):
    first, _ = holder
    answer = client.simulate_post(
        "/tasks/t1/progress",
        json={"message": "tests written", "percent": 40},
        headers=bearer(first),
    )
    assert answer.status_code == 200, answer.text
    assert answer.json["task_id"] == "t1" and answer.json["status"] == "assigned"
    reported = {"message": "tests written", "percent": 40.0, "at": clock.time()}
    assert answer.json["progress"] == reported
    assert client.simulate_get("/tasks/t1").json["progress"] == reported

    clock.advance(5)
    later = client.simulate_post(
        "/tasks/t1/progress", json={"message": "tests pass"}, headers=bearer(first)
    )
    assert later.json["progress"] == {"message": "tests pass", "percent": None, "at": clock.time()}
    task = client.simulate_get("/tasks/t1").json
    assert task["progress"]["message"] == "tests pass" and task["status"] == "assigned"


def test_progress_is_stored_and_survives_a_restart(clock, tmp_path):
    path = str(tmp_path / "orch.db")
    orch, client = build(Settings(), store=SQLiteStore(path), clock=clock)
    try:
        token = register(client, "a1", start=True)
        client.simulate_post("/tasks/assign", json={"task_id": 7, "agent_id": "a1"})
        reported = client.simulate_post(
            "/tasks/7/progress", json={"message": "m", "percent": 99.5}, headers=bearer(token)
        ).json["progress"]
    finally:
        orch.stop()
    again, client = build(Settings(), store=SQLiteStore(path), clock=clock)
    try:
        assert client.simulate_get("/tasks/7").json["progress"] == reported
    finally:
        again.stop()


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({}, "message"),
        ({"message": ""}, "message"),
        ({"message": "   "}, "message"),
        ({"message": "x" * 1025}, "message"),
        ({"message": "é" * 513}, "message"),  # 513 characters, 1026 bytes
        ({"message": 5}, "message"),
        ({"message": "m", "percent": -0.1}, "percent"),
        ({"message": "m", "percent": 100.5}, "percent"),
        ({"message": "m", "percent": "half"}, "percent"),
    ],
)
def test_out_of_bounds_reports_are_400_naming_the_field_and_change_nothing(
    client, orch, holder, body, field
):
    first, _ = holder
    before = snapshot(client, orch)
    answer = client.simulate_post("/tasks/t1/progress", json=body, headers=bearer(first))
    assert_problem(answer, 400, "invalid", field)
    assert snapshot(client, orch) == before
    assert client.simulate_get("/tasks/t1").json["progress"] is None


def test_a_message_of_exactly_1_kib_is_accepted(client, holder):
    first, _ = holder
    message = "é" * 512  # 1024 bytes of UTF-8
    answer = client.simulate_post(
        "/tasks/t1/progress", json={"message": message, "percent": 100}, headers=bearer(first)
    )
    assert answer.status_code == 200 and answer.json["progress"]["message"] == message


def test_an_agent_that_does_not_hold_the_task_is_403_and_changes_nothing(client, orch, holder):
    first, second = holder
    before = snapshot(client, orch)
    answer = client.simulate_post(
        "/tasks/t1/progress", json={"message": "mine now"}, headers=bearer(second)
    )
    body = assert_problem(answer, 403, "forbidden")
    assert "a2" in body["detail"] and "t1" in body["detail"]
    assert snapshot(client, orch) == before

    # Once the task has ended nobody holds it, the agent that did included.
    client.simulate_post("/tasks/t1/complete", json={}, headers=bearer(first))
    late = client.simulate_post("/tasks/t1/progress", json={"message": "x"}, headers=bearer(first))
    assert_problem(late, 403, "forbidden")
    unknown = client.simulate_post(
        "/tasks/nope/progress", json={"message": "x"}, headers=bearer(first)
    )
    assert_problem(unknown, 404, "not_found")


def test_a_new_attempt_starts_without_the_last_ones_progress(client, orch, holder):
    first, _ = holder
    client.simulate_post("/tasks/t1/progress", json={"message": "almost"}, headers=bearer(first))
    client.simulate_post("/tasks/t1/fail", json={"error": "flaky"}, headers=bearer(first))
    assert client.simulate_get("/tasks/t1").json["progress"]["message"] == "almost"
    orch.clock.advance(2)
    orch.tick()  # the retry is due: back in the queue, leased again
    task = client.simulate_get("/tasks/t1").json
    assert task["status"] in ("assigned", "running") and task["attempts"] == 2
    assert task["progress"] is None


def test_progress_events_are_thinned_per_task_on_the_injected_clock(clock):
    orch, client = build(Settings(progress_event_interval_s=10.0), clock=clock)
    try:
        token = register(client, "a1", start=True, max_concurrent_tasks=2)
        for task_id in ("t1", "t2"):
            client.simulate_post("/tasks/assign", json={"task_id": task_id, "agent_id": "a1"})

        def report(task_id, n):
            answer = client.simulate_post(
                f"/tasks/{task_id}/progress",
                json={"message": f"step {n}", "percent": n},
                headers=bearer(token),
            )
            assert answer.status_code == 200

        for n in range(50):  # a chatty agent: 50 reports in no time at all
            report("t1", n)
        report("t2", 1)  # another task is not held back by t1's chatter
        events = progress_events(orch)
        assert [(e["task_id"], e["message"]) for e in events] == [
            ("t1", "step 0"),
            ("t2", "step 1"),
        ]
        # ... yet every report was kept: the task shows the latest.
        assert client.simulate_get("/tasks/t1").json["progress"]["message"] == "step 49"

        metrics = client.simulate_get("/metrics").text
        assert "orchestrator_task_progress_reports_total 51.0" in metrics

        clock.advance(9.9)
        report("t1", 50)
        assert len(progress_events(orch)) == 2
        clock.advance(0.2)
        report("t1", 51)
        events = progress_events(orch)
        assert len(events) == 3
        assert events[-1] == {
            **events[-1],
            "task_id": "t1",
            "agent_id": "a1",
            "attempt": 1,
            "message": "step 51",
            "percent": 51.0,
            "reports_not_sent": 50,  # steps 1-50 went into the task, not the ring
        }

        # The last report of a burst is not left out of the feed: once its interval
        # has run out, a tick sends it (and only it).
        report("t1", 52)
        report("t1", 53)
        orch.tick()
        assert len(progress_events(orch)) == 3  # still within the interval
        clock.advance(10.0)
        orch.tick()
        orch.tick()
        events = progress_events(orch)
        assert len(events) == 4
        assert (events[-1]["message"], events[-1]["reports_not_sent"]) == ("step 53", 1)
    finally:
        orch.stop()


def test_the_embedded_api_reports_progress_too():
    with Orchestrator() as orch:
        orch.register_agent("a1", "implementation")
        orch.start_agent("a1")
        orch.assign_task({}, task_id=1, agent_id="a1")
        answer = orch.report_progress("a1", 1, "compiling", 10)
        assert answer["progress"]["percent"] == 10.0
        assert orch.task(1)["progress"]["message"] == "compiling"


def test_openapi_documents_the_endpoint(client):
    document = client.simulate_get("/openapi.json").json
    operation = document["paths"]["/tasks/{task_id}/progress"]["post"]
    assert operation["security"] == [{"agentToken": []}]
    assert {"200", "400", "403", "404"} <= set(operation["responses"])
    body = document["components"]["schemas"]["ReportProgress"]
    assert body["required"] == ["message"]
    assert body["properties"]["message"]["maxLength"] == 1024
    percent = body["properties"]["percent"]["anyOf"][0]
    assert (percent["minimum"], percent["maximum"]) == (0, 100)
