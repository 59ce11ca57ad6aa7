"""orch/mcp_server/refusals.py: each refusal's text says what happened and what to do.

The end-to-end tests meet 400, 403, 404, 409, 503 and an unreachable server; the
answers a live test cannot easily provoke (401, 429) are checked here directly.
"""

from __future__ import annotations

import pytest

from orch.client import Unreachable
from orch.errors import (
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    Timeout,
    TooManyRequests,
    Unauthorized,
    Unavailable,
)
from orch.mcp_server.refusals import explain

URL = "http://127.0.0.1:8005"


def text(tool, exc):
    return explain(tool, exc, URL, "claude-1")


def test_the_orchestrators_detail_and_status_come_first():
    said = text("complete_task", NotFound("no task 'x'"))
    assert said.startswith("the orchestrator refused: no task 'x' (HTTP 404, not_found).")


@pytest.mark.parametrize(
    ("exc", "advice"),
    [
        (Unreachable(f"cannot connect to {URL}"), f"at {URL} cannot be reached"),
        (Unavailable("busy", retry_after_s=2.0), "call agent_status again after 2 s"),
        (Timeout("slow"), "call agent_status again in a few seconds"),
        (TooManyRequests("slow down", retry_after_s=30.0), "again after 30 s"),
        (Unauthorized("unknown token"), "its registration is gone"),
        (Invalid("limit", "too big"), "Correct `limit`"),
    ],
)
def test_answers_any_tool_may_get(exc, advice):
    assert advice in text("agent_status", exc)


@pytest.mark.parametrize("exc", [Forbidden("not yours"), Conflict("not assigned to you")])
def test_a_task_that_is_no_longer_held_is_to_be_dropped(exc):
    for tool in ("report_progress", "complete_task", "fail_task"):
        assert "Stop working on it" in text(tool, exc)


def test_a_lock_refusal_names_the_holders_and_says_not_to_write():
    holder = {"agent_id": "other", "mode": "exclusive", "fencing_token": 7, "expires_at": 0.0}
    said = text("acquire_lock", Conflict("lock refused", holders=[holder], waiting_for=["db"]))
    assert "other holds it exclusive with fencing token 7 until 1970-01-01T00:00:00+00:00" in said
    assert "others are waiting in line for db" in said and "do not write" in said


def test_a_lock_the_agents_own_task_holds_points_at_the_tasks_token():
    holder = {"agent_id": "claude-1", "task_id": "todo:42#3", "fencing_token": 5}
    said = text("acquire_lock", Conflict("lock refused", holders=[holder]))
    assert "Your task todo:42 already holds this lock" in said and "(5)" in said


@pytest.mark.parametrize("exc", [Conflict("token 3 is not current"), NotFound("holds no lock")])
def test_a_lease_that_is_gone_is_to_be_acquired_again(exc):
    for tool in ("renew_lock", "release_lock"):
        assert "call acquire_lock again" in text(tool, exc)
