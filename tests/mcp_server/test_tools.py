"""``june-orchestrator mcp`` driven by the official SDK's stdio client, against a real server.

Tools and their schemas, a whole task, a retried failure, locks with fencing tokens
between two sessions, and every refusal as a tool error that leaves the server up.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

import anyio

from orch.client import OrchestratorClient
from tests.mcp_server.conftest import (
    ADMIN_TOKEN,
    eventually,
    mcp_session,
    ok,
    refused,
    register_args,
    run,
)

TOOLS = {
    "next_task",
    "report_progress",
    "complete_task",
    "fail_task",
    "acquire_lock",
    "renew_lock",
    "release_lock",
    "list_locks",
    "agent_status",
}


def test_the_tools_are_listed_with_descriptions_and_bounded_schemas(
    url: str, name: Callable, errlog: Path
):
    async def scenario() -> None:
        async with mcp_session(
            url, *register_args(name("lister")), errlog=errlog, ORCH_ADMIN_TOKEN=ADMIN_TOKEN
        ) as session:
            info = session.initialize_result
            assert info is not None and info.server_info.name == "june-orchestrator"
            assert info.instructions and "next_task" in info.instructions
            tools = {tool.name: tool for tool in (await session.list_tools()).tools}
            assert set(tools) == TOOLS
            for tool in tools.values():
                # A description a model can act on: what it does, in a sentence or more.
                assert tool.description and len(tool.description) > 40, tool.name
                assert tool.input_schema["type"] == "object"
                for field, schema in tool.input_schema.get("properties", {}).items():
                    assert schema.get("description"), (tool.name, field)

            def schema(tool: str) -> dict:
                return tools[tool].input_schema

            wait = schema("next_task")["properties"]["wait_s"]
            assert (wait["minimum"], wait["maximum"]) == (0, 50)
            assert "required" not in schema("next_task")

            progress = schema("report_progress")
            assert progress["required"] == ["task_id", "message"]
            assert progress["properties"]["message"]["maxLength"] == 1024
            percent = progress["properties"]["percent"]["anyOf"][0]
            assert (percent["minimum"], percent["maximum"]) == (0, 100)

            assert schema("complete_task")["required"] == ["task_id"]
            assert schema("fail_task")["required"] == ["task_id", "error"]
            assert schema("fail_task")["properties"]["retryable"]["default"] is True

            acquire = schema("acquire_lock")
            assert acquire["required"] == ["resource"]
            assert acquire["properties"]["mode"]["enum"] == ["exclusive", "shared"]
            assert acquire["properties"]["wait_s"]["maximum"] == 30
            assert acquire["properties"]["ttl_s"]["exclusiveMinimum"] == 0
            assert schema("renew_lock")["required"] == ["resource", "fencing_token"]
            assert schema("release_lock")["required"] == ["resource", "fencing_token"]
            assert schema("release_lock")["properties"]["fencing_token"]["minimum"] == 1
            assert tools["list_locks"].annotations.read_only_hint is True
            assert tools["agent_status"].annotations.read_only_hint is True

    run(scenario)


def test_a_whole_task_from_next_task_through_progress_to_complete_task(
    url: str, admin: OrchestratorClient, name: Callable, errlog: Path
):
    agent_id, capability, repo = name("claude"), name("code"), name("repo")
    todo_task = {
        "id": 17,
        "title": "Fix the flaky login test",
        "task_type": "implementation",
        "task_instruction": "Find why test_login fails one run in ten and fix it.",
        "verification_instruction": "pytest tests/test_login.py passes 20 times in a row.",
    }

    async def scenario() -> None:
        async with mcp_session(
            url, *register_args(agent_id, capability), errlog=errlog, ORCH_ADMIN_TOKEN=ADMIN_TOKEN
        ) as session:
            # Nothing assigned yet: an ordinary answer, not an error.
            empty = await ok(session, "next_task", wait_s=0)
            assert empty["task"] is None and "next_task again" in empty["message"]

            task_id = admin.assign_task(
                todo_task, task_id=name("todo"), capabilities=[capability], resources=[repo]
            )["task_id"]
            answer = await ok(session, "next_task", wait_s=10)
            task = answer["task"]
            assert task["task_id"] == task_id and task["attempt"] == 1
            assert task["title"] == todo_task["title"]
            assert task["instructions"] == todo_task["task_instruction"]
            assert task["verification"] == todo_task["verification_instruction"]
            assert task["payload"] == todo_task
            fencing_token = admin.task(task_id)["fencing_tokens"][repo]
            assert task["resources"] == [{"resource": repo, "fencing_token": fencing_token}]

            status = await ok(session, "agent_status")
            assert status["agent_id"] == agent_id and status["state"] == "busy"
            assert [t["task_id"] for t in status["tasks"]] == [task_id]
            # Its one slot is taken: asking for more says to finish this one first.
            more = await ok(session, "next_task", wait_s=0)
            assert more["task"] is None and "You still hold tasks" in more["message"]

            reported = await ok(
                session, "report_progress", task_id=task_id, message="found the race", percent=40
            )
            assert reported["progress"]["message"] == "found the race"
            shown = admin.task(task_id)
            assert shown["status"] == "running"
            assert (shown["progress"]["message"], shown["progress"]["percent"]) == (
                "found the race",
                40.0,
            )

            done = await ok(
                session, "complete_task", task_id=task_id, result={"summary": "fixed the race"}
            )
            assert done == {"task_id": task_id, "status": "completed"}
            finished = admin.task(task_id)
            assert finished["status"] == "completed"
            assert finished["result"] == {"summary": "fixed the race"}
            assert finished["progress"]["message"] == "found the race"
            assert admin.locks() == [] or all(lock["resource"] != repo for lock in admin.locks())
            events = [
                e
                for e in admin.events(0)["events"]
                if e["type"] == "task.progress" and e["task_id"] == task_id
            ]
            assert [e["message"] for e in events] == ["found the race"]

    run(scenario)


def test_next_task_on_a_stopped_agent_says_no_work_will_come_instead_of_wait_again(
    url: str, admin: OrchestratorClient, name: Callable, errlog: Path
):
    """Told to call next_task again, a model would wait forever on an agent an
    operator stopped; it must hear why nothing comes and what would change that."""
    agent_id = name("halted")

    async def scenario() -> None:
        async with mcp_session(
            url, *register_args(agent_id), errlog=errlog, ORCH_ADMIN_TOKEN=ADMIN_TOKEN
        ) as session:
            admin.stop_agent(agent_id)

            async def state() -> str:
                return (await ok(session, "agent_status"))["state"]

            deadline = time.monotonic() + 15
            while await state() != "stopped":  # the background heartbeat brings the news
                assert time.monotonic() < deadline, "the session never saw the stop"
                await anyio.sleep(0.05)
            empty = await ok(session, "next_task", wait_s=0)
            assert empty["task"] is None
            assert "next_task again" not in empty["message"]
            assert "stopped" in empty["message"] and f"agents start {agent_id}" in empty["message"]

    run(scenario)


def test_a_failed_task_is_retried_and_handed_out_again(
    url: str, admin: OrchestratorClient, name: Callable, errlog: Path
):
    agent_id, capability = name("retrier"), name("flaky")

    async def scenario() -> None:
        async with mcp_session(
            url, *register_args(agent_id, capability), errlog=errlog, ORCH_ADMIN_TOKEN=ADMIN_TOKEN
        ) as session:
            task_id = admin.assign_task({"n": 1}, capabilities=[capability], max_attempts=2)[
                "task_id"
            ]
            first = (await ok(session, "next_task", wait_s=10))["task"]
            assert (first["task_id"], first["attempt"]) == (task_id, 1)
            failed = await ok(
                session, "fail_task", task_id=task_id, error="the build timed out", retryable=True
            )
            assert failed["status"] == "failed" and failed["attempts"] == 1
            assert "retried" in failed["note"]

            second = (await ok(session, "next_task", wait_s=20))["task"]  # after the backoff
            assert (second["task_id"], second["attempt"]) == (task_id, 2)
            await ok(session, "complete_task", task_id=task_id, result="built on the retry")
            finished = admin.task(task_id)
            assert (finished["status"], finished["attempts"]) == ("completed", 2)
            assert finished["result"] == "built on the retry"

            gives_up = admin.assign_task({}, capabilities=[capability])["task_id"]
            assert (await ok(session, "next_task", wait_s=10))["task"]["task_id"] == gives_up
            dead = await ok(
                session, "fail_task", task_id=gives_up, error="no such repo", retryable=False
            )
            assert dead["status"] == "dead" and "will not run again" in dead["note"]

    run(scenario)


def test_locks_with_fencing_tokens_between_two_sessions(
    url: str, admin: OrchestratorClient, name: Callable, errlog: Path
):
    resource = name("deploy:prod")

    async def scenario() -> None:
        async with (
            mcp_session(
                url, *register_args(name("first")), errlog=errlog, ORCH_ADMIN_TOKEN=ADMIN_TOKEN
            ) as first,
            mcp_session(
                url, *register_args(name("second")), errlog=errlog, ORCH_ADMIN_TOKEN=ADMIN_TOKEN
            ) as second,
        ):
            grant = await ok(first, "acquire_lock", resource=resource, ttl_s=30)
            assert grant["resource"] == resource and grant["mode"] == "exclusive"
            token = grant["fencing_token"]
            assert token >= 1 and 0 < grant["expires_in_s"] <= 30

            # The second session is refused while the first holds it, told by whom.
            text = await refused(second, "acquire_lock", resource=resource, wait_s=0)
            assert "409" in text and name("first") in text and f"fencing token {token}" in text
            assert "do not write" in text

            renewed = await ok(
                first, "renew_lock", resource=resource, fencing_token=token, ttl_s=60
            )
            assert renewed["fencing_token"] == token and renewed["expires_at"] > grant["expires_at"]
            listed = await ok(first, "list_locks")
            assert [(h["resource"], h["fencing_token"]) for h in listed["held_by_you"]] == [
                (resource, token)
            ]
            assert any(lock["resource"] == resource for lock in listed["all_locks"])

            released = await ok(first, "release_lock", resource=resource, fencing_token=token)
            assert released == {"resource": resource, "status": "released"}
            taken = await ok(second, "acquire_lock", resource=resource, mode="shared")
            assert taken["fencing_token"] > token  # the counter only ever rises
            assert (await ok(first, "list_locks"))["held_by_you"] == []

            # The old holder's token is void: a renew under it is refused.
            text = await refused(first, "renew_lock", resource=resource, fencing_token=token)
            assert "acquire_lock again" in text

    run(scenario)


def test_list_locks_without_the_admin_token_shows_this_sessions_leases(
    url: str, admin: OrchestratorClient, name: Callable, errlog: Path
):
    agent_id, resource = name("joined"), name("cache")
    token = admin.register_agent(agent_id, "implementation").token
    admin.start_agent(agent_id)

    async def scenario() -> None:
        async with mcp_session(
            url, errlog=errlog, ORCH_AGENT_ID=agent_id, ORCH_AGENT_TOKEN=token
        ) as session:
            grant = await ok(session, "acquire_lock", resource=resource)
            listed = await ok(session, "list_locks")
            assert listed["all_locks"] is None and "ORCH_ADMIN_TOKEN" in listed["note"]
            assert [(h["resource"], h["fencing_token"]) for h in listed["held_by_you"]] == [
                (resource, grant["fencing_token"])
            ]
            await ok(
                session, "release_lock", resource=resource, fencing_token=grant["fencing_token"]
            )
            assert (await ok(session, "list_locks"))["held_by_you"] == []

    run(scenario)


def test_list_locks_without_the_admin_token_shows_the_locks_granted_with_a_task(
    url: str, admin: OrchestratorClient, name: Callable, errlog: Path
):
    """A task's resources are locked for its holder; a model asking what it holds must
    hear of them, or it writes without the fencing token or takes a lock it has."""
    agent_id, capability, resource = name("task-locks"), name("tl"), name("repo")
    token = admin.register_agent(agent_id, "implementation", capabilities=[capability]).token
    admin.start_agent(agent_id)
    task_id = admin.assign_task({}, capabilities=[capability], resources=[resource])["task_id"]

    async def scenario() -> None:
        async with mcp_session(
            url, errlog=errlog, ORCH_AGENT_ID=agent_id, ORCH_AGENT_TOKEN=token
        ) as session:
            task = (await ok(session, "next_task", wait_s=10))["task"]
            fencing_token = task["resources"][0]["fencing_token"]
            listed = await ok(session, "list_locks")
            assert listed["all_locks"] is None
            assert listed["held_by_you"] == [
                {"resource": resource, "fencing_token": fencing_token, "task_id": task_id}
            ]
            await ok(session, "complete_task", task_id=task_id)
            assert (await ok(session, "list_locks"))["held_by_you"] == []

    run(scenario)


def test_the_time_left_on_a_lease_is_counted_when_asked_not_when_granted(
    url: str, admin: OrchestratorClient, name: Callable, errlog: Path
):
    """A model plans its renew_lock from ``expires_in_s``: a figure frozen at the grant
    would tell it the lease has its whole TTL left long after it has not."""
    agent_id, resource = name("lease-clock"), name("lease")
    token = admin.register_agent(agent_id, "implementation").token
    admin.start_agent(agent_id)

    async def scenario() -> None:
        async with mcp_session(
            url, errlog=errlog, ORCH_AGENT_ID=agent_id, ORCH_AGENT_TOKEN=token
        ) as session:
            grant = await ok(session, "acquire_lock", resource=resource, ttl_s=60)
            await anyio.sleep(1.0)  # time passes on the lease; no outcome waits on it
            asked_at = time.time()
            listed = (await ok(session, "list_locks"))["held_by_you"]
            status = (await ok(session, "agent_status"))["locks_taken_in_this_session"]
            for held in (listed[0], status[0]):
                assert held["fencing_token"] == grant["fencing_token"]
                # Counted at the answer, which came after asked_at (+ the rounding).
                assert held["expires_in_s"] <= grant["expires_at"] - asked_at + 0.001, held

    run(scenario)


def test_every_refusal_is_a_tool_error_that_says_what_to_do(
    url: str, admin: OrchestratorClient, name: Callable, errlog: Path
):
    me, other, capability = name("refused"), name("holder"), name("refusals")
    other_token = admin.register_agent(other, "implementation").token
    admin.start_agent(other)
    theirs = admin.assign_task({}, task_id=name("theirs"), agent_id=other)["task_id"]
    held = name("held-resource")
    admin.acquire_lock(other, held, token=other_token, ttl_s=60)

    async def scenario() -> None:
        async with mcp_session(
            url, *register_args(me, capability), errlog=errlog, ORCH_ADMIN_TOKEN=ADMIN_TOKEN
        ) as session:
            # 404: no such task.
            text = await refused(session, "complete_task", task_id=name("nope"))
            assert "404" in text and "task_id exactly as" in text
            # 409: completing or failing a task another agent holds.
            for tool, extra in (("complete_task", {}), ("fail_task", {"error": "x"})):
                text = await refused(session, tool, task_id=theirs, **extra)
                assert "409" in text and "does not hold that task" in text, text
            # 403: progress on a task another agent holds.
            text = await refused(session, "report_progress", task_id=theirs, message="mine?")
            assert "403" in text and "Stop working on it" in text
            # 409: a lock another agent holds; 404/409: leases that are not ours.
            text = await refused(session, "acquire_lock", resource=held)
            assert "409" in text and other in text
            text = await refused(session, "release_lock", resource=held, fencing_token=1)
            assert "404" in text and "acquire_lock again" in text
            # 400 from the orchestrator: a lease longer than this server allows
            # (ORCH_LOCK_MAX_TTL_S) though within the tool's schema; the field is named.
            text = await refused(session, "acquire_lock", resource=name("free"), ttl_s=1000)
            assert "400" in text and "Correct `ttl_s`" in text
            # A name that is only dots would be a path segment of its own: refused here.
            text = await refused(session, "acquire_lock", resource="..")
            assert "Correct `resource`" in text
            # Arguments outside their schema are refused before anything is sent.
            text = await refused(session, "report_progress", task_id=theirs, message="x" * 1025)
            assert "message" in text
            text = await refused(session, "next_task", wait_s=500)
            assert "wait_s" in text
            # None of it changed anything, and the server still serves.
            assert admin.task(theirs)["status"] in ("assigned", "running")
            assert admin.task(theirs)["progress"] is None
            status = await ok(session, "agent_status")
            assert status["state"] == "idle" and status["tasks"] == []

    run(scenario)


def test_an_unavailable_or_unreachable_orchestrator_is_a_tool_error_not_a_crash(
    server_factory: Callable, name: Callable, errlog: Path
):
    server = server_factory()
    resource = name("contended")

    async def scenario() -> None:
        async with (
            mcp_session(
                server.url, *register_args(name("a")), errlog=errlog, ORCH_ADMIN_TOKEN=ADMIN_TOKEN
            ) as holder,
            mcp_session(
                server.url, *register_args(name("b")), errlog=errlog, ORCH_ADMIN_TOKEN=ADMIN_TOKEN
            ) as waiter,
        ):
            await ok(holder, "acquire_lock", resource=resource)

            texts: list[str] = []

            async def wait_in_line() -> None:
                texts.append(await refused(waiter, "acquire_lock", resource=resource, wait_s=25))

            async with anyio.create_task_group() as group:
                group.start_soon(wait_in_line)
                admin = OrchestratorClient(server.url, token=ADMIN_TOKEN)
                await eventually(
                    lambda: any(lock["waiters"] for lock in admin.locks()),
                    message="the second session is not waiting in line",
                )
                server.stop()  # waiting lock calls are answered 503 as it shuts down
            assert "503" in texts[0] and "again" in texts[0], texts

            text = await refused(waiter, "agent_status")
            assert "cannot be reached" in text
            text = await refused(holder, "report_progress", task_id="t", message="m")
            assert "cannot be reached" in text

    run(scenario)
