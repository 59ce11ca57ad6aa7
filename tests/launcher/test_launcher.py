"""The launcher with real processes: a server, a launcher, and the agents it starts."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys

from tests.launcher.conftest import (
    ADMIN_TOKEN,
    ROOT,
    alive,
    pids_with,
    poll,
    program,
    program_file,
    worker_program,
)


def test_workers_run_unchanged_under_the_launcher_and_take_work(rig):
    rig.start_server()
    launcher = rig.start_launcher(rig.write_config(worker_program(instances=2)))
    first = rig.running("worker-1")
    second = rig.running("worker-2")
    assert first["metadata"]["pid"] != second["metadata"]["pid"]
    for agent in (first, second):
        assert agent["metadata"]["host"] and agent["metadata"]["launcher"] == "test-host"
        assert agent["metadata"]["program"] == "worker"
        assert agent["capabilities"] == ["code"]
    with rig.client as client:
        submitted = client.assign_task(payload={"msg": "hi"}, capabilities=["code"])
        done = client.wait_for_task(submitted["task_id"], timeout_s=30)
    assert done["status"] == "completed" and done["result"] == {"echo": {"msg": "hi"}}
    pid = first["metadata"]["pid"]
    with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
        assert b"ORCH_AGENT_TOKEN" not in cmdline.read()
    with open(f"/proc/{pid}/environ", "rb") as environ:
        variables = dict(
            item.split(b"=", 1) for item in environ.read().split(b"\0") if b"=" in item
        )
    assert variables[b"ORCH_AGENT_ID"] == b"worker-1"
    assert variables[b"ORCH_URL"].decode() == rig.server.url
    assert len(variables[b"ORCH_AGENT_TOKEN"]) >= 32
    assert b"ORCH_ADMIN_TOKEN" not in variables  # the launcher's secret stays with it
    assert launcher.process.poll() is None


def test_a_child_killed_with_sigkill_is_restarted_and_its_task_retried(rig):
    rig.start_server()
    rig.start_launcher(
        rig.write_config(
            program("hang", [sys.executable, program_file("hang_first.py")], backoff_initial_s=0.05)
        )
    )
    before = rig.running("hang-1")
    with rig.client as client:
        task_id = client.assign_task(payload={}, capabilities=["code"], max_attempts=3)["task_id"]
        poll(lambda: client.task(task_id)["status"] == "running", message="task running")
        os.kill(before["metadata"]["pid"], signal.SIGKILL)
        after = rig.running("hang-1", other_than=before["metadata"]["pid"])
        assert after["restarts"] == 1
        done = client.wait_for_task(task_id, timeout_s=30)
        assert done["status"] == "completed" and done["result"] == {"attempt": 2}
        assert done["attempts"] == 2
        metrics = client.metrics()
    assert "orchestrator_agent_restarts_total 1.0" in metrics
    assert "orchestrator_agent_crashes_total 1.0" in metrics
    history = [e for e in rig.client.events(0)["events"] if e["type"] == "task.failed"]
    assert history and history[0]["error"] == "process killed by SIGKILL"


def test_a_crash_loop_ends_failed_and_start_revives_it(rig):
    rig.start_server()
    launcher = rig.start_launcher(
        rig.write_config(
            program(
                "crash",
                [sys.executable, program_file("crash.py")],
                max_restarts=2,
                backoff_initial_s=0.05,
            )
        )
    )
    failed = poll(
        lambda: (a := rig.agent_or_none("crash-1")) and a["status"] == "failed" and a,
        message="crash-1 failed",
    )
    assert failed["restarts"] == 2
    assert failed["last_error"] == "process exited with status 3"
    log = launcher.log_dir / "crash-1.log"
    launches = log.read_text().count("launched pid")
    assert launches == 3  # the first run and two restarts, then no more
    with rig.client as client:
        assert client.start_agent("crash-1")["status"] == "started"
    poll(lambda: log.read_text().count("launched pid") > launches, message="launched again")
    poll(
        lambda: (
            rig.agent("crash-1")["status"] == "failed" and rig.agent("crash-1")["restarts"] == 4
        ),
        message="failed again after two more restarts",
    )


def test_rest_stop_stops_the_process_and_start_launches_it_again(rig):
    rig.start_server()
    rig.start_launcher(rig.write_config(worker_program()))
    first = rig.running("worker-1")
    pid = first["metadata"]["pid"]
    with rig.client as client:
        client.stop_agent("worker-1")
        poll(lambda: not alive(pid), message="process stopped")
        assert client.agent("worker-1")["status"] == "stopped"
        client.start_agent("worker-1")
    again = rig.running("worker-1", other_than=pid)
    assert again["restarts"] == 0  # a stop and a start are not a crash


def test_a_stop_drains_first_and_the_process_ends_after_its_task(rig, tmp_path):
    rig.start_server()
    rig.start_launcher(
        rig.write_config(program("gated", [sys.executable, program_file("gated.py")]))
    )
    pid = rig.running("gated-1")["metadata"]["pid"]
    gate = tmp_path / "gate"
    with rig.client as client:
        task_id = client.assign_task(payload={"gate": str(gate)}, capabilities=["code"])["task_id"]
        poll(lambda: client.task(task_id)["status"] == "running", message="task running")
        assert client.stop_agent("gated-1")["status"] == "stopping"
        assert alive(pid)  # draining: the process finishes its task first
        gate.touch()
        poll(lambda: not alive(pid), message="stopped once drained")
        assert client.task(task_id)["status"] == "completed"
        assert client.agent("gated-1")["status"] == "stopped"


def test_a_process_that_ignores_sigterm_is_killed_after_stop_grace(rig):
    rig.start_server()
    launcher = rig.start_launcher(
        rig.write_config(
            program("stubborn", [sys.executable, program_file("stubborn.py")], stop_grace_s=1)
        )
    )
    pid = poll(
        lambda: ((rig.agent_or_none("stubborn-1") or {}).get("metadata") or {}).get("pid"),
        message="launched",
    )
    poll(lambda: "ignoring SIGTERM" in (launcher.log_dir / "stubborn-1.log").read_text())
    with rig.client as client:
        client.stop_agent("stubborn-1")
    poll(lambda: not alive(pid), message="killed after the grace")
    poll(lambda: launcher.logged("did not stop within 1s; SIGKILL"))


def test_sighup_scales_up_and_down(rig):
    rig.start_server()
    config = rig.write_config(worker_program(instances=1))
    launcher = rig.start_launcher(config)
    one = rig.running("worker-1")
    config.write_text(worker_program(instances=3))
    launcher.signal(signal.SIGHUP)
    two, three = rig.running("worker-2"), rig.running("worker-3")
    config.write_text(worker_program(instances=1))
    launcher.signal(signal.SIGHUP)
    for gone in (two, three):
        poll(lambda gone=gone: not alive(gone["metadata"]["pid"]), message="stopped")
        poll(lambda gone=gone: rig.agent_or_none(gone["agent_id"]) is None, message="removed")
    assert rig.agent("worker-1")["metadata"]["pid"] == one["metadata"]["pid"]
    assert alive(one["metadata"]["pid"])
    config.write_text('[programs.worker]\ncommand = "not a list"\n')
    launcher.signal(signal.SIGHUP)
    poll(lambda: launcher.logged("programs.worker.command"), message="bad file refused")
    assert alive(one["metadata"]["pid"]) and launcher.process.poll() is None


def test_sigterm_stops_every_child_within_the_grace_and_exits_0(rig):
    rig.start_server()
    launcher = rig.start_launcher(
        rig.write_config(
            worker_program(instances=2)
            + program("stubborn", [sys.executable, program_file("stubborn.py")], stop_grace_s=1)
        )
    )
    rig.running("worker-1"), rig.running("worker-2")
    poll(
        lambda: ((rig.agent_or_none("stubborn-1") or {}).get("metadata") or {}).get("pid"),
        message="launched",
    )
    children = pids_with(rig.marker)
    assert len(children) >= 3
    launcher.signal(signal.SIGTERM)
    assert launcher.process.wait(BOUND_EXIT_S) == 0
    assert not [pid for pid in children if alive(pid)]
    with rig.client as client:
        assert {a["status"] for a in client.agents()["agents"]} == {"stopped"}


def test_sigkill_of_the_launcher_leaves_no_orphan_and_a_new_one_takes_over(rig):
    rig.start_server()
    config = rig.write_config(worker_program(instances=2))
    first = rig.start_launcher(config)
    old = {aid: rig.running(aid)["metadata"]["pid"] for aid in ("worker-1", "worker-2")}
    first.process.kill()
    first.process.wait(10)
    poll(lambda: not pids_with(rig.marker), message="every child died with the launcher")
    rig.start_launcher(config)
    for agent_id, pid in old.items():
        agent = rig.running(agent_id, other_than=pid)
        assert agent["metadata"]["launcher"] == "test-host"
    with rig.client as client:
        submitted = client.assign_task(payload={"n": 1}, capabilities=["code"])
        assert client.wait_for_task(submitted["task_id"], timeout_s=30)["status"] == "completed"


def test_a_new_launcher_keeps_the_agents_restarts_and_an_operators_stop(rig):
    rig.start_server()
    config = rig.write_config(worker_program(instances=2))
    first = rig.start_launcher(config)
    pid = rig.running("worker-1")["metadata"]["pid"]
    rig.running("worker-2")
    os.kill(pid, signal.SIGKILL)
    assert rig.running("worker-1", other_than=pid)["restarts"] == 1
    with rig.client as client:
        client.stop_agent("worker-2")
    poll(lambda: first.logged("worker-2 stopped"), message="worker-2's process stopped")
    # the tokens it keeps are readable by the launcher's user only
    assert os.stat(first.log_dir / "launcher-state.json").st_mode & 0o777 == 0o600
    first.process.kill()
    first.process.wait(10)
    poll(lambda: not pids_with(rig.marker), message="every child died with the launcher")
    second = rig.start_launcher(config)
    poll(lambda: second.logged("worker-2 taken back"), message="worker-2 taken back")
    again = rig.running("worker-1")
    # the same registration: its restarts go on (the kill with the launcher is one more)
    assert again["restarts"] == 2 and again["last_error"] == "process killed by SIGKILL"
    assert rig.agent("worker-2")["status"] == "stopped"
    assert not (rig.agent("worker-2")["metadata"] or {}).get("pid")
    events = [e["type"] for e in rig.client.events(0)["events"] if e.get("agent_id") == "worker-1"]
    assert events.count("agent.registered") == 1
    with rig.client as client:
        client.start_agent("worker-2")
    rig.running("worker-2")


def test_a_new_launcher_starts_what_a_launcher_stopped_never_what_an_operator_did(rig):
    rig.start_server()
    config = rig.write_config(worker_program(instances=2))
    first = rig.start_launcher(config)
    rig.running("worker-1"), rig.running("worker-2")
    with rig.client as client:
        client.stop_agent("worker-2")
    poll(lambda: first.logged("worker-2 stopped"), message="worker-2's process stopped")
    first.signal(signal.SIGTERM)
    assert first.process.wait(BOUND_EXIT_S) == 0
    assert rig.agent("worker-1")["status"] == "stopped"  # by the launcher's shutdown
    second = rig.start_launcher(config)
    pid = rig.running("worker-1")["metadata"]["pid"]
    poll(lambda: second.logged("worker-2 taken back; it stays stopped"), message="kept stopped")
    assert rig.agent("worker-2")["status"] == "stopped"
    second.process.kill()
    second.process.wait(10)
    poll(lambda: not alive(pid), message="worker-1's process died with the launcher")
    with rig.client as client:
        client.stop_agent("worker-1", False)  # an operator's stop while no launcher runs
    third = rig.start_launcher(config)
    poll(lambda: third.logged("worker-1 taken back; it stays stopped"), message="kept stopped")
    assert {rig.agent(a)["status"] for a in ("worker-1", "worker-2")} == {"stopped"}
    assert not third.logged("launched")


def test_a_helper_that_left_the_group_is_killed_with_its_agents_process(rig, tmp_path):
    rig.start_server()
    pid_file = tmp_path / "helper.pid"
    config = rig.write_config(
        program(
            "escaper",
            [sys.executable, program_file("escaper.py")],
            env={"ESCAPER_PID_FILE": str(pid_file)},
        )
    )
    first = rig.start_launcher(config)
    pid = rig.running("escaper-1")["metadata"]["pid"]
    helper = int(poll(lambda: pid_file.exists() and pid_file.read_text(), message="helper"))
    first.process.kill()  # the death signal takes the agent's process, not the helper
    first.process.wait(10)
    poll(lambda: not alive(pid), message="the agent's process died with the launcher")
    assert alive(helper)
    pid_file.unlink()
    rig.start_launcher(config)
    poll(lambda: not alive(helper), message="the stray helper killed by the new launcher")
    rig.running("escaper-1", other_than=pid)
    # and when the agent's process ends, its new helper goes with it
    second_helper = int(poll(lambda: pid_file.exists() and pid_file.read_text(), message="2"))
    with rig.client as client:
        client.stop_agent("escaper-1")
    poll(lambda: not alive(second_helper), message="the helper stopped with its agent")


def test_a_hung_process_whose_agent_is_lost_is_replaced_and_registered_again(rig):
    rig.start_server(ORCH_HEARTBEAT_INTERVAL_S="0.2")
    rig.start_launcher(rig.write_config(worker_program(stop_grace_s=1)))
    pid = rig.running("worker-1")["metadata"]["pid"]
    os.kill(pid, signal.SIGSTOP)  # hung: no more heartbeats, deaf to SIGTERM
    try:
        agent = rig.running("worker-1", other_than=pid)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGCONT)
    assert not alive(pid)
    assert agent["restarts"] == 0  # a new registration
    events = [e["type"] for e in rig.client.events(0)["events"] if e.get("agent_id") == "worker-1"]
    assert "agent.lost" in events and events.count("agent.registered") == 2


def test_a_live_agent_of_another_launcher_is_left_alone(rig):
    rig.start_server()
    config = rig.write_config(worker_program())
    rig.start_launcher(config, launcher_id="host-a")
    pid = rig.running("worker-1")["metadata"]["pid"]
    other = rig.start_launcher(config, launcher_id="host-b")
    poll(lambda: other.logged("belongs to launcher host-a"), message="refused to take over")
    agent = rig.agent("worker-1")
    assert agent["metadata"]["launcher"] == "host-a" and agent["metadata"]["pid"] == pid
    assert (
        not (other.log_dir / "worker-1.log").exists()
        or "launched" not in (other.log_dir / "worker-1.log").read_text()
    )


def test_the_server_going_away_and_coming_back(rig, tmp_path):
    db = str(tmp_path / "orch.db")
    server = rig.start_server(ORCH_DB=db)
    port = server.url.rsplit(":", 1)[1]
    launcher = rig.start_launcher(rig.write_config(worker_program()))
    pid = rig.running("worker-1")["metadata"]["pid"]
    poll(lambda: "is ready" in (launcher.log_dir / "worker-1.log").read_text())
    server.process.kill()
    server.process.wait(10)
    poll(lambda: launcher.logged("orchestrator unreachable"), message="launcher noticed")
    assert alive(pid)  # processes keep running while the server is away
    rig.start_server(ORCH_DB=db, ORCHESTRATOR_PORT=port)
    with rig.client as client:
        client.stop_agent("worker-1")  # decided the moment the server is back
        poll(lambda: not alive(pid), message="the stop caught up")
        client.start_agent("worker-1")
    rig.running("worker-1", other_than=pid)
    assert launcher.process.poll() is None


def test_logs_shows_and_follows_an_agents_output(rig):
    rig.start_server()
    launcher = rig.start_launcher(rig.write_config(worker_program()))
    rig.running("worker-1")
    command = [sys.executable, "-m", "orch", "launcher", "logs", "--log-dir", str(launcher.log_dir)]
    poll(lambda: "is ready at" in (launcher.log_dir / "worker-1.log").read_text())
    shown = subprocess.run([*command, "worker-1"], capture_output=True, text=True, cwd=ROOT)
    assert shown.returncode == 0 and "worker-1 is ready at" in shown.stdout
    missing = subprocess.run([*command, "nobody-1"], capture_output=True, text=True, cwd=ROOT)
    assert missing.returncode == 1 and "no log for 'nobody-1'" in missing.stderr
    follower = subprocess.Popen(
        [*command, "worker-1", "-f"], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    try:
        with rig.client as client:
            client.assign_task(payload={"msg": "followed"}, capabilities=["code"], task_id="t-f")
        assert follower.stdout is not None
        poll(lambda: "t-f completed" in follower.stdout.readline(), message="followed")
    finally:
        follower.kill()
        follower.wait(10)


def test_a_bad_file_is_refused_at_start_with_one_line_naming_program_and_field(tmp_path):
    config = tmp_path / "agents.toml"
    config.write_text('[programs.worker]\ncommand = ["python"]\ninstances = "two"\n')
    done = subprocess.run(
        [sys.executable, "-m", "orch", "launcher", "--config", str(config)],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**os.environ, "ORCH_ADMIN_TOKEN": ADMIN_TOKEN},
        timeout=60,
    )
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "programs.worker.instances" in lines[0], done.stderr


BOUND_EXIT_S = 30


def test_a_launcher_the_server_refuses_exits_1_saying_why(rig):
    rig.start_server()
    config = rig.write_config(worker_program())
    env = {k: v for k, v in os.environ.items() if k != "ORCH_ADMIN_TOKEN"}
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "orch",
            "launcher",
            "--config",
            str(config),
            "--url",
            rig.server.url,
            "--log-dir",
            str(rig.tmp / "logs"),
        ],
        capture_output=True,
        text=True,
        cwd=ROOT,
        env={**env, "ORCH_ADMIN_TOKEN": "wrong"},
        timeout=60,
    )
    assert done.returncode == 1
    assert "the orchestrator refuses the launcher" in done.stderr
    assert "ORCH_ADMIN_TOKEN" in done.stderr
