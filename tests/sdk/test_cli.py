"""The command line: ``main(argv)`` in process, and ``python -m orch`` as scripts run it."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import sqlite3
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import Any

import pytest

from orch import cli
from orch.client import OrchestratorClient
from orch.store.sqlite import SCHEMA_VERSION, SQLiteStore
from tests.conftest import reap, wait_until
from tests.e2e.conftest import ServerProcess, start_server
from tests.sdk.conftest import ADMIN_TOKEN


def run_main(capsys: pytest.CaptureFixture[str], url: str, *argv: str) -> tuple[int, str, str]:
    code = cli.main(["--url", url, "--token", ADMIN_TOKEN, *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def run_process(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "orch", *argv],
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=30,
    )


def _agent(admin: OrchestratorClient, agent_id: str, capability: str) -> str:
    token = admin.register_agent(agent_id, "implementation", capabilities=[capability]).token
    admin.start_agent(agent_id)
    return token


def test_agents_list_pages_with_limit_and_offset(
    capsys: pytest.CaptureFixture[str], url: str, admin: OrchestratorClient, name: Callable
):
    capability = name("cli-page-cap")
    ids = sorted(name(f"cli-page-{n}") for n in range(3))
    for agent_id in ids:
        _agent(admin, agent_id, capability)
    listed = []
    for offset in ("0", "2"):
        code, out, _ = run_main(
            capsys,
            url,
            "agents",
            "list",
            "--capability",
            capability,
            "--limit",
            "2",
            "--offset",
            offset,
        )
        assert code == 0
        listed.append([line.split()[0] for line in out.splitlines()[1:-1]])
    assert listed == [ids[:2], ids[2:]]


def test_agents_commands_print_tables_and_change_state(
    capsys: pytest.CaptureFixture[str], url: str, admin: OrchestratorClient, name: Callable
):
    agent_id, capability = name("cli-agent"), name("cli-cap")
    _agent(admin, agent_id, capability)

    code, out, _ = run_main(capsys, url, "agents", "list", "--capability", capability)
    assert code == 0
    header, row = out.splitlines()[:2]
    assert header.split() == ["AGENT", "TYPE", "STATUS", "TASKS", "CAPABILITIES"]
    assert row.split() == [agent_id, "implementation", "idle", "0/1", capability]

    code, out, _ = run_main(capsys, url, "agents", "show", agent_id)
    assert code == 0
    # Keys are padded to the longest one; the test does not pin that width.
    assert re.search(r"^status +idle$", out, re.M)
    assert re.search(rf"^capabilities +\[{re.escape(json.dumps(capability))}\]$", out, re.M)

    assert run_main(capsys, url, "agents", "stop", agent_id)[1] == f"agent {agent_id}: stopped\n"
    assert admin.agent(agent_id)["status"] == "stopped"
    assert run_main(capsys, url, "agents", "start", agent_id)[1] == f"agent {agent_id}: started\n"
    code, out, _ = run_main(capsys, url, "agents", "remove", agent_id)
    assert (code, out) == (0, f"agent {agent_id}: deregistered\n")
    assert admin.agents(capability=capability)["agents"] == []


def test_tasks_submit_show_list_and_cancel(
    capsys: pytest.CaptureFixture[str], url: str, admin: OrchestratorClient, name: Callable
):
    agent_id, capability, task_id = name("cli-worker"), name("cli-cap"), name("cli-task")
    token = _agent(admin, agent_id, capability)

    code, out, _ = run_main(
        capsys,
        url,
        "tasks",
        "submit",
        "--id",
        task_id,
        "--capability",
        capability,
        "--payload",
        '{"msg": "hi"}',
        "--priority",
        "4",
    )
    assert (code, out) == (0, f"task {task_id} assigned to {agent_id}\n")
    admin.heartbeat(agent_id, token=token)
    admin.complete_task(agent_id, task_id, {"echo": {"msg": "hi"}}, token=token)

    code, out, _ = run_main(capsys, url, "tasks", "show", task_id)
    lines = dict(line.split(None, 1) for line in out.splitlines())
    assert code == 0
    assert lines["status"] == "completed" and lines["priority"] == "4"
    assert json.loads(lines["result"]) == {"echo": {"msg": "hi"}}
    assert json.loads(lines["payload"]) == {"msg": "hi"}

    code, out, _ = run_main(capsys, url, "tasks", "list", "--agent", agent_id)
    assert code == 0
    assert out.splitlines()[0].split() == [
        "TASK",
        "STATUS",
        "PRIORITY",
        "AGENT",
        "ATTEMPTS",
        "CREATED",
    ]
    assert out.splitlines()[1].split()[:5] == [task_id, "completed", "4", agent_id, "1/3"]

    queued = name("cli-queued")
    run_main(capsys, url, "tasks", "submit", "--id", queued, "--capability", name("nobody"))
    code, out, _ = run_main(capsys, url, "tasks", "cancel", queued)
    assert (code, out) == (0, f"task {queued}: cancelled\n")


def test_a_wait_that_runs_out_has_its_own_exit_status(
    capsys: pytest.CaptureFixture[str], url: str, name: Callable
):
    code, out, err = run_main(
        capsys, url, "tasks", "submit", "--capability", name("nobody"), "--wait", "0.3"
    )
    assert code == cli.EXIT_WAIT_RAN_OUT == 6 and out == ""
    assert err.startswith("june-orchestrator: task ") and "has not ended after 0.3s" in err


def _ends(url: str, admin: OrchestratorClient, agent_id: str, token: str, how: str) -> None:
    """Play ``agent_id``: take its one task and end it ``how`` (completed or dead)."""
    task_id = wait_until(
        lambda: admin.agent(agent_id)["current_tasks"], timeout_s=20, message="nothing assigned"
    )[0]
    with OrchestratorClient(url, timeout_s=10) as agent:
        if how == "completed":
            agent.complete_task(agent_id, task_id, {"ok": True}, token=token)
        else:
            agent.fail_task(agent_id, task_id, "it broke", retryable=False, token=token)


@pytest.mark.parametrize(
    ("how", "status"), [("completed", cli.EXIT_OK), ("dead", cli.EXIT_TASK_DEAD)]
)
def test_submit_wait_exits_by_how_the_task_ended(
    capsys: pytest.CaptureFixture[str],
    url: str,
    admin: OrchestratorClient,
    name: Callable,
    how: str,
    status: int,
):
    agent_id, capability = name("cli-ender"), name("cli-end")
    token = _agent(admin, agent_id, capability)
    ender = threading.Thread(target=_ends, args=(url, admin, agent_id, token, how))
    ender.start()
    try:
        code, out, _ = run_main(
            capsys, url, "tasks", "submit", "--capability", capability, "--wait", "20"
        )
    finally:
        ender.join(30)
    assert code == status
    lines = dict(line.split(None, 1) for line in out.splitlines())
    assert lines["status"] == how


def test_a_cancelled_task_has_its_own_exit_status(
    capsys: pytest.CaptureFixture[str], url: str, admin: OrchestratorClient, name: Callable
):
    queued = name("cli-cancelled")
    admin.assign_task({}, task_id=queued, capabilities=[name("nobody")])
    admin.cancel_task(queued)
    code, out, _ = run_main(capsys, url, "tasks", "show", queued, "--wait", "5")
    assert code == cli.EXIT_TASK_CANCELLED == 5
    assert dict(line.split(None, 1) for line in out.splitlines())["status"] == "cancelled"
    code, _, _ = run_main(capsys, url, "tasks", "show", queued)  # no --wait: just shown
    assert code == 0


def test_the_exit_statuses_are_distinct_and_documented():
    statuses = [
        cli.EXIT_OK,
        cli.EXIT_ERROR,
        cli.EXIT_USAGE,
        cli.EXIT_UNREACHABLE,
        cli.EXIT_TASK_DEAD,
        cli.EXIT_TASK_CANCELLED,
        cli.EXIT_WAIT_RAN_OUT,
    ]
    assert len(set(statuses)) == len(statuses)
    for status in statuses:
        assert f"{status} " in cli.EXIT_CODES_HELP


def test_locks_stats_health_and_events(
    capsys: pytest.CaptureFixture[str], url: str, admin: OrchestratorClient, name: Callable
):
    agent_id, resource = name("cli-locker"), name("cli-res")
    token = _agent(admin, agent_id, name("cap"))
    grant = admin.acquire_lock(agent_id, resource, token=token, ttl_s=30)

    code, out, _ = run_main(capsys, url, "locks", "list")
    assert code == 0
    row = next(line for line in out.splitlines() if line.startswith(resource))
    assert row.split() == [resource, "exclusive", f"{agent_id}#{grant.fencing_token}", "-", "1"]

    code, out, _ = run_main(capsys, url, "stats")
    stats = dict(line.split(None, 1) for line in out.splitlines()[1:])
    assert code == 0 and int(stats["total_agents"]) >= 1
    assert int(stats["locks.locks_held"]) >= 1

    code, out, _ = run_main(capsys, url, "health")
    assert code == 0 and out.split(":")[0] in ("healthy", "degraded")
    assert any(line.split()[:2] == ["store", "ok"] for line in out.splitlines())

    code, out, _ = run_main(capsys, url, "events", "--limit", "1000")
    mine = [line for line in out.splitlines() if f"resource={resource}" in line]
    assert code == 0 and "lock.granted" in mine[0]


def test_json_output_is_the_servers_answer_in_either_position(
    url: str, admin: OrchestratorClient, name: Callable
):
    agent_id = name("json-agent")
    _agent(admin, agent_id, name("cap"))
    env = {"ORCH_URL": url, "ORCH_ADMIN_TOKEN": ADMIN_TOKEN}

    after = run_process("agents", "show", agent_id, "--json", env=env)
    before = run_process("--json", "agents", "show", agent_id, env=env)
    assert after.returncode == before.returncode == 0
    assert json.loads(after.stdout)["agent_id"] == agent_id
    assert json.loads(before.stdout) == json.loads(after.stdout)

    listed = run_process("tasks", "list", "--json", env=env)
    assert set(json.loads(listed.stdout)) == {"tasks", "count"}
    stats = run_process("stats", "--json", env=env)
    assert json.loads(stats.stdout)["total_agents"] >= 1
    submitted = run_process(
        "tasks", "submit", "--json", "--payload", '{"a": 1}', "--capability", name("x"), env=env
    )
    answer = json.loads(submitted.stdout)
    assert answer["status"] == "queued" and answer["agent_id"] is None


def test_exit_codes_and_one_line_errors(url: str, name: Callable):
    env = {"ORCH_URL": url, "ORCH_ADMIN_TOKEN": ADMIN_TOKEN}
    missing = name("missing")

    not_found = run_process("tasks", "show", missing, env=env)
    assert not_found.returncode == 1 and not_found.stdout == ""
    assert not_found.stderr == f"june-orchestrator: no task '{missing}'\n"

    no_token = run_process("stats", env={"ORCH_URL": url, "ORCH_ADMIN_TOKEN": ""})
    assert no_token.returncode == 1
    assert no_token.stderr.startswith("june-orchestrator: this call needs the admin token")

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    dead = f"http://127.0.0.1:{port}"
    unreachable = run_process("--url", dead, "--failover-wait", "0.3", "health")
    assert unreachable.returncode == 3
    assert unreachable.stderr == (
        f"june-orchestrator: cannot connect to {dead} (connection refused)\n"
    )
    # Several URLs: the dead one is passed over, and the command works.
    over = run_process("stats", env={**env, "ORCH_URL": f"{dead}, {url}"})
    assert over.returncode == 0, over.stderr
    not_a_url = run_process("--url", "ftp://x", "health")
    assert not_a_url.returncode == 2
    assert not_a_url.stderr == (
        "june-orchestrator: --url (or $ORCH_URL) 'ftp://x' is not an orchestrator URL;"
        " give http:// or https:// and a host, like http://127.0.0.1:8005\n"
    )

    bad_payload = run_process("tasks", "submit", "--payload", "[1, 2]", env=env)
    assert bad_payload.returncode == 2
    assert bad_payload.stderr.splitlines() == [
        'june-orchestrator: --payload: must be a JSON object, like \'{"repo": "june"}\''
    ]
    unknown = run_process("tasks", "explode", env=env)
    assert unknown.returncode == 2 and "invalid choice" in unknown.stderr

    invalid = run_process("tasks", "submit", "--max-attempts", "0", env=env)
    assert invalid.returncode == 2
    assert invalid.stderr.splitlines()[-1].endswith("give a whole number of at least 1")


def test_main_returns_usage_and_help_codes(capsys: pytest.CaptureFixture[str]):
    assert cli.main(["agents"]) == 2
    assert "required" in capsys.readouterr().err
    assert cli.main(["--help"]) == 0
    assert "events" in capsys.readouterr().out


def _follow_events(url: str, after: int) -> tuple[subprocess.Popen[str], list[dict[str, Any]]]:
    """``events --follow --json`` as a subprocess, its lines parsed into a list as they come.

    Read on a thread, so that a missing line fails the test's wait instead of hanging it.
    """
    follower = subprocess.Popen(
        [sys.executable, "-m", "orch", "events", "--follow", "--json", "--after", str(after)],
        env={**os.environ, "ORCH_URL": url, "ORCH_ADMIN_TOKEN": ADMIN_TOKEN},
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    lines: list[dict[str, Any]] = []

    def read_lines() -> None:
        assert follower.stdout is not None
        for line in follower.stdout:
            lines.append(json.loads(line))

    threading.Thread(target=read_lines, daemon=True).start()
    return follower, lines


def test_events_follow_streams_until_interrupted(
    url: str, admin: OrchestratorClient, name: Callable
):
    agent_id = name("followed")
    start_at = admin.events(0)["next"]
    follower, lines = _follow_events(url, start_at)
    try:
        admin.register_agent(agent_id, "implementation")
        wait_until(
            lambda: any(e.get("agent_id") == agent_id for e in lines),
            timeout_s=10,
            message="the followed event was not printed",
        )
        first = next(e for e in lines if e.get("agent_id") == agent_id)
        assert first["type"] == "agent.registered" and first["seq"] > start_at
        follower.send_signal(signal.SIGINT)
        assert follower.wait(10) == 0
    finally:
        reap(follower)


def test_events_after_beyond_the_newest_shows_nothing_and_says_so(
    capsys: pytest.CaptureFixture[str], url: str, admin: OrchestratorClient, name: Callable
):
    admin.register_agent(name("before"), "implementation")
    newest = admin.events(0)["next"]
    code, out, err = run_main(capsys, url, "events", "--after", str(newest + 500))
    assert (code, out) == (0, "")  # not the whole ring again
    assert err == (
        f"june-orchestrator: --after {newest + 500} is ahead of the server, whose newest"
        f" event is {newest}; nothing to show\n"
    )


def test_events_follow_from_beyond_the_newest_says_ahead_and_carries_on(
    url: str, admin: OrchestratorClient, name: Callable
):
    before = name("before")
    admin.register_agent(before, "implementation")
    follower, lines = _follow_events(url, 999999999)
    notes: list[str] = []
    assert follower.stderr is not None
    threading.Thread(target=lambda: notes.extend(follower.stderr), daemon=True).start()
    try:
        agent_id = name("after")
        # Registered only once the first poll was answered (ahead): after it, not skipped.
        wait_until(lambda: notes, timeout_s=10, message="the follower said nothing")
        admin.register_agent(agent_id, "implementation")
        wait_until(
            lambda: any(e.get("agent_id") == agent_id for e in lines),
            timeout_s=10,
            message="the follower did not carry on from the newest event",
        )
        assert not any(e.get("agent_id") == before for e in lines)  # no replay
        follower.send_signal(signal.SIGINT)
        assert follower.wait(10) == 0
        [note] = [line.rstrip("\n") for line in notes]
        assert note.startswith("june-orchestrator: --after 999999999 is ahead of the server")
        assert note.endswith("; following from there") and "restarted" not in note
    finally:
        reap(follower)


def test_events_follow_sees_a_restart_through_and_says_so():
    servers: list[ServerProcess] = [start_server({"TODO_SERVICE_URL": "", "GATEWAY_URL": ""})]
    first = servers[0]
    port = first.url.rsplit(":", 1)[1]
    OrchestratorClient(first.url).register_agent("old-1", "implementation")
    follower, lines = _follow_events(first.url, 0)
    try:
        wait_until(lambda: lines, timeout_s=10, message="the first server's event not printed")
        first.stop()
        env = {"ORCHESTRATOR_PORT": port, "TODO_SERVICE_URL": "", "GATEWAY_URL": ""}
        servers.append(start_server(env))
        OrchestratorClient(servers[1].url).register_agent("new-1", "implementation")
        wait_until(
            lambda: any(e.get("agent_id") == "new-1" for e in lines),
            timeout_s=20,
            message="the follower did not carry on with the restarted server",
        )
        assert [e["seq"] for e in lines] == [1, 1]  # numbered from 1 again, each once
        follower.send_signal(signal.SIGINT)
        assert follower.wait(10) == 0
        assert follower.stderr is not None
        notes = follower.stderr.read().splitlines()
        restarted = (
            "june-orchestrator: the server restarted and numbers its events from 1 again;"
            " following it from its first event"
        )
        assert notes[-1] == restarted
        # The client rides out a short outage itself (it tries for a while before it
        # says it cannot connect), so the loss is said only when it lasts that long.
        lost = f"june-orchestrator: cannot connect to {first.url}"
        assert all(note == restarted or note.startswith(lost) for note in notes), notes
    finally:
        reap(follower)
        for server in servers:
            reap(server.process)


def test_hard_to_read_values_are_refused_in_one_sentence(url: str, name: Callable):
    env = {"ORCH_URL": url, "ORCH_ADMIN_TOKEN": ADMIN_TOKEN}
    no_scheme = run_process("--url", "localhost:8005", "stats")
    assert no_scheme.returncode == 2
    assert no_scheme.stderr == (
        "june-orchestrator: --url (or $ORCH_URL) 'localhost:8005' is not an orchestrator"
        " URL; give http:// or https:// and a host, like http://127.0.0.1:8005\n"
    )
    bad_id = run_process("tasks", "submit", "--id", "my task", env=env)
    assert bad_id.returncode == 1
    assert bad_id.stderr == (
        "june-orchestrator: task_id: 'my task' is not a valid id: use 1-128 letters,"
        " digits or '._:-' (not only dots)\n"
    )
    for argv, said in [
        (("tasks", "submit", "--priority", "11"), "'11' is out of range; give a whole number"),
        (("tasks", "list", "--limit", "x"), "'x' is not a whole number; give a whole number"),
        (("tasks", "show", "t", "--wait", "soon"), "'soon' is not a number; give a number"),
        (("events", "--after", "-1"), "'-1' is negative; give an event's seq"),
        (("serve", "--port", "http"), "'http' is not a whole number; give a port number"),
        (("agents", "list", "--offset", "x"), "'x' is not a whole number; give a whole number"),
        (("agents", "list", "--offset", "-1"), "'-1' is negative; give a whole number"),
        (("--failover-wait", "soon", "stats"), "'soon' is not a number; give a number"),
        (("--failover-wait", "-1", "stats"), "'-1' is not 0 or more; give a number"),
    ]:
        refused = run_process(*argv, env=env)
        assert refused.returncode == 2, argv
        assert said in refused.stderr.splitlines()[-1], refused.stderr
    port = run_process("serve", env={"ORCHESTRATOR_PORT": "abc"})
    assert port.returncode == 2
    assert port.stderr == (
        "june-orchestrator: ORCHESTRATOR_PORT='abc': not a whole number;"
        " give a port number from 0 to 65535\n"
    )


def test_python_m_orch_lists_every_command_and_keeps_config_working():
    helped = run_process("--help")
    assert helped.returncode == 0
    for command in ("serve", "config", "agents", "tasks", "locks", "stats", "health", "events"):
        assert f"    {command}" in helped.stdout
    assert "3 cannot connect" in " ".join(helped.stdout.split())  # wherever argparse wraps

    config = run_process("config", env={"ORCHESTRATOR_PORT": "8123"})
    assert config.returncode == 0 and json.loads(config.stdout)["port"] == 8123
    bad = run_process("config", env={"ORCHESTRATOR_PORT": "x"})
    assert bad.returncode == 2 and bad.stderr.startswith("june-orchestrator: ORCHESTRATOR_PORT")


def test_serving_a_database_from_a_newer_version_fails_with_one_line(tmp_path):
    db_path = str(tmp_path / "newer.db")
    SQLiteStore(db_path).close()
    raw = sqlite3.connect(db_path)
    raw.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    raw.close()
    served = run_process(
        "serve",
        env={"ORCH_DB": db_path, "ORCHESTRATOR_PORT": "0", "TODO_SERVICE_URL": ""},
    )
    assert served.returncode == 1, served.stderr
    [line] = served.stderr.strip().splitlines()  # no traceback
    assert line.startswith("june-orchestrator: ")
    assert db_path in line and "newer version" in line and "ORCH_DB" in line
    raw = sqlite3.connect(db_path)
    assert raw.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1  # untouched
    raw.close()


def test_serving_on_a_port_in_use_fails_with_one_line(tmp_path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        served = run_process(
            "serve",
            env={
                "ORCH_DB": str(tmp_path / "orch.db"),
                "ORCHESTRATOR_PORT": str(port),
                "TODO_SERVICE_URL": "",
                "GATEWAY_URL": "",
            },
        )
    assert served.returncode == 1, served.stderr
    [line] = served.stderr.strip().splitlines()  # no traceback, and no actor was started
    assert line.startswith("june-orchestrator: cannot listen on 127.0.0.1:")
    assert str(port) in line and "ORCHESTRATOR_PORT" in line
