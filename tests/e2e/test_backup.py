"""``june-orchestrator backup`` against the real server while it takes writes, and a
server started on the copy."""

from __future__ import annotations

import os
import subprocess
import sys
import threading

import requests

from tests.conftest import wait_until
from tests.e2e.conftest import ServerProcess


def test_a_backup_taken_under_load_serves_everything_acknowledged_before_it(
    server_factory, tmp_path
):
    live_db = tmp_path / "live.db"
    server: ServerProcess = server_factory(ORCH_DB=str(live_db))
    url = server.url
    token = requests.post(
        f"{url}/agents/register", json={"agent_id": "a1", "agent_type": "impl"}, timeout=5
    ).json()["token"]
    acknowledged: list[str] = []
    refused: list[str] = []
    stop = threading.Event()

    def submit(k: int) -> None:
        n = 0
        while not stop.is_set():
            task_id = f"w{k}-{n}"
            answer = requests.post(
                f"{url}/tasks/assign",
                json={"task_id": task_id, "capabilities": ["nobody-has-this"]},
                timeout=10,
            )
            if answer.status_code != 202:  # 202: queued, as nobody can take it
                refused.append(f"{task_id}: {answer.status_code} {answer.text}")
                return
            acknowledged.append(task_id)
            n += 1

    clients = [threading.Thread(target=submit, args=(k,)) for k in range(4)]
    for client in clients:
        client.start()
    try:
        wait_until(lambda: len(acknowledged) >= 100, timeout_s=20)
        before = set(acknowledged)
        backup = subprocess.run(
            [sys.executable, "-m", "orch", "backup", str(tmp_path / "copy.db")],
            env={**os.environ, "ORCH_DB": str(live_db)},
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert backup.returncode == 0, backup.stderr
        assert backup.stdout.startswith(f"backed up {live_db} to {tmp_path / 'copy.db'}")
        during = len(acknowledged)
        wait_until(lambda: len(acknowledged) >= during + 20, timeout_s=20)  # never paused
    finally:
        stop.set()
        for client in clients:
            client.join()
    server.stop()
    assert refused == []  # the backup never made the server refuse a write

    restored = server_factory(ORCH_DB=str(tmp_path / "copy.db"))
    pending = requests.get(f"{restored.url}/tasks", params={"limit": 100000}, timeout=10).json()
    stored = {task["task_id"] for task in pending["tasks"]}
    assert before <= stored
    assert len(stored) < len(acknowledged)  # what came after the backup is not in it
    beat = requests.post(
        f"{restored.url}/agents/a1/heartbeat",
        headers={"Authorization": f"Bearer {token}"},
        timeout=5,
    )
    assert beat.status_code == 200, beat.text  # the token issued before the backup works
