"""orch/launcher/instance.py: one process's supervision, with time passed in.

Real child processes (the crash program, a sleeper); the launcher's clock is the
``now`` each call is given, so backoffs and grace periods are decided without waiting.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from orch.launcher.config import parse_config
from orch.launcher.instance import Instance, LaunchContext
from orch.launcher.logs import AgentLog
from tests.launcher.conftest import alive, poll, program_file

CONTEXT = LaunchContext(
    url="http://127.0.0.1:9", base_env=dict(os.environ), identity={"launcher": "l", "host": "h"}
)


@pytest.fixture
def instances(tmp_path) -> Iterator[list[Instance]]:
    made: list[Instance] = []
    yield made
    for instance in made:
        if instance.child is not None:
            instance.child.signal_group(signal.SIGKILL)
            instance.child.process.wait(10)
        instance.log.close()


def make(instances, tmp_path, command, **fields) -> Instance:
    table = {"command": command, **fields}
    program = parse_config({"programs": {"p": table}}).programs["p"]
    instance = Instance("p-1", program, AgentLog(str(tmp_path), "p-1", 10**6, 1))
    instance.token, instance.needs_registration, instance.server_state = "t" * 43, False, "idle"
    instances.append(instance)
    return instance


def ended(instance: Instance) -> None:
    assert instance.child is not None
    poll(lambda: instance.child.poll() is not None, message="process ended")


def test_a_crash_restarts_after_the_backoff_and_beyond_the_intensity_gives_up(instances, tmp_path):
    crash = make(
        instances,
        tmp_path,
        [sys.executable, program_file("crash.py")],
        max_restarts=1,
        backoff_initial_s=0.5,
    )
    crash.act(100.0, CONTEXT, shutting_down=False, server_up=True)
    assert crash.pending_metadata["pid"] == crash.child.pid
    ended(crash)
    crash.reap(100.0, shutting_down=False)
    assert crash.child is None and crash.restart_at == 100.5
    assert crash.pending_exits == [{"exit_code": 3, "restarting": True}]
    crash.act(100.4, CONTEXT, shutting_down=False, server_up=True)
    assert crash.child is None  # still backing off
    crash.act(100.5, CONTEXT, shutting_down=False, server_up=True)
    ended(crash)
    crash.reap(101.0, shutting_down=False)
    assert crash.gave_up and crash.server_state == "failed"
    assert crash.pending_exits[-1] == {"exit_code": 3, "restarting": False}
    crash.act(500.0, CONTEXT, shutting_down=False, server_up=True)
    assert crash.child is None  # failed: nothing launches it but a start


def test_a_stop_asked_for_is_not_a_crash_and_sigkill_follows_the_grace(instances, tmp_path):
    stubborn = make(
        instances, tmp_path, [sys.executable, program_file("stubborn.py")], stop_grace_s=2
    )
    stubborn.act(0.0, CONTEXT, shutting_down=False, server_up=True)
    pid = stubborn.child.pid
    poll(lambda: "ignoring SIGTERM" in Path(stubborn.log.path).read_text())
    stubborn.stop(1.0)
    stubborn.act(2.9, CONTEXT, shutting_down=False, server_up=True)
    stubborn.reap(2.9, shutting_down=False)
    assert alive(pid)  # SIGTERM is ignored; the grace has not run out
    stubborn.act(3.0, CONTEXT, shutting_down=False, server_up=True)
    ended(stubborn)
    stubborn.reap(3.0, shutting_down=False)
    assert stubborn.child is None and stubborn.pending_exits == [] and stubborn.restart_at is None


def test_the_process_gets_its_agent_and_the_programs_env_in_its_environment(instances, tmp_path):
    out = tmp_path / "env.json"
    code = f"import json, os; open({str(out)!r}, 'w').write(json.dumps(dict(os.environ)))"
    context = LaunchContext(CONTEXT.url, {"PATH": os.environ["PATH"]}, CONTEXT.identity)
    printer = make(instances, tmp_path, [sys.executable, "-c", code], env={"MODEL": "big"})
    printer.act(0.0, context, shutting_down=False, server_up=True)
    ended(printer)
    seen = json.loads(out.read_text())
    assert seen["ORCH_URL"] == CONTEXT.url and seen["ORCH_AGENT_ID"] == "p-1"
    assert seen["ORCH_AGENT_TOKEN"] == "t" * 43 and seen["MODEL"] == "big"
