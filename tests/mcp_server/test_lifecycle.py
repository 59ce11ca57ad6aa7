"""The MCP server's life: heartbeats while the client is idle, and what ending a session does."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import anyio
import pytest

from orch.client import OrchestratorClient
from tests.conftest import reap, wait_until
from tests.mcp_server.conftest import (
    ADMIN_TOKEN,
    REPO,
    eventually,
    mcp_session,
    ok,
    refused,
    register_args,
    run,
)


def test_background_heartbeats_keep_an_idle_agent_healthy(
    server_factory: Callable, name: Callable, errlog: Path
):
    # Unhealthy after 4 missed beats of 0.5 s: 2 s without a heartbeat (not less: one
    # late beat on a loaded machine must not read as a missing background heartbeat).
    server = server_factory(
        ORCH_HEARTBEAT_INTERVAL_S="0.5",
        ORCH_UNHEALTHY_AFTER_MISSED="4",
        ORCH_LOST_AFTER_MISSED="60",
    )
    admin = OrchestratorClient(server.url, token=ADMIN_TOKEN)
    agent_id = name("idle")
    token = admin.register_agent(agent_id, "implementation").token
    admin.start_agent(agent_id)

    async def scenario() -> None:
        async with mcp_session(
            server.url, errlog=errlog, ORCH_AGENT_ID=agent_id, ORCH_AGENT_TOKEN=token
        ) as session:
            # The client does nothing for two and a half times the unhealthy threshold ...
            seen = set()
            idle_until = time.monotonic() + 5.0
            while time.monotonic() < idle_until:
                seen.add(admin.agent(agent_id)["status"])
                await anyio.sleep(0.1)
            # ... and the agent never stopped being healthy: the server beat for it.
            assert seen == {"idle"}, seen
            status = await ok(session, "agent_status")
            assert status["state"] == "idle" and status["heartbeat_interval_s"] == 0.5
            assert status["seconds_since_heartbeat"] < 2.0
            assert status["registered_by_this_session"] is False
        # A joined agent is left as it was found, and with nobody beating for it the
        # threshold is real: it turns unhealthy.
        assert admin.agent(agent_id)["status"] in ("idle", "unhealthy")
        await eventually(
            lambda: admin.agent(agent_id)["status"] == "unhealthy",
            timeout_s=15,
            message="the agent stayed healthy with no heartbeats",
        )

    run(scenario)


def test_a_self_registered_agent_is_drained_when_its_session_ends(
    url: str, admin: OrchestratorClient, name: Callable, errlog: Path
):
    agent_id, capability = name("drained"), name("drain")

    async def scenario() -> None:
        async with mcp_session(
            url, *register_args(agent_id, capability), errlog=errlog, ORCH_ADMIN_TOKEN=ADMIN_TOKEN
        ) as session:
            assert admin.agent(agent_id)["status"] == "idle"
            task_id = admin.assign_task({}, capabilities=[capability])["task_id"]
            assert (await ok(session, "next_task", wait_s=10))["task"]["task_id"] == task_id
            assert admin.task(task_id)["status"] == "running"
            # The session ends while a long next_task wait is still in flight.
            async with anyio.create_task_group() as group:
                group.start_soon(session.call_tool, "next_task", {"wait_s": 45})
                await ok(session, "agent_status")
                group.cancel_scope.cancel()
            ended_at = time.monotonic()
        # The client closed stdin: the agent is stopped, and the task it was given but
        # did not finish is back in the queue, its attempt not counted.
        agent = await eventually(
            lambda: (a := admin.agent(agent_id))["status"] == "stopped" and a,
            timeout_s=15,
            message="the agent was not stopped",
        )
        assert agent["current_tasks"] == []
        assert time.monotonic() - ended_at < 15
        task = admin.task(task_id)
        assert (task["status"], task["attempts"], task["agent_id"]) == ("pending", 0, None)
        kinds = [e["type"] for e in admin.events(0)["events"] if e.get("agent_id") == agent_id]
        assert "agent.stopped" in kinds or "agent.stopping" in kinds, kinds

    run(scenario)


def test_a_session_may_register_the_same_id_again_after_the_last_one_ended(
    url: str, admin: OrchestratorClient, name: Callable, errlog: Path
):
    agent_id = name("again")

    async def scenario() -> None:
        for _ in range(2):
            async with mcp_session(
                url, *register_args(agent_id), errlog=errlog, ORCH_ADMIN_TOKEN=ADMIN_TOKEN
            ) as session:
                assert (await ok(session, "agent_status"))["state"] == "idle"
            await eventually(lambda: admin.agent(agent_id)["status"] == "stopped")

    run(scenario)


def test_a_joined_agent_that_is_removed_is_not_registered_again_behind_its_owners_back(
    url: str, admin: OrchestratorClient, name: Callable, errlog: Path
):
    """A joined registration is its owner's (a launcher, an operator): removed, it
    stays removed, and the model is told to stop rather than that it is coming back.
    Registering it again from here would make an agent of another type with none of
    its capabilities, and with the id taken the owner could not register it again."""
    agent_id = name("removed")
    token = admin.register_agent(agent_id, "breakdown", capabilities=["plan"]).token
    admin.start_agent(agent_id)

    async def scenario() -> None:
        async with mcp_session(
            url,
            errlog=errlog,
            ORCH_AGENT_ID=agent_id,
            ORCH_AGENT_TOKEN=token,
            ORCH_ADMIN_TOKEN=ADMIN_TOKEN,  # it could register, but must not
        ) as session:
            admin.deregister_agent(agent_id)
            # The next background heartbeat is refused: the session has seen it.
            await eventually(
                lambda: (
                    f"heartbeat of {agent_id!r} failed" in (log := errlog.read_text())
                    or f"registering {agent_id!r} again" in log
                ),
                timeout_s=15,
                message="the refused heartbeat was not logged",
            )
            assert f"registering {agent_id!r} again" not in errlog.read_text()
            assert agent_id not in [a["agent_id"] for a in admin.agents()["agents"]]
            text = await refused(session, "agent_status")
            assert "401" in text and "registering it again" not in text
            assert "tell the user" in text

    run(scenario)


def start_mcp(url: str, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``python -m orch mcp`` run to its end, with no client on its stdin."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
    return subprocess.run(
        [sys.executable, "-m", "orch", "mcp", *args],
        env={**environ, "ORCH_URL": url, **env},
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=30,
    )


def test_a_wrong_token_or_missing_identity_ends_the_process_with_one_line(
    url: str, admin: OrchestratorClient, name: Callable
):
    agent_id = name("wrong")
    admin.register_agent(agent_id, "implementation")
    refused = start_mcp(url, ORCH_AGENT_ID=agent_id, ORCH_AGENT_TOKEN="not-its-token")
    assert refused.returncode == 1 and refused.stdout == ""
    assert refused.stderr.strip().splitlines()[-1].startswith("june-orchestrator mcp: ")

    missing = start_mcp(url)
    assert missing.returncode == 2 and "ORCH_AGENT_TOKEN" in missing.stderr

    unregistered = start_mcp(url, "--register")
    assert unregistered.returncode == 2 and "--agent-id" in unregistered.stderr

    without_admin = start_mcp(url, *register_args(name("no-admin")))
    assert without_admin.returncode == 1 and "admin token" in without_admin.stderr

    unreachable = start_mcp("http://127.0.0.1:9", ORCH_AGENT_ID="a", ORCH_AGENT_TOKEN="t")
    assert unreachable.returncode == 3 and "cannot connect" in unreachable.stderr

    noisy = start_mcp(url, ORCH_AGENT_ID="a", ORCH_AGENT_TOKEN="t", LOG_LEVEL="chatty")
    assert noisy.returncode == 2 and "LOG_LEVEL='CHATTY'" in noisy.stderr


def test_stdin_closing_at_once_ends_a_joined_session_cleanly(
    url: str, admin: OrchestratorClient, name: Callable
):
    agent_id = name("brief")
    token = admin.register_agent(agent_id, "implementation").token
    admin.start_agent(agent_id)
    ended = start_mcp(url, ORCH_AGENT_ID=agent_id, ORCH_AGENT_TOKEN=token)
    assert ended.returncode == 0 and ended.stdout == "", ended.stderr
    assert admin.agent(agent_id)["status"] == "idle"  # joined: left running


@pytest.mark.parametrize("when", ["starting", "serving"])
def test_sigterm_ends_the_session_and_drains_a_self_registered_agent(
    url: str, admin: OrchestratorClient, name: Callable, tmp_path: Path, when: str
):
    agent_id = name("terminated")
    environ = {k: v for k, v in os.environ.items() if not k.startswith("ORCH_")}
    log = tmp_path / "stderr.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "orch", "mcp", *register_args(agent_id)],
        env={**environ, "ORCH_URL": url, "ORCH_ADMIN_TOKEN": ADMIN_TOKEN},
        cwd=REPO,
        stdin=subprocess.PIPE,  # held open: only the signal ends the session
        stdout=subprocess.PIPE,
        stderr=log.open("w"),
        text=True,
    )
    try:
        wait_until(lambda: "acting for agent" in log.read_text(), timeout_s=20)
        assert admin.agent(agent_id)["status"] == "idle"
        if when == "serving":  # the MCP handshake answered: the transport is running
            assert process.stdin is not None and process.stdout is not None
            process.stdin.write(json.dumps(INITIALIZE) + "\n")
            process.stdin.flush()
            answer = json.loads(process.stdout.readline())
            assert answer["id"] == 1 and answer["result"]["serverInfo"]["name"]
        process.send_signal(signal.SIGTERM)
        assert process.wait(15) == 0, log.read_text()
        assert admin.agent(agent_id)["status"] == "stopped"
    finally:
        reap(process)


INITIALIZE = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "test", "version": "1"},
    },
}
