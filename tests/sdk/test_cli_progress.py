"""``tasks show`` with progress and ``tasks watch``, against the shared real server."""

from __future__ import annotations

import io
import threading
from collections.abc import Callable

import pytest

from orch import cli
from orch.client import OrchestratorClient
from tests.conftest import wait_until
from tests.sdk.conftest import ADMIN_TOKEN


def run_main(capsys: pytest.CaptureFixture[str], url: str, *argv: str) -> tuple[int, str, str]:
    code = cli.main(["--url", url, "--token", ADMIN_TOKEN, *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def held_task(admin: OrchestratorClient, agent_id: str, task_id: str) -> str:
    """Register and start ``agent_id`` and assign it ``task_id``; its token."""
    token = admin.register_agent(agent_id, "implementation").token
    admin.start_agent(agent_id)
    assert admin.assign_task({}, task_id=task_id, agent_id=agent_id)["status"] == "assigned"
    return token


def test_tasks_show_prints_the_latest_progress_on_one_line(
    capsys: pytest.CaptureFixture[str], url: str, admin: OrchestratorClient, name: Callable
):
    agent_id, task_id = name("show-agent"), name("show-task")
    token = held_task(admin, agent_id, task_id)
    code, out, _ = run_main(capsys, url, "tasks", "show", task_id)
    assert code == 0 and "progress        -" in out
    admin.report_progress(agent_id, task_id, "tests\npass", 62.5, token=token)
    code, out, _ = run_main(capsys, url, "tasks", "show", task_id)
    line = next(line for line in out.splitlines() if line.startswith("progress"))
    assert line.split(None, 1)[1].startswith("62.5% tests pass (")
    code, out, _ = run_main(capsys, url, "tasks", "show", task_id, "--json")
    assert '"message": "tests\\npass"' in out


def test_tasks_watch_follows_progress_until_the_task_ends(
    url: str, admin: OrchestratorClient, name: Callable
):
    agent_id, task_id = name("watch-agent"), name("watch-task")
    token = held_task(admin, agent_id, task_id)
    args = cli.build_parser().parse_args(
        ["--url", url, "--token", ADMIN_TOKEN, "tasks", "watch", task_id, "--interval", "0.05"]
    )
    out = io.StringIO()
    codes: list[int] = []
    watcher = threading.Thread(target=lambda: codes.append(cli.run(args, out=out)))
    watcher.start()
    try:
        wait_until(lambda: "assigned" in out.getvalue(), message="first line not printed")
        admin.report_progress(agent_id, task_id, "compiling", 10, token=token)
        wait_until(lambda: "10% compiling" in out.getvalue(), message="progress not printed")
        admin.report_progress(agent_id, task_id, "linking", 90, token=token)
        wait_until(lambda: "90% linking" in out.getvalue(), message="progress not printed")
        admin.complete_task(agent_id, task_id, {"built": True}, token=token)
    finally:
        watcher.join(30)
    assert codes == [0]
    lines = out.getvalue().splitlines()
    assert len(lines) == 4, lines
    assert f"attempt 1 on {agent_id}" in lines[1]
    assert lines[-1].split("  ")[1] == "completed"
    assert "90% linking" in lines[-1] and lines[-1].endswith('{"built":true}')


def test_tasks_watch_exits_as_wait_does_when_the_task_ends_badly_or_the_wait_runs_out(
    capsys: pytest.CaptureFixture[str], url: str, admin: OrchestratorClient, name: Callable
):
    agent_id, task_id = name("watch-bad"), name("watch-bad-task")
    token = held_task(admin, agent_id, task_id)
    code, out, err = run_main(capsys, url, "tasks", "watch", task_id, "--wait", "0.2")
    assert code == cli.EXIT_WAIT_RAN_OUT and f"task {task_id} is still assigned" in err
    admin.cancel_task(task_id)
    code, out, _ = run_main(capsys, url, "tasks", "watch", task_id)
    assert code == cli.EXIT_TASK_CANCELLED and "cancelled" in out

    doomed = name("watch-dead")
    admin.assign_task({}, task_id=doomed, agent_id=agent_id, max_attempts=1)
    admin.fail_task(agent_id, doomed, "no such repo", False, token=token)
    code, out, _ = run_main(capsys, url, "tasks", "watch", doomed)
    assert code == cli.EXIT_TASK_DEAD and "no such repo" in out

    code, _, err = run_main(capsys, url, "tasks", "watch", name("no-such-task"))
    assert code == cli.EXIT_ERROR and "no task" in err


def test_tasks_watch_help_gives_the_exit_status_it_uses_when_the_wait_runs_out(
    capsys: pytest.CaptureFixture[str],
):
    assert cli.main(["tasks", "watch", "--help"]) == 0
    shown = " ".join(capsys.readouterr().out.split())
    assert f"exit {cli.EXIT_WAIT_RAN_OUT}" in shown and "exit 1" not in shown
