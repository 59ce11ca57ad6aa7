"""Real processes: a server (tests/e2e helpers), a launcher, and the agents it starts.

Every process a test starts is ended in a finalizer, even when the test fails: the
launcher is killed, and every process carrying this test's marker in its environment
(the launcher passes its environment on) is killed too, so nothing outlives a test.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from orch.client import OrchestratorClient
from tests.conftest import wait_until
from tests.e2e.conftest import ServerProcess, start_server

ROOT = Path(__file__).resolve().parents[2]
PROGRAMS = Path(__file__).resolve().parent / "programs"
ADMIN_TOKEN = "launcher-test-admin"
#: Generous: two cores shared by several test runs.
BOUND_S = 30.0

SERVER_ENV = {
    "ORCH_ADMIN_TOKEN": ADMIN_TOKEN,
    "ORCH_HEARTBEAT_INTERVAL_S": "1",
    "TODO_SERVICE_URL": "",
    "GATEWAY_URL": "",
}


def poll(predicate: Callable[[], Any], timeout_s: float = BOUND_S, message: str = "") -> Any:
    """``wait_until`` with the launcher tests' bound, pausing longer between polls:
    each one asks another process (the server, ``/proc``)."""
    return wait_until(predicate, timeout_s, message, interval_s=0.05)


def alive(pid: int) -> bool:
    """Is ``pid`` a running process (not a zombie)?"""
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False


def pids_with(marker: str) -> list[int]:
    """Running processes whose environment holds ``LAUNCHER_TEST_MARKER=marker``."""
    needle = f"LAUNCHER_TEST_MARKER={marker}".encode()
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/environ", "rb") as environ:
                if needle in environ.read().split(b"\0") and alive(int(entry)):
                    found.append(int(entry))
        except OSError:
            continue
    return found


@dataclass
class LauncherProcess:
    """A running ``python -m orch launcher`` with its captured log."""

    process: subprocess.Popen[str]
    config: Path
    log_dir: Path
    log: list[str] = field(default_factory=list)

    def logged(self, text: str) -> bool:
        return any(text in line for line in list(self.log))

    def signal(self, signum: int) -> None:
        self.process.send_signal(signum)


@dataclass
class Rig:
    """One test's server, launchers, files and the marker of every process it starts."""

    tmp: Path
    marker: str
    servers: list[ServerProcess] = field(default_factory=list)
    launchers: list[LauncherProcess] = field(default_factory=list)
    server: ServerProcess | None = None

    @property
    def client(self) -> OrchestratorClient:
        assert self.server is not None
        return OrchestratorClient(self.server.url, token=ADMIN_TOKEN, timeout_s=10)

    def start_server(self, **env: str) -> ServerProcess:
        server = start_server({**SERVER_ENV, **env})
        self.servers.append(server)
        self.server = server
        return server

    def write_config(self, text: str, name: str = "agents.toml") -> Path:
        path = self.tmp / name
        path.write_text(text)
        return path

    def start_launcher(
        self, config: Path, *, url: str | None = None, launcher_id: str = "test-host"
    ) -> LauncherProcess:
        assert self.server is not None
        env = {
            **os.environ,
            "ORCH_ADMIN_TOKEN": ADMIN_TOKEN,
            "LAUNCHER_TEST_MARKER": self.marker,
            "PYTHONUNBUFFERED": "1",
        }
        log_dir = self.tmp / f"logs-{launcher_id}"
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "orch",
                "launcher",
                "--config",
                str(config),
                "--url",
                url or self.server.url,
                "--log-dir",
                str(log_dir),
                "--id",
                launcher_id,
            ],
            env=env,
            cwd=ROOT,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            text=True,
        )
        launcher = LauncherProcess(process, config, log_dir)

        def read() -> None:
            assert process.stderr is not None
            for line in process.stderr:
                launcher.log.append(line)

        threading.Thread(target=read, daemon=True).start()
        self.launchers.append(launcher)
        return launcher

    def agent(self, agent_id: str) -> dict[str, Any]:
        with self.client as client:
            return client.agent(agent_id)

    def agent_or_none(self, agent_id: str) -> dict[str, Any] | None:
        from orch.errors import NotFound

        try:
            return self.agent(agent_id)
        except NotFound:
            return None

    def running(self, agent_id: str, other_than: int | None = None) -> dict[str, Any]:
        """Wait until the agent is idle with a live process (not ``other_than``)."""

        def ready() -> dict[str, Any] | None:
            agent = self.agent_or_none(agent_id)
            if agent is None or agent["status"] not in ("idle", "busy"):
                return None
            pid = agent["metadata"].get("pid")
            if pid is None or pid == other_than or not alive(pid):
                return None
            return agent

        return poll(ready, message=f"{agent_id} running with a new process")

    def cleanup(self) -> None:
        for launcher in self.launchers:
            if launcher.process.poll() is None:
                launcher.process.kill()
            launcher.process.wait(10)
        for pid in pids_with(self.marker):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(pid, signal.SIGKILL)
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        for server in self.servers:
            if server.process.poll() is None:
                server.process.kill()
            server.process.wait(10)


@pytest.fixture
def rig(tmp_path: Path) -> Iterator[Rig]:
    rig = Rig(tmp_path, uuid.uuid4().hex)
    try:
        yield rig
    finally:
        rig.cleanup()


def worker_program(name: str = "worker", instances: int = 1, **fields: Any) -> str:
    """A ``[programs.NAME]`` table running ``examples/worker.py``, short timings."""
    return program(
        name, [sys.executable, str(ROOT / "examples" / "worker.py")], instances, **fields
    )


def program(name: str, command: list[str], instances: int = 1, **fields: Any) -> str:
    """A ``[programs.NAME]`` table; ``fields`` are written as TOML values."""
    lines = [f"[programs.{name}]", f"command = {_toml(command)}", f"instances = {instances}"]
    defaults = {"capabilities": ["code"], "stop_grace_s": 5, "backoff_max_s": 0.5}
    for key, value in {**defaults, **fields}.items():
        lines.append(f"{key} = {_toml(value)}")
    return "\n".join(lines) + "\n\n"


def program_file(name: str) -> str:
    return str(PROGRAMS / name)


def _toml(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k} = {_toml(v)}" for k, v in value.items()) + "}"
    return str(value)
