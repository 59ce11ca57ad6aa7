"""The real server on PostgreSQL while the database server stops and starts again.

While PostgreSQL is away, ``/health`` shows the store check failing and a write waits
``ORCH_DB_WRITE_WAIT_S`` and is answered 503 ``store_unavailable``; once it is back,
the server serves again, and everything acknowledged before is still there. A database
from a newer version stops the server with one line; the backup command names pg_dump;
an answer kept for an Idempotency-Key survives kill -9, sealed.
"""

from __future__ import annotations

import os
import subprocess
import sys

import psycopg
import requests

from orch.store.postgres import PostgresStore
from orch.store.postgres_schema import SCHEMA_VERSION
from tests.conftest import wait_until
from tests.e2e.conftest import start_server
from tests.pg.server import Databases, PrivateServer


def store_check(url: str) -> tuple[int, dict]:
    answer = requests.get(f"{url}/health", timeout=10)
    return answer.status_code, answer.json()["checks"]["store"]


def test_a_lost_database_answers_503_and_health_says_so_until_it_is_back(
    restartable_pg: PrivateServer,
):
    databases = Databases(restartable_pg.url())
    db_url = databases.url_of(databases.create())
    server = start_server(
        {
            "ORCH_DB": db_url,
            "ORCH_DB_WRITE_WAIT_S": "1",
            "ORCH_DEPENDENCY_CHECK_INTERVAL_S": "0.2",
        }
    )
    try:
        url = server.url
        before = {"task_id": "before", "payload": {"n": 1}}
        answer = requests.post(f"{url}/tasks/assign", json=before, timeout=10)
        assert answer.status_code in (200, 202), answer.text
        wait_until(lambda: store_check(url)[1]["status"] == "ok", message="store checked")

        restartable_pg.stop()
        status, check = wait_until(
            lambda: (found := store_check(url))[1]["status"] == "failing" and found,
            timeout_s=15,
            message="/health shows the store failing",
        )
        assert status == 503 and "unreachable" in check["last_error"]
        refused = requests.post(
            f"{url}/tasks/assign", json={"task_id": "during", "payload": {}}, timeout=30
        )
        assert refused.status_code == 503, refused.text
        assert refused.json()["code"] == "store_unavailable"
        assert refused.headers["Retry-After"]

        restartable_pg.start()
        wait_until(
            lambda: (found := store_check(url))[0] == 200 and found[1]["status"] == "ok",
            timeout_s=30,
            message="/health shows the store back",
        )

        def submitted() -> bool:
            after = {"task_id": "after", "payload": {"n": 2}}
            answer = requests.post(f"{url}/tasks/assign", json=after, timeout=30)
            return answer.status_code in (200, 202)

        wait_until(submitted, timeout_s=30, message="writes are accepted again")
        tasks = requests.get(f"{url}/tasks", timeout=10).json()["tasks"]
        assert {"before", "after"} <= {task["task_id"] for task in tasks}
        assert "during" not in {task["task_id"] for task in tasks}
    finally:
        assert server.stop() == 0


def run_orch(*argv: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "orch", *argv],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


def test_serving_a_database_with_a_newer_schema_fails_with_one_line(pg_url):
    PostgresStore(pg_url).close()
    newer = SCHEMA_VERSION + 1
    with psycopg.connect(pg_url) as conn:
        conn.execute("UPDATE orch_schema SET version = %s", (newer,))
    served = run_orch(
        "serve",
        env={"ORCH_DB": pg_url, "ORCHESTRATOR_PORT": "0", "TODO_SERVICE_URL": ""},
    )
    assert served.returncode == 1, served.stderr
    [line] = served.stderr.strip().splitlines()  # no traceback
    assert line.startswith("june-orchestrator: ")
    assert f"schema version {newer}" in line and f"up to {SCHEMA_VERSION}" in line
    assert "ORCH_DB" in line
    with psycopg.connect(pg_url) as conn:
        assert conn.execute("SELECT version FROM orch_schema").fetchone() == (newer,)


def test_the_backup_command_refuses_postgresql_naming_pg_dump(pg_url, tmp_path):
    dest = tmp_path / "copy.db"
    refused = run_orch("backup", str(dest), env={"ORCH_DB": pg_url})
    assert refused.returncode == 1, refused.stderr
    [line] = refused.stderr.strip().splitlines()
    assert "pg_dump" in line and not dest.exists()


def test_a_kept_answer_survives_kill_9_and_a_restart_on_postgresql(pg_url):
    env = {"ORCH_DB": pg_url}
    body = {"agent_id": "a1", "agent_type": "implementation", "capabilities": ["code"]}
    key = {"Idempotency-Key": "reg-key-7f3a"}
    server = start_server(env)
    try:
        first = requests.post(f"{server.url}/agents/register", json=body, headers=key, timeout=10)
        assert first.status_code == 200
    finally:
        server.process.kill()  # SIGKILL: nothing is flushed on the way out
        server.process.wait(10)
    with psycopg.connect(pg_url) as conn:  # kept, and neither the token nor the key in clear
        [(stored_key, stored_body)] = conn.execute(
            "SELECT key, body FROM idempotent_answers"
        ).fetchall()
    assert "reg-key-7f3a" not in stored_key
    assert first.json()["token"].encode() not in bytes(stored_body)
    again_server = start_server(env)
    try:
        url = again_server.url
        again = requests.post(f"{url}/agents/register", json=body, headers=key, timeout=10)
        assert again.status_code == 200
        assert again.content == first.content
        assert again.headers["Idempotent-Replayed"] == "true"
        assert requests.get(f"{url}/agents", timeout=10).json()["total"] == 1
    finally:
        assert again_server.stop() == 0


def test_serving_an_unreachable_database_fails_with_one_line_without_its_password():
    from tests.pg.server import free_port

    port = free_port()  # nothing listens there
    served = run_orch(
        "serve",
        env={
            "ORCH_DB": f"postgresql://orch:s3cret@127.0.0.1:{port}/orch",
            "ORCHESTRATOR_PORT": "0",
            "TODO_SERVICE_URL": "",
        },
    )
    assert served.returncode == 1, served.stderr
    [line] = served.stderr.strip().splitlines()  # no traceback
    assert f"cannot open store postgresql://orch@127.0.0.1:{port}/orch" in line
    assert "s3cret" not in served.stderr
