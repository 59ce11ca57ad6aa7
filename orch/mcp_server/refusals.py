"""What an orchestrator refusal means to a model, and what it should do next.

A model reads a tool error as text and decides from it alone, so each one says what
happened (the orchestrator's own detail and status), that nothing changed, and the
one or two sensible next steps for that tool. ``Refusal`` carries the text to the MCP
layer, which returns it as a tool error (``isError``).
"""

from __future__ import annotations

import datetime
from typing import Any

from orch.errors import OrchestratorError

__all__ = ["Refusal", "explain"]

_TASK_TOOLS = frozenset({"report_progress", "complete_task", "fail_task"})
_LEASE_TOOLS = frozenset({"renew_lock", "release_lock"})


class Refusal(Exception):
    """A tool call the orchestrator refused; ``str()`` is the text for the model."""


def explain(
    tool: str, exc: OrchestratorError, url: str, agent_id: str, *, joined: bool = False
) -> str:
    """The tool error text for ``exc``, raised by ``tool`` acting for ``agent_id``.

    ``joined``: the session acts for a registration someone else owns, so a lost one
    is not registered again from here.
    """
    # The SDK puts "Error executing tool <tool>: " in front of this.
    head = f"the orchestrator refused: {exc.message} (HTTP {exc.status}, {exc.code})."
    return f"{head} {_advice(tool, exc, url, agent_id, joined)}"


def _advice(tool: str, exc: OrchestratorError, url: str, agent_id: str, joined: bool) -> str:
    code, details = exc.code, exc.details
    if code == "unreachable":
        return (
            f"The orchestrator at {url} cannot be reached, so nothing was recorded. Try "
            "again in a few seconds; if it keeps failing, stop and tell the user."
        )
    if code in ("unavailable", "timeout", "store_unavailable", "too_many_requests"):
        wait = details.get("retry_after_s")
        after = f"after {wait:g} s" if isinstance(wait, int | float) else "in a few seconds"
        return (
            f"Nothing was changed. The orchestrator is busy or recovering: call {tool} "
            f"again {after}."
        )
    if code in ("invalid", "payload_too_large", "unsupported_media_type"):
        field = details.get("field") or getattr(exc, "field", None) or "an argument"
        return f"Nothing was changed. Correct `{field}` and call {tool} again."
    if code == "unauthorized" and joined:
        return (
            "This agent's token was not accepted: its registration is gone (removed, or "
            "replaced after it was declared lost), so nothing was recorded. Its owner (the "
            "launcher or operator that registered it) must register it again; stop and "
            "tell the user."
        )
    if code == "unauthorized":
        return (
            "This agent's token was not accepted: its registration is gone (removed, or "
            "replaced after it was declared lost). The server is registering it again in "
            "the background; call agent_status in a few seconds, and if it stays "
            "unregistered, stop and tell the user."
        )
    if tool in _TASK_TOOLS:
        return _task_advice(code)
    if tool == "acquire_lock" and code == "conflict":
        return _lock_refused(details, agent_id)
    if tool in _LEASE_TOOLS and code in ("conflict", "not_found"):
        return (
            "That lease is no longer yours (it expired or was released) or the fencing "
            "token is not its current one. Do not write to the resource under the old "
            "token: call acquire_lock again and use the new fencing token."
        )
    if code == "not_found":
        return "Check the id: use it exactly as an earlier answer gave it."
    if code == "forbidden":
        return "This agent may not do that; call agent_status to see what it holds."
    return "Nothing was changed. If this keeps happening, stop and tell the user."


def _task_advice(code: str) -> str:
    if code == "not_found":
        return (
            "No task has that id. Use task_id exactly as next_task or agent_status gave "
            'it (123 and "123" are the same task).'
        )
    if code in ("forbidden", "conflict"):
        return (
            "This agent does not hold that task any more (it timed out, was cancelled or "
            "went to another agent), so nothing was recorded. Stop working on it; call "
            "agent_status to see the tasks you hold, or next_task for new work."
        )
    return "Nothing was recorded. Call agent_status to see the tasks you hold."


def _lock_refused(details: dict[str, Any], agent_id: str) -> str:
    holders = details.get("holders") or []
    for holder in holders:
        if holder.get("agent_id") == agent_id and holder.get("task_id") is not None:
            # A task's locks are held under "<task key>#<submission>" (lock_owner).
            task = str(holder["task_id"]).rpartition("#")[0] or holder["task_id"]
            return (
                f"Your task {task} already holds this lock: it was granted "
                "with the task. Use the fencing token next_task gave you "
                f"({holder.get('fencing_token')}); it is released when the task ends."
            )
    held = "; ".join(
        f"{h.get('agent_id')} holds it {h.get('mode')} with fencing token "
        f"{h.get('fencing_token')} until {_when(h.get('expires_at'))}"
        for h in holders
    )
    waiting = details.get("waiting_for") or []
    parts = [held] if held else []
    if waiting:
        parts.append(f"others are waiting in line for {', '.join(waiting)}")
    now = f" ({'; '.join(parts)})" if parts else ""
    return (
        f"You do not hold the lock{now}, so do not write to the resource. Call "
        "acquire_lock again with wait_s (up to 30 s) to wait in line, or do other work "
        "first and try later."
    )


def _when(epoch_s: Any) -> str:
    if not isinstance(epoch_s, int | float):
        return "unknown"
    moment = datetime.datetime.fromtimestamp(epoch_s, tz=datetime.UTC)
    return moment.isoformat(timespec="seconds")
