"""Every size and count a client controls is bounded, and refused with a clear 4xx.

Header size (431), body size (413), metadata size, capability count and id length
(400 naming the field), tasks queued per submitter (429 with Retry-After) and the
threads long waits may hold (503 with Retry-After). Each limit is a setting read from
the environment; a refused request changes nothing.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import falcon.testing
import pytest

from orch import ManualClock, Orchestrator
from orch.config import ConfigError, Settings
from orch.errors import TooManyRequests
from orch.store import SQLiteStore
from tests.api.conftest import assert_problem, bearer, register, snapshot
from tests.conftest import wait_until
from tests.security.conftest import ADMIN_TOKEN, AppFactory

ADMIN = bearer(ADMIN_TOKEN)


# ------------------------------------------------------------------ settings

LIMIT_VARIABLES = {
    "ORCH_HTTP_CONNECTION_LIMIT": ("http_connection_limit", "50", 50),
    "ORCH_HTTP_IDLE_TIMEOUT_S": ("http_idle_timeout_s", "7", 7),
    "ORCH_HTTP_REQUEST_READ_TIMEOUT_S": ("http_request_read_timeout_s", "2.5", 2.5),
    "ORCH_HTTP_MAX_HEADER_BYTES": ("http_max_header_bytes", "4096", 4096),
    "ORCH_HTTP_MAX_BODY_BYTES": ("http_max_body_bytes", "2048", 2048),
    "ORCH_MAX_METADATA_BYTES": ("max_metadata_bytes", "100", 100),
    "ORCH_MAX_QUEUED_TASKS_PER_SUBMITTER": ("max_queued_tasks_per_submitter", "3", 3),
    "ORCH_AUTH_MAX_FAILURES": ("auth_max_failures", "5", 5),
    "ORCH_AUTH_FAILURE_WINDOW_S": ("auth_failure_window_s", "10", 10.0),
    "ORCH_AUTH_LOCKOUT_S": ("auth_lockout_s", "60", 60.0),
}


@pytest.mark.parametrize("variable", list(LIMIT_VARIABLES))
def test_each_limit_is_read_from_the_environment(variable: str) -> None:
    attribute, raw, expected = LIMIT_VARIABLES[variable]
    assert getattr(Settings.from_env({variable: raw}), attribute) == expected
    with pytest.raises(ConfigError, match=variable):
        Settings.from_env({variable: "0"})
    with pytest.raises(ConfigError, match=variable):
        Settings.from_env({variable: "lots"})


def test_header_and_body_limits_below_what_ordinary_clients_send_are_refused() -> None:
    with pytest.raises(ConfigError, match="ORCH_HTTP_MAX_HEADER_BYTES"):
        Settings.from_env({"ORCH_HTTP_MAX_HEADER_BYTES": "100"})
    with pytest.raises(ConfigError, match="ORCH_HTTP_MAX_BODY_BYTES"):
        Settings.from_env({"ORCH_HTTP_MAX_BODY_BYTES": "100"})


# ------------------------------------------------------------------ headers


def test_headers_over_the_limit_are_431_and_change_nothing(make_app: AppFactory) -> None:
    orch, client = make_app(http_max_header_bytes=4096)
    before = snapshot(client, orch, ADMIN)
    body = {"agent_id": "a1", "agent_type": "impl"}
    padded = {**ADMIN, "X-Padding": "x" * 4096}
    answer = client.simulate_post("/agents/register", json=body, headers=padded)
    problem = assert_problem(answer, 431, "headers_too_large")
    assert "4096" in problem["detail"]
    many = {**ADMIN, **{f"X-H{i}": "y" * 40 for i in range(100)}}
    assert_problem(client.simulate_get("/health", headers=many), 431, "headers_too_large")
    assert snapshot(client, orch, ADMIN) == before
    assert client.simulate_post("/agents/register", json=body, headers=ADMIN).status_code == 200


def test_the_default_header_limit_is_32_kib(make_app: AppFactory) -> None:
    _, client = make_app()
    assert client.simulate_get("/health", headers={"X-Pad": "x" * 30_000}).status_code == 200
    answer = client.simulate_get("/health", headers={"X-Pad": "x" * 33_000})
    assert_problem(answer, 431, "headers_too_large")


def test_a_long_url_counts_towards_the_header_limit(make_app: AppFactory) -> None:
    _, client = make_app(http_max_header_bytes=4096)
    answer = client.simulate_get("/agents", query_string="capability=" + "c" * 5000, headers=ADMIN)
    assert_problem(answer, 431, "headers_too_large")


# --------------------------------------------------------------------- bodies


def test_bodies_over_the_configured_limit_are_413_and_change_nothing(
    make_app: AppFactory,
) -> None:
    orch, client = make_app(http_max_body_bytes=2048)
    before = snapshot(client, orch, ADMIN)
    body = {"agent_id": "a1", "agent_type": "impl", "metadata": {"pad": "x" * 2048}}
    answer = client.simulate_post("/agents/register", json=body, headers=ADMIN)
    problem = assert_problem(answer, 413, "payload_too_large")
    assert "2048" in problem["detail"]
    # Judged by Content-Length alone, on a route that takes no body too.
    lying = {**ADMIN, "Content-Length": "4096", "Content-Type": "application/json"}
    assert_problem(client.simulate_post("/agents/a1/start", body=b"{}", headers=lying), 413)
    assert snapshot(client, orch, ADMIN) == before


# ------------------------------------------------------- metadata, capabilities


def test_metadata_over_the_limit_is_refused_naming_the_field(make_app: AppFactory) -> None:
    orch, client = make_app(max_metadata_bytes=200)
    before = snapshot(client, orch, ADMIN)
    big = {"agent_id": "a1", "agent_type": "impl", "metadata": {"notes": "x" * 200}}
    answer = client.simulate_post("/agents/register", json=big, headers=ADMIN)
    problem = assert_problem(answer, 400, "invalid", field="metadata")
    assert "200" in problem["detail"]
    assert snapshot(client, orch, ADMIN) == before
    small = {"agent_id": "a1", "agent_type": "impl", "metadata": {"notes": "x" * 150}}
    assert client.simulate_post("/agents/register", json=small, headers=ADMIN).status_code == 200


def test_metadata_is_limited_to_16_kib_by_default(make_app: AppFactory) -> None:
    orch, client = make_app()
    body = {"agent_id": "a1", "agent_type": "impl", "metadata": {"n": "x" * 16_384}}
    answer = client.simulate_post("/agents/register", json=body, headers=ADMIN)
    assert_problem(answer, 400, "invalid", field="metadata")
    with pytest.raises(Exception, match="metadata"):
        orch.register_agent("a1", "impl", metadata={"n": "x" * 16_384})


def test_at_most_64_capabilities(make_app: AppFactory) -> None:
    orch, client = make_app()
    before = snapshot(client, orch, ADMIN)
    too_many = [f"c{i}" for i in range(65)]
    for path, body in (
        ("/agents/register", {"agent_id": "a1", "agent_type": "impl", "capabilities": too_many}),
        ("/tasks/assign", {"task_id": "t1", "capabilities": too_many}),
    ):
        answer = client.simulate_post(path, json=body, headers=ADMIN)
        assert_problem(answer, 400, "invalid", field="capabilities")
    assert snapshot(client, orch, ADMIN) == before
    register(client, "a1", capabilities=tuple(too_many[:64]), headers=ADMIN)


def test_ids_are_at_most_128_characters(make_app: AppFactory) -> None:
    _, client = make_app()
    for length, status in ((128, 200), (129, 400)):
        body = {"agent_id": "a" * length, "agent_type": "impl"}
        answer = client.simulate_post("/agents/register", json=body, headers=ADMIN)
        assert answer.status_code == status, answer.text
    assert_problem(
        client.simulate_post(
            "/agents/register", json={"agent_id": "b" * 129, "agent_type": "i"}, headers=ADMIN
        ),
        400,
        "invalid",
        field="agent_id",
    )


# ------------------------------------------------------ queued tasks per submitter


def submit(
    client: falcon.testing.TestClient, task_id: str, address: str = "10.0.0.1", **fields: Any
) -> falcon.testing.Result:
    return client.simulate_post(
        "/tasks/assign",
        json={"task_id": task_id, "capabilities": ["code"], **fields},
        headers=ADMIN,
        remote_addr=address,
    )


def test_a_submitter_over_its_queue_cap_gets_429_with_retry_after(make_app: AppFactory) -> None:
    orch, client = make_app(max_queued_tasks_per_submitter=3)
    for n in range(3):
        assert submit(client, f"t{n}").status_code == 202
    before = snapshot(client, orch, ADMIN)
    refused = submit(client, "t3")
    problem = assert_problem(refused, 429, "too_many_requests")
    assert refused.headers["Retry-After"] == "5"
    assert problem["limit"] == 3 and problem["queued"] == 3
    assert "10.0.0.1" in problem["detail"]
    assert snapshot(client, orch, ADMIN) == before
    assert_problem(client.simulate_get("/tasks/t3", headers=ADMIN), 404)


def test_the_queue_cap_is_per_submitter(make_app: AppFactory) -> None:
    _, client = make_app(max_queued_tasks_per_submitter=2)
    for n in range(2):
        assert submit(client, f"a{n}", address="10.0.0.1").status_code == 202
    assert submit(client, "a2", address="10.0.0.1").status_code == 429
    # Another client is not punished for the first one's flood.
    for n in range(2):
        assert submit(client, f"b{n}", address="10.0.0.2").status_code == 202


def test_room_comes_back_as_queued_tasks_are_assigned_or_cancelled(
    make_app: AppFactory,
) -> None:
    orch, client = make_app(max_queued_tasks_per_submitter=2)
    assert submit(client, "t0").status_code == 202
    assert submit(client, "t1").status_code == 202
    assert submit(client, "t2").status_code == 429
    assert client.simulate_post("/tasks/t0/cancel", headers=ADMIN).status_code == 200
    assert submit(client, "t2").status_code == 202
    register(client, "a1", start=True, headers=ADMIN)  # takes one queued task
    wait_until(
        lambda: orch.task("t1")["status"] == "assigned" or orch.task("t2")["status"] == "assigned"
    )
    assert submit(client, "t3").status_code == 202
    assert submit(client, "t4").status_code == 429


def test_a_forced_resubmission_replaces_its_queued_original_within_the_cap(
    make_app: AppFactory,
) -> None:
    _, client = make_app(max_queued_tasks_per_submitter=2)
    assert submit(client, "t0").status_code == 202
    assert submit(client, "t1").status_code == 202
    assert submit(client, "t1", force=True, priority=5).status_code == 202
    assert submit(client, "t2").status_code == 429


def test_direct_assignment_to_a_named_agent_is_not_queued_so_not_capped(
    make_app: AppFactory,
) -> None:
    _, client = make_app(max_queued_tasks_per_submitter=1)
    register(client, "a1", start=True, headers=ADMIN, max_concurrent_tasks=3)
    assert submit(client, "q0", agent_type="nobody").status_code == 202
    for n in range(3):
        assert submit(client, f"d{n}", agent_id="a1").status_code == 200


def test_the_embedded_api_caps_only_submitters_it_is_told_of(make_app: AppFactory) -> None:
    orch, _ = make_app(max_queued_tasks_per_submitter=1)
    orch.assign_task({}, task_id="e0", agent_type="nobody", submitter="script")
    with pytest.raises(TooManyRequests) as refused:
        orch.assign_task({}, task_id="e1", agent_type="nobody", submitter="script")
    assert refused.value.retry_after_s == 5
    for n in range(3):  # in-process submissions name no submitter: not capped
        orch.submit({}, task_id=f"s{n}", agent_type="nobody")


def test_the_queue_cap_survives_a_restart(clock: ManualClock, tmp_path: Path) -> None:
    # Who submitted each queued task is stored with it, so a restart does not reset
    # the count (and a flooding client cannot reset it by crashing the service).
    settings = Settings(heartbeat_interval_s=1.0, max_queued_tasks_per_submitter=2)
    path = str(tmp_path / "orch.db")
    first = Orchestrator(settings, store=SQLiteStore(path), clock=clock, auto_tick=False).start()
    for n in range(2):
        first.assign_task({}, task_id=f"t{n}", agent_type="nobody", submitter="10.0.0.9")
    first.stop()
    again = Orchestrator(settings, store=SQLiteStore(path), clock=clock, auto_tick=False).start()
    try:
        with pytest.raises(TooManyRequests):
            again.assign_task({}, task_id="t2", agent_type="nobody", submitter="10.0.0.9")
        again.assign_task({}, task_id="t2", agent_type="nobody", submitter="10.0.0.10")
    finally:
        again.stop()


# ------------------------------------------------------------------ long waits


@pytest.fixture
def two_threads(make_app: AppFactory) -> Iterator[tuple[Orchestrator, falcon.testing.TestClient]]:
    """An app with two HTTP threads: one may wait, the other must stay free."""
    yield make_app(http_threads=2, lock_max_wait_s=30)


def slot_taken(client: falcon.testing.TestClient, token: str, probe: list[int]) -> bool:
    """Whether the waiting slot is held: a waiting call that need not wait is refused.

    The probe asks for a fresh, free resource with ``wait_s``: if the slot is free it
    is granted at once (and released), never parking this thread.
    """
    probe[0] += 1
    resource = f"probe-{probe[0]}"
    answer = client.simulate_post(
        f"/locks/{resource}/acquire", json={"wait_s": 1}, headers=bearer(token)
    )
    if answer.status_code == 200:
        fencing = answer.json["fencing_token"]
        client.simulate_post(
            f"/locks/{resource}/release", json={"fencing_token": fencing}, headers=bearer(token)
        )
        return False
    assert_problem(answer, 503, "unavailable")
    assert answer.headers["Retry-After"] == "1"
    return True


def test_lock_waits_hold_at_most_half_the_threads(two_threads: Any) -> None:
    orch, client = two_threads
    holder = register(client, "holder", start=True, headers=ADMIN)
    waiter = register(client, "waiter", start=True, headers=ADMIN)
    prober = register(client, "prober", start=True, headers=ADMIN)
    grant = client.simulate_post("/locks/L/acquire", json={}, headers=bearer(holder)).json
    answers: list[falcon.testing.Result] = []
    waiting = threading.Thread(
        target=lambda: answers.append(
            client.simulate_post("/locks/L/acquire", json={"wait_s": 20}, headers=bearer(waiter))
        )
    )
    waiting.start()
    probe = [0]
    wait_until(lambda: slot_taken(client, prober, probe), message="the lock wait parked")
    # A long-poll is refused too: lock waits and long-polls share the slots.
    polled = client.simulate_get(f"/events?after={orch.events_log.last_seq}&wait=5", headers=ADMIN)
    assert_problem(polled, 503, "unavailable")
    assert polled.headers["Retry-After"] == "1"
    # Calls that do not wait are served meanwhile: the holder can release.
    released = client.simulate_post(
        "/locks/L/release", json={"fencing_token": grant["fencing_token"]}, headers=bearer(holder)
    )
    assert released.status_code == 200
    waiting.join(10)
    assert answers and answers[0].status_code == 200 and answers[0].json["agent_id"] == "waiter"
    assert not slot_taken(client, prober, probe)


def test_long_polls_hold_at_most_half_the_threads(two_threads: Any) -> None:
    orch, client = two_threads
    answers: list[falcon.testing.Result] = []
    after = orch.events_log.last_seq  # nothing happens meanwhile, so it waits
    polling = threading.Thread(
        target=lambda: answers.append(
            client.simulate_get(f"/events?after={after}&wait=20", headers=ADMIN)
        )
    )
    polling.start()
    try:
        wait_until(lambda: orch.events_log.waiting == 1, message="the long-poll parked")
        second = client.simulate_get(f"/events?after={after}&wait=5", headers=ADMIN)
        assert_problem(second, 503, "unavailable")
        assert client.simulate_get("/health").status_code == 200
    finally:
        orch.events_log.close()  # ends the long-poll
        polling.join(10)
    assert answers and answers[0].status_code == 200
