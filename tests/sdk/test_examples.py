"""The examples run as written, end to end, as the README's quick start runs them."""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from orch.client import OrchestratorClient
from tests.conftest import reap, wait_until
from tests.sdk.conftest import ADMIN_TOKEN

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def _env(url: str) -> dict[str, str]:
    return {**os.environ, "ORCH_URL": url, "ORCH_ADMIN_TOKEN": ADMIN_TOKEN}


def _start_worker(
    url: str, agent_id: str, capability: str, *args: str, logged: bool = True
) -> subprocess.Popen[str]:
    """``examples/worker.py`` as a user runs it; its log on stdout unless not ``logged``."""
    output = subprocess.PIPE if logged else subprocess.DEVNULL
    return subprocess.Popen(
        [
            sys.executable,
            str(EXAMPLES / "worker.py"),
            "--agent-id",
            agent_id,
            "--capability",
            capability,
            *args,
        ],
        env=_env(url),
        stdout=output,
        stderr=subprocess.STDOUT if logged else subprocess.DEVNULL,
        text=True,
    )


def test_embedded_example_runs_and_survives_the_crash():
    done = subprocess.run(
        [sys.executable, str(EXAMPLES / "embedded.py")],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert done.returncode == 0, done.stderr
    lines = done.stdout.splitlines()
    assert lines[0] == "result: {'echo': {'msg': 'hi'}}"
    assert lines[1].startswith("failed as expected: ") and "RuntimeError: boom" in lines[1]
    assert lines[2] == "after the crash: {'echo': {'n': 2}}"
    assert int(lines[3].removeprefix("restarts of echo-1: ")) >= 1


def _dead_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"  # nothing listens once closed


@pytest.mark.parametrize("urls", ["one", "several, the first dead"])
def test_worker_and_submit_examples_end_to_end(
    url: str, admin: OrchestratorClient, name: Callable, urls: str
):
    if urls != "one":
        url = f"{_dead_url()},{url}"  # as ORCH_URL lists a cluster's nodes
    agent_id, capability = name("example-worker"), name("example-cap")
    worker = _start_worker(url, agent_id, capability, "--max-tasks", "3")
    try:
        submitted = subprocess.run(
            [
                sys.executable,
                str(EXAMPLES / "submit.py"),
                "--capability",
                capability,
                "--count",
                "3",
                "--timeout",
                "20",
            ],
            env=_env(url),
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert submitted.returncode == 0, submitted.stdout + submitted.stderr
        results = re.findall(r"^(\S+) completed: (.*)$", submitted.stdout, re.MULTILINE)
        assert len(results) == 3
        for n, (_task_id, result) in enumerate(sorted(results, key=lambda r: r[1]), start=1):
            assert result == f'{{"echo": {{"msg": "hello {n}", "repo": "june"}}}}'
        assert worker.wait(20) == 0
    finally:
        reap(worker)
    assert worker.stdout is not None
    log = worker.stdout.read()
    assert "stopped after 3 task(s)" in log
    assert admin.agent(agent_id)["status"] == "stopped"
    assert {t["agent_id"] for t in admin.tasks(agent_id=agent_id)} == {agent_id}


def test_quick_start_worker_then_cli_submit_and_show(
    url: str, admin: OrchestratorClient, name: Callable
):
    agent_id, capability = name("quick-worker"), name("quick-cap")
    worker = _start_worker(url, agent_id, capability, "--max-tasks", "1", logged=False)
    try:
        wait_until(lambda: admin.agents(capability=capability)["active"] >= 1, timeout_s=15)
        cli = [sys.executable, "-m", "orch"]
        submitted = subprocess.run(
            [*cli, "tasks", "submit", "--capability", capability, "--payload", '{"msg":"hi"}'],
            env=_env(url),
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert submitted.returncode == 0, submitted.stderr
        task_id = re.fullmatch(r"task (\S+) (assigned to \S+|queued)\n", submitted.stdout)
        assert task_id is not None
        shown = subprocess.run(
            [*cli, "tasks", "show", task_id.group(1), "--wait", "20"],
            env=_env(url),
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert shown.returncode == 0, shown.stderr
        fields = dict(line.split(None, 1) for line in shown.stdout.splitlines())
        assert fields["status"] == "completed"
        assert fields["result"] == '{"echo":{"msg":"hi"}}'
        assert worker.wait(20) == 0
    finally:
        reap(worker)


def test_worker_example_stops_its_agent_on_sigterm(
    url: str, admin: OrchestratorClient, name: Callable
):
    # docker stop and systemd send SIGTERM; the agent must end stopped, not sit until lost.
    agent_id, capability = name("sigterm-worker"), name("sigterm-cap")
    worker = _start_worker(url, agent_id, capability)
    log: list[str] = []
    stdout = worker.stdout
    assert stdout is not None
    reader = threading.Thread(target=lambda: log.extend(stdout), daemon=True)  # line by line
    reader.start()
    try:
        # Its log, not the server's view: the agent is active before `with` is entered.
        wait_until(lambda: any("is ready" in line for line in log), timeout_s=15)
        worker.send_signal(signal.SIGTERM)
        assert worker.wait(20) == 0
    finally:
        reap(worker)
    reader.join(5)
    assert any("stopped after 0 task(s)" in line for line in log), log
    wait_until(
        lambda: admin.agent(agent_id)["status"] == "stopped",
        timeout_s=10,
        message="the worker's agent did not end stopped",
    )
