"""The launcher with real processes: a server, a launcher, and the agents it starts."""

from __future__ import annotations

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
