"""``Idempotency-Key`` against the real server process, fast path and kill -9 included."""

from __future__ import annotations

import threading
from pathlib import Path

import requests

from tests.conftest import wait_until
from tests.e2e.conftest import start_server

KEY = "Idempotency-Key"


def test_the_same_key_twice_is_one_write_over_real_http(server):
    url = server.url
    body = {"capabilities": ["nobody-has-this"], "payload": {"n": 1}}
    first = requests.post(f"{url}/tasks/assign", json=body, headers={KEY: "k-1"}, timeout=10)
    again = requests.post(f"{url}/tasks/assign", json=body, headers={KEY: "k-1"}, timeout=10)
    assert (first.status_code, again.status_code) == (202, 202)
    assert again.content == first.content
    assert again.headers["Idempotent-Replayed"] == "true"
    assert len(requests.get(f"{url}/tasks", timeout=10).json()["tasks"]) == 1
    other = requests.post(
        f"{url}/tasks/assign", json={"payload": {"n": 2}}, headers={KEY: "k-1"}, timeout=10
    )
    assert other.status_code == 422
    assert other.headers["Content-Type"] == "application/problem+json"
    assert other.json()["code"] == "idempotency_key_reused"
    assert len(requests.get(f"{url}/tasks", timeout=10).json()["tasks"]) == 1
    bad = requests.post(f"{url}/tasks/assign", json=body, headers={KEY: "k" * 256}, timeout=10)
    assert bad.status_code == 400 and bad.json()["field"] == KEY
    metrics = requests.get(f"{url}/metrics", timeout=10).text
    assert "orchestrator_idempotent_replays_total 1.0" in metrics


def test_keyed_hot_requests_are_kept_whatever_thread_answers_them(server):
    # Heartbeats, starts, assigns and completions are answered on the loop's thread
    # when they carry no key; with one they must still be applied once.
    url = server.url
    registered = requests.post(
        f"{url}/agents/register",
        json={"agent_id": "a1", "agent_type": "implementation", "capabilities": ["code"]},
        timeout=10,
    ).json()
    token = {"Authorization": f"Bearer {registered['token']}"}
    for _ in range(2):
        started = requests.post(f"{url}/agents/a1/start", headers={KEY: "start"}, timeout=10)
        assert started.json()["status"] == "started"  # the retry is not "already_active"
    body = {"task_id": "t1", "capabilities": ["code"]}
    assigned = [
        requests.post(f"{url}/tasks/assign", json=body, headers={KEY: "assign"}, timeout=10)
        for _ in range(2)
    ]
    assert [a.status_code for a in assigned] == [200, 200]
    assert assigned[1].content == assigned[0].content
    requests.post(f"{url}/agents/a1/heartbeat", headers=token, timeout=10).raise_for_status()
    done = [
        requests.post(
            f"{url}/tasks/t1/complete",
            json={"result": {"ok": True}},
            headers={KEY: "complete", **token},
            timeout=10,
        )
        for _ in range(2)
    ]
    assert [d.status_code for d in done] == [200, 200]
    assert done[1].headers["Idempotent-Replayed"] == "true"
    task = requests.get(f"{url}/tasks/t1", timeout=10).json()
    assert (task["status"], task["attempts"]) == ("completed", 1)


def test_a_retry_while_the_first_waits_is_409_then_gets_the_first_answer(server):
    url = server.url
    tokens = {}
    for agent_id in ("a1", "a2"):
        answer = requests.post(
            f"{url}/agents/register", json={"agent_id": agent_id, "agent_type": "x"}, timeout=10
        ).json()
        requests.post(f"{url}/agents/{agent_id}/start", timeout=10).raise_for_status()
        tokens[agent_id] = {"Authorization": f"Bearer {answer['token']}"}
    held = requests.post(f"{url}/locks/db/acquire", json={}, headers=tokens["a1"], timeout=10)
    waiting = {KEY: "acquire-db", **tokens["a2"]}
    answers: list[requests.Response] = []
    first = threading.Thread(
        target=lambda: answers.append(
            requests.post(
                f"{url}/locks/db/acquire", json={"wait_s": 20}, headers=waiting, timeout=30
            )
        )
    )
    first.start()
    try:
        wait_until(
            lambda: any(
                lock["waiters"] for lock in requests.get(f"{url}/locks", timeout=10).json()["locks"]
            ),
            timeout_s=10,
            message="the first acquire waits in line",
        )
        overtaking = requests.post(
            f"{url}/locks/db/acquire", json={"wait_s": 20}, headers=waiting, timeout=10
        )
        assert overtaking.status_code == 409
        assert overtaking.json()["code"] == "idempotency_key_in_use"
        assert overtaking.headers["Retry-After"] == "1"
    finally:
        requests.post(
            f"{url}/locks/db/release",
            json={"fencing_token": held.json()["fencing_token"]},
            headers=tokens["a1"],
            timeout=10,
        )
        first.join(30)
    [granted] = answers
    assert granted.status_code == 200
    replay = requests.post(
        f"{url}/locks/db/acquire", json={"wait_s": 20}, headers=waiting, timeout=10
    )
    assert replay.content == granted.content


def test_a_kept_answer_survives_kill_9_and_a_restart(tmp_path: Path):
    env = {"ORCH_DB": str(tmp_path / "orch.db")}
    body = {"agent_id": "a1", "agent_type": "implementation", "capabilities": ["code"]}
    server = start_server(env)
    try:
        first = requests.post(
            f"{server.url}/agents/register", json=body, headers={KEY: "reg-key-7f3a"}, timeout=10
        )
        assert first.status_code == 200
    finally:
        server.process.kill()  # SIGKILL: nothing is flushed on the way out
        server.process.wait(10)
    # The kept answer holds the agent's token; the database must not show it, nor the key.
    stored = b"".join(
        path.read_bytes() for path in tmp_path.iterdir() if path.name.startswith("orch.db")
    )
    assert first.json()["token"].encode() not in stored
    assert b"reg-key-7f3a" not in stored
    again_server = start_server(env)
    try:
        url = again_server.url
        again = requests.post(
            f"{url}/agents/register", json=body, headers={KEY: "reg-key-7f3a"}, timeout=10
        )
        assert again.status_code == 200
        assert again.content == first.content
        assert again.headers["Idempotent-Replayed"] == "true"
        assert requests.get(f"{url}/agents", timeout=10).json()["total"] == 1
        requests.post(f"{url}/agents/a1/start", timeout=10).raise_for_status()
        beat = requests.post(
            f"{url}/agents/a1/heartbeat",
            headers={"Authorization": f"Bearer {first.json()['token']}"},
            timeout=10,
        )
        assert beat.status_code == 200  # the first token is still the agent's
    finally:
        again_server.stop()
