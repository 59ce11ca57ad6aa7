"""What of the Dockerfile can be checked without a Docker engine.

No engine runs in CI, so the image is not built here. Its ``HEALTHCHECK`` command is
what can go wrong quietly (a tool the image lacks, the wrong port, an exit status
Docker reserves), so that command, as written in the Dockerfile, is run by the same
shell against a real server process, and the instructions it relies on are read.
"""

from __future__ import annotations

import configparser
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

from tests.e2e.conftest import ServerProcess

ROOT = Path(__file__).resolve().parents[2]


def instructions() -> list[tuple[str, str]]:
    """The Dockerfile's (INSTRUCTION, arguments), continuation lines joined."""
    text = re.sub(r"\\\n\s*", " ", (ROOT / "Dockerfile").read_text())
    found = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            name, _, rest = line.partition(" ")
            found.append((name.upper(), rest.strip()))
    return found


def healthcheck() -> tuple[dict[str, str], str]:
    """The HEALTHCHECK's options and its shell-form command."""
    [arguments] = [rest for name, rest in instructions() if name == "HEALTHCHECK"]
    options_text, _, command = arguments.partition(" CMD ")
    options = dict(option.removeprefix("--").split("=", 1) for option in options_text.split())
    return options, command


def image_env() -> dict[str, str]:
    env: dict[str, str] = {}
    for name, rest in instructions():
        if name == "ENV":
            env.update(pair.split("=", 1) for pair in shlex.split(rest))
    return env


def run_healthcheck(port: str) -> subprocess.CompletedProcess[str]:
    """The command as Docker runs a shell-form CMD: ``/bin/sh -c``, the image's env."""
    _, command = healthcheck()
    bin_dir = str(Path(sys.executable).parent)  # where pip put the console script
    env = {
        "PATH": f"{bin_dir}:/usr/bin:/bin",
        "HOME": os.environ.get("HOME", "/tmp"),
        **image_env(),
        "ORCHESTRATOR_PORT": port,
    }
    return subprocess.run(
        ["/bin/sh", "-c", command], env=env, capture_output=True, text=True, timeout=60
    )


def test_the_healthcheck_command_passes_against_a_running_server_and_fails_once_it_stops(
    server_factory,
):
    # Out of the box the TODO service and gateway are not there: degraded, still healthy
    # for Docker (restarting the container would not bring them). An admin token set in
    # the container does not matter: /health is public.
    server: ServerProcess = server_factory(ORCH_ADMIN_TOKEN="docker-admin-token")
    port = server.url.rsplit(":", 1)[1]
    assert run_healthcheck(port).returncode == 0
    server.stop()
    stopped = run_healthcheck(port)
    assert stopped.returncode == 1  # Docker reserves 2; the client's 3 is mapped to 1


def test_the_healthcheck_uses_only_what_the_image_installs():
    options, command = healthcheck()
    program = shlex.split(command)[0]
    setup = configparser.ConfigParser()
    setup.read(ROOT / "setup.cfg")
    scripts = setup["options.entry_points"]["console_scripts"]
    assert f"{program} = " in scripts  # the image's `pip install .` puts it on PATH
    assert "curl" not in command and "wget" not in command
    # The client's own time limit ends before Docker kills the check.
    client_limit = float(re.search(r"--timeout (\S+)", command).group(1))
    assert client_limit < float(options["timeout"].rstrip("s"))
    assert "${ORCHESTRATOR_PORT}" in command  # follows the port the server was given


def test_state_lives_in_the_volume_and_the_server_runs_unprivileged():
    found = instructions()
    env = image_env()
    volumes = [rest for name, rest in found if name == "VOLUME"]
    assert volumes == ["/data"] and env["ORCH_DB"].startswith("/data/")
    assert ("USER", "nobody") in found
    assert env["ORCHESTRATOR_HOST"] == "0.0.0.0"
