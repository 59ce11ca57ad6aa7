"""The real server process: the README's curl flow, limits, and a clean SIGTERM."""

from __future__ import annotations

import contextlib
import os
import resource
import signal
import socket
import subprocess
import sys
import threading
import time

import requests

from tests.conftest import reap, wait_until
from tests.e2e.conftest import LISTENING, ServerProcess


def test_readme_flow_works_against_the_real_server(server: ServerProcess):
    url = server.url
    registered = requests.post(
        f"{url}/agents/register",
        json={
            "agent_id": "my-agent",
            "agent_type": "implementation",
            "capabilities": ["code", "git", "testing"],
        },
        timeout=5,
    )
    assert registered.status_code == 200
    body = registered.json()
    assert body["status"] == "registered" and body["agent_id"] == "my-agent"
    token = body["token"]

    assert requests.post(f"{url}/agents/my-agent/start", timeout=5).json()["status"] == "started"
    assigned = requests.post(
        f"{url}/tasks/assign", json={"task_id": 123, "agent_id": "my-agent"}, timeout=5
    )
    assert assigned.status_code == 200
    assert assigned.json() == {"task_id": 123, "status": "assigned", "agent_id": "my-agent"}

    auth = {"Authorization": f"Bearer {token}"}
    beat = requests.post(f"{url}/agents/my-agent/heartbeat", headers=auth, timeout=5).json()
    assert [a["task_id"] for a in beat["assignments"]] == [123]

    done = requests.post(
        f"{url}/tasks/123/complete", json={"result": {"ok": True}}, headers=auth, timeout=5
    )
    assert done.json() == {"task_id": 123, "status": "completed"}
    stats = requests.get(f"{url}/stats", timeout=5).json()
    assert stats["total_tasks_completed"] == 1
    assert requests.get(f"{url}/tasks/123", timeout=5).json()["result"] == {"ok": True}


def test_errors_are_problem_json_and_big_bodies_are_refused(server: ServerProcess):
    url = server.url
    big = b'{"agent_id": "' + b"x" * (1024 * 1024 + 10) + b'"}'
    refused = requests.post(
        f"{url}/agents/register",
        data=big,
        headers={"Content-Type": "application/json"},
        timeout=10,
    )
    assert refused.status_code == 413
    assert refused.headers["Content-Type"].startswith("application/problem+json")
    assert refused.json()["code"] == "payload_too_large"

    unknown = requests.get(f"{url}/agents/nobody", timeout=5)
    assert unknown.status_code == 404
    assert set(unknown.json()) >= {"type", "title", "status", "detail", "code"}
    assert requests.get(f"{url}/stats", timeout=5).json()["total_agents"] == 0


def test_sigterm_answers_in_flight_requests_then_exits_zero(server: ServerProcess):
    url = server.url
    tokens = {}
    for agent_id in ("holder", "waiter"):
        registered = requests.post(
            f"{url}/agents/register", json={"agent_id": agent_id, "agent_type": "t"}, timeout=5
        )
        tokens[agent_id] = {"Authorization": f"Bearer {registered.json()['token']}"}
    requests.post(f"{url}/locks/repo/acquire", json={}, headers=tokens["holder"], timeout=5)
    answers: list[requests.Response] = []

    def wait_for_lock() -> None:
        answers.append(
            requests.post(
                f"{url}/locks/repo/acquire", json={"wait_s": 25}, headers=tokens["waiter"]
            )
        )

    waiting = threading.Thread(target=wait_for_lock)
    waiting.start()
    wait_until(
        lambda: requests.get(f"{url}/locks", timeout=5).json()["locks"][0]["waiters"],
        message="the acquire call is waiting in line",
    )
    started = time.monotonic()
    server.process.send_signal(signal.SIGTERM)
    assert server.process.wait(10) == 0
    assert time.monotonic() - started < 5
    waiting.join(10)
    # The waiting call was answered (refused: nothing was granted), not cut off.
    assert answers and answers[0].status_code == 503
    assert answers[0].headers["Retry-After"] == "1"
    log = "".join(server.log)
    assert "shutting down" in log and "stopped" in log
    assert "Traceback" not in log


def test_more_kept_alive_connections_than_select_can_watch_are_all_served(server_factory):
    """A fleet of remote agents keeps one connection each; 1,024 must not be a ceiling."""
    held = 1100
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < held + 200:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, held + 200), hard))
    server = server_factory(ORCHESTRATOR_HOST="127.0.0.1")
    host, port = server.url.removeprefix("http://").split(":")
    sockets: list[socket.socket] = []
    try:
        for _ in range(held):
            sockets.append(socket.create_connection((host, int(port)), timeout=10))
        # The newest of them is answered: it was accepted and is watched.
        sockets[-1].sendall(b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n")
        assert sockets[-1].recv(64).startswith(b"HTTP/1.1 200")
        # And a fresh client still gets through while all of them stay open.
        assert requests.get(server.url + "/health", timeout=10).status_code == 200
    finally:
        for sock in sockets:
            with contextlib.suppress(OSError):
                sock.close()
    assert "Traceback" not in "".join(server.log)


def test_a_public_bind_without_admin_token_warns(server_factory):
    server = server_factory(ORCHESTRATOR_HOST="0.0.0.0")
    assert any("ORCH_ADMIN_TOKEN is not set" in line for line in server.log)
    assert server.stop() == 0


def test_bad_configuration_fails_start_up_with_one_line_naming_the_variable():
    result = subprocess.run(
        [sys.executable, "-m", "orch", "serve"],
        env={**os.environ, "ORCHESTRATOR_PORT": "eighty"},
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "ORCHESTRATOR_PORT" in lines[0]


def test_help_runs():
    result = subprocess.run(
        [sys.executable, "-m", "orch", "--help"], capture_output=True, text=True, timeout=30
    )
    assert result.returncode == 0
    assert "serve" in result.stdout


EMBEDDED_SERVE = """
import logging
from orch import Agent, Orchestrator, serve

class Echo(Agent):
    capabilities = {"echo"}

    def handle(self, task):
        return {"echo": task.payload}

logging.basicConfig(level=logging.INFO)
orch = Orchestrator().start()
orch.attach(Echo("echo-1"))
serve(orch, port=0)
"""


def test_orch_serve_serves_an_embedded_orchestrator_until_sigterm():
    process = subprocess.Popen(
        [sys.executable, "-c", EMBEDDED_SERVE],
        env={**os.environ, "ORCHESTRATOR_HOST": "127.0.0.1"},
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert process.stderr is not None
        for line in process.stderr:
            match = LISTENING.search(line)
            if match:
                break
        else:
            raise AssertionError("orch.serve() never listened")
        url = f"http://{match.group(1)}:{match.group(2)}"
        # The in-process agent attached before serve() takes work submitted over HTTP.
        submitted = requests.post(
            f"{url}/tasks/assign",
            json={"task_id": 1, "capabilities": ["echo"], "payload": {"n": 1}},
            timeout=5,
        )
        assert submitted.status_code in (200, 202), submitted.text
        wait_until(
            lambda: requests.get(f"{url}/tasks/1", timeout=5).json()["status"] == "completed"
        )
        assert requests.get(f"{url}/tasks/1", timeout=5).json()["result"] == {"echo": {"n": 1}}
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0
    finally:
        reap(process)
