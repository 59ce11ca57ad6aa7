"""``orch/client/__init__.py``: the names users import, and what importing them costs.

A script that only submits work must not load the agent runtime (heartbeat and lock
renewal threads); each check runs in a fresh interpreter, because this process has
long since imported everything.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

import orch.client
from orch.client import agent, answers, endpoint, leases

ROOT = Path(__file__).resolve().parents[2]

#: What ``orch.client`` exported as a single module; users' imports rely on every name.
PUBLIC_NAMES = {
    "DEFAULT_FAILOVER_WAIT_S",
    "DEFAULT_TIMEOUT_S",
    "DEFAULT_URL",
    "TERMINAL_TASK_STATES",
    "AgentClient",
    "AssignedTask",
    "Heartbeat",
    "HeldLock",
    "LockGrant",
    "LockLost",
    "OrchestratorClient",
    "Registration",
    "Unreachable",
    "error_from_response",
}

RUNTIME_MODULES = ("orch.client.agent", "orch.client.leases")


def run_python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )


def test_every_public_name_is_still_importable_from_orch_client():
    assert set(orch.client.__all__) == PUBLIC_NAMES
    namespace: dict[str, object] = {}
    exec("from orch.client import *", namespace)
    assert namespace.keys() >= PUBLIC_NAMES
    assert set(dir(orch.client)) >= PUBLIC_NAMES


def test_the_package_names_the_objects_its_modules_define():
    assert orch.client.OrchestratorClient is endpoint.OrchestratorClient
    assert orch.client.Unreachable is endpoint.Unreachable
    assert orch.client.error_from_response is answers.error_from_response
    assert orch.client.Heartbeat is answers.Heartbeat
    assert orch.client.AgentClient is agent.AgentClient
    assert orch.client.HeldLock is leases.HeldLock
    assert orch.client.LockLost is leases.LockLost


def test_submitting_work_does_not_import_the_agent_runtime():
    probe = run_python(
        "import sys\n"
        "import orch.client.endpoint\n"
        "from orch.client import OrchestratorClient, Unreachable, TERMINAL_TASK_STATES\n"
        "from orch.client import error_from_response, Heartbeat, LockGrant\n"
        f"loaded = [m for m in {RUNTIME_MODULES!r} if m in sys.modules]\n"
        "assert not loaded, loaded\n"
        "from orch.client import AgentClient\n"
        f"assert all(m in sys.modules for m in {RUNTIME_MODULES!r})\n"
        "assert AgentClient.__module__ == 'orch.client.agent'\n"
    )
    assert probe.returncode == 0, probe.stderr


def test_an_unknown_name_is_an_attribute_error_naming_it():
    with pytest.raises(AttributeError, match="NoSuchThing"):
        orch.client.NoSuchThing  # noqa: B018
