"""Client of the June TODO MCP service (README, "TODO service intake").

One pooled ``requests.Session``, a time-out on every call, and retries with backoff
only where a retry cannot do harm: listing tasks and the health check. Reserving,
completing, unlocking and blocking change the service's state, so a failure is
reported to the caller (the Intake), which decides, with what it has stored, whether
to try again.

The real service's answers decide the exceptions (tests/fakes/todo_service.py
behaves the same): ``reserve_task`` and ``complete_task`` refuse with **200**
``{"success": false}``; unlocking an id it does not know fails with a bare **500**.
So only "no answer" (cannot connect, time-out) and the gateway-style 502/503/504
mean the service is down (``TodoUnavailable``); a 500 is a failure of that one
request (``TodoRequestFailed``), which must not stop the Intake from polling.
"""

from __future__ import annotations

import time
from typing import Any

import requests

DEFAULT_TIMEOUT_S = 5.0


class TodoServiceError(Exception):
    """The TODO service answered, but not with success."""


class TodoUnavailable(TodoServiceError):
    """The TODO service could not be reached, timed out, or said it is down (502-504)."""


class TodoRequestFailed(TodoServiceError):
    """The service failed on this one request (500): not evidence that it is down."""


class ReservationRefused(TodoServiceError):
    """Another consumer reserved the task first, or it is no longer available."""


class TodoClient:
    """Typed calls to the TODO service; every failure is a ``TodoServiceError``."""

    def __init__(
        self,
        base_url: str,
        *,
        timeout_s: float = DEFAULT_TIMEOUT_S,
        read_retries: int = 2,
        retry_backoff_s: float = 0.2,
    ) -> None:
        self.base_url = base_url.rstrip("/")
        self._timeout_s = timeout_s
        self._read_retries = read_retries
        self._retry_backoff_s = retry_backoff_s
        self._session = requests.Session()

    def close(self) -> None:
        self._session.close()

    def health(self) -> dict[str, Any]:
        return self._call("GET", "/health", None, idempotent=True)

    def list_available_tasks(self, agent_type: str, limit: int) -> list[dict[str, Any]]:
        """Tasks an agent of ``agent_type`` could take now, at most ``limit``."""
        body = self._call(
            "POST",
            "/mcp/list_available_tasks",
            {"agent_type": agent_type, "limit": limit},
            idempotent=True,
        )
        tasks = body.get("tasks")
        if not isinstance(tasks, list):
            raise TodoServiceError("list_available_tasks answered without a 'tasks' list")
        return [t for t in tasks if isinstance(t, dict) and "id" in t]

    def reserve_task(self, task_id: Any, agent_id: str) -> dict[str, Any]:
        """Reserve for ``agent_id``; ``ReservationRefused`` if someone else has it."""
        body = self._call("POST", "/mcp/reserve_task", {"task_id": task_id, "agent_id": agent_id})
        if not body.get("success"):
            raise ReservationRefused(str(body.get("error") or "reservation refused"))
        task = body.get("task")
        return task if isinstance(task, dict) else {"id": task_id}

    def complete_task(self, task_id: Any, agent_id: str, notes: str | None) -> dict[str, Any]:
        """Report the task done by ``agent_id``."""
        payload: dict[str, Any] = {"task_id": task_id, "agent_id": agent_id}
        if notes:
            payload["notes"] = notes
        body = self._call("POST", "/mcp/complete_task", payload)
        if not body.get("success"):
            raise TodoServiceError(str(body.get("error") or "completion refused"))
        return body

    def unlock_task(self, task_id: Any, agent_id: str) -> None:
        """Give a reserved task back so another consumer may take it.

        The service checks neither owner nor status and answers without ``success``;
        an id it does not know is its bare 500 (``TodoRequestFailed``).
        """
        self._call("POST", f"/tasks/{task_id}/unlock", {"agent_id": agent_id})

    def block_task(self, task_id: Any, notes: str) -> dict[str, Any]:
        """Mark the task ``blocked`` with ``notes`` (why), so no consumer takes it again."""
        body = self._call("PATCH", f"/tasks/{task_id}", {"task_status": "blocked", "notes": notes})
        if body.get("task_status") != "blocked":
            raise TodoServiceError(f"PATCH /tasks/{task_id} left it {body.get('task_status')!r}")
        return body

    def _call(
        self, method: str, path: str, payload: Any, *, idempotent: bool = False
    ) -> dict[str, Any]:
        attempts = 1 + (self._read_retries if idempotent else 0)
        for attempt in range(attempts):
            try:
                return self._once(method, path, payload)
            except TodoUnavailable:
                if attempt + 1 >= attempts:
                    raise
                time.sleep(self._retry_backoff_s * 2**attempt)  # backoff between retries
        raise AssertionError("unreachable")

    def _once(self, method: str, path: str, payload: Any) -> dict[str, Any]:
        url = self.base_url + path
        try:
            answer = self._session.request(method, url, json=payload, timeout=self._timeout_s)
        except requests.Timeout:
            raise TodoUnavailable(f"{method} {url}: no answer within {self._timeout_s}s") from None
        except requests.RequestException as exc:
            raise TodoUnavailable(
                f"{method} {url}: cannot connect ({type(exc).__name__})"
            ) from None
        status = answer.status_code
        if status in (502, 503, 504):
            raise TodoUnavailable(f"{method} {url} answered {status}")
        if status >= 500:
            text = " ".join(answer.text.split())[:200]
            raise TodoRequestFailed(f"{method} {url} answered {status}: {text or 'no body'}")
        try:
            body = answer.json()
        except ValueError:
            raise TodoServiceError(f"{method} {url} answered non-JSON ({status})") from None
        if status >= 400:
            raise TodoServiceError(f"{method} {url} answered {status}: {_detail(body)}")
        if not isinstance(body, dict):
            raise TodoServiceError(f"{method} {url} answered JSON that is not an object")
        return body


def _detail(body: Any) -> str:
    """The service's reason: ``error``, or FastAPI's ``detail`` (a string, or 422's list)."""
    if not isinstance(body, dict):
        return "no reason given"
    detail = body.get("error") or body.get("detail")
    if isinstance(detail, list):  # 422: [{"loc": [...], "msg": ...}, ...]
        parts = []
        for item in detail:
            if isinstance(item, dict):
                where = ".".join(str(p) for p in item.get("loc", []) if p != "body")
                parts.append(f"{where}: {item.get('msg')}" if where else str(item.get("msg")))
        return "; ".join(parts) or "invalid request"
    return str(detail or "no reason given")
