"""A small, real HTTP stand-in for the June TODO MCP service (README, "TODO service intake").

Same endpoints, request and response shapes and rules as the real service (FastAPI
over SQLite), including its odd answers, so that the tests hold the client to them:

* only ``available`` tasks can be reserved; ``implementation`` agents get ``concrete``
  tasks, ``breakdown`` agents ``abstract`` and ``epic`` ones, an unknown agent type
  none (``{"tasks": []}``);
* ``reserve_task`` and ``complete_task`` on an unknown or unavailable id answer
  **200** ``{"success": false, "error": ...}``, never 404 or 409; ``complete_task``
  works on any status, cancelled included, and checks no owner;
* ``POST /tasks/{id}/unlock`` checks neither owner nor status, answers without a
  ``success`` field, and for an unknown id fails with **500 text/plain** "Internal
  Server Error";
* ``PATCH /tasks/{id}`` sets ``task_status`` (one of ``STATUSES``) and ``notes``,
  answers the task, 404 ``{"detail": "Task N not found"}`` for an unknown id and 400
  for a status it does not know;
* a body that does not fit the endpoint is 422 ``{"detail": [{loc, msg, type}, ...]}``.

Backed by a dict; it can be taken down and brought back on the same port to stage an
outage, or made to ``hang``: accept every request and hold it without answering, as a
wedged service does.
"""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TYPES_FOR_AGENT = {"implementation": {"concrete"}, "breakdown": {"abstract", "epic"}}
STATUSES = ("available", "in_progress", "complete", "blocked", "cancelled")

#: Required fields and their types, per endpoint that takes a JSON body (FastAPI's 422).
FIELDS: dict[str, dict[str, tuple[type, ...]]] = {
    "/mcp/list_available_tasks": {"agent_type": (str,)},
    "/mcp/reserve_task": {"task_id": (int,), "agent_id": (str,)},
    "/mcp/complete_task": {"task_id": (int,), "agent_id": (str,)},
    "unlock": {"agent_id": (str,)},
}
#: Optional fields and their types (``None`` allowed).
OPTIONAL: dict[str, dict[str, tuple[type, ...]]] = {
    "/mcp/list_available_tasks": {"limit": (int,)},
    "/mcp/complete_task": {"notes": (str,)},
    "patch": {"task_status": (str,), "notes": (str,), "verification_status": (str,)},
}
INTERNAL_ERROR = "Internal Server Error"


def validation_errors(endpoint: str, body: Any) -> list[dict[str, Any]]:
    """What FastAPI would list in a 422's ``detail`` for this body (empty: it fits)."""
    if not isinstance(body, dict):
        return [{"loc": ["body"], "msg": "Input should be a valid dictionary", "type": "dict_type"}]
    errors = []
    for name, types in FIELDS.get(endpoint, {}).items():
        if name not in body:
            errors.append({"loc": ["body", name], "msg": "Field required", "type": "missing"})
        elif not isinstance(body[name], types) or isinstance(body[name], bool):
            kind = types[0].__name__
            errors.append(
                {"loc": ["body", name], "msg": f"Input should be a valid {kind}", "type": kind}
            )
    for name, types in OPTIONAL.get(endpoint, {}).items():
        value = body.get(name)
        if value is not None and (not isinstance(value, types) or isinstance(value, bool)):
            kind = types[0].__name__
            errors.append(
                {"loc": ["body", name], "msg": f"Input should be a valid {kind}", "type": kind}
            )
    return errors


class FakeTodoService:
    """The service's state and its HTTP server; ``url`` stays the same across restarts."""

    def __init__(self) -> None:
        self.tasks: dict[int, dict[str, Any]] = {}
        self.lock = threading.Lock()
        self.calls: list[str] = []
        self.bodies: list[tuple[str, dict[str, Any]]] = []  # (path, JSON body) of each call
        # Ids another consumer reserves right after they are listed to us (a race).
        self.stolen_on_list: set[int] = set()
        self._server: ThreadingHTTPServer | None = None
        self.port = 0
        # Cleared while hanging; held requests wait on it and then get no answer.
        self._answering = threading.Event()
        self._answering.set()
        self.held: list[tuple[str, float]] = []  # (path, time.monotonic()) of held requests

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def add_task(self, task_id: int, task_type: str = "concrete", **fields: Any) -> None:
        with self.lock:
            self.tasks[task_id] = {
                "id": task_id,
                "title": fields.get("title", f"task {task_id}"),
                "task_type": task_type,
                "task_instruction": fields.get("task_instruction", "do it"),
                "verification_instruction": fields.get("verification_instruction", "check it"),
                "task_status": "available",
                "assigned_agent": None,
                "notes": None,
            }

    def hang(self) -> None:
        """From now on, hold every request without answering (until ``answer_again``)."""
        self._answering.clear()

    def answer_again(self) -> None:
        """Stop hanging; requests held until now are dropped without an answer."""
        self._answering.set()

    def _hold(self, path: str) -> bool:
        """Hold the request while hanging; True if it was held (it gets no answer)."""
        if self._answering.is_set():
            return False
        with self.lock:
            self.held.append((path, time.monotonic()))
        self._answering.wait()
        return True

    def start(self) -> FakeTodoService:
        service = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:
                if service._hold(self.path):
                    return
                if self.path == "/health":
                    self._answer(200, {"status": "healthy"})
                else:
                    self._answer(404, {"error": "not found"})

            def do_POST(self) -> None:
                self._with_body("POST")

            def do_PATCH(self) -> None:
                self._with_body("PATCH")

            def _with_body(self, method: str) -> None:
                if service._hold(self.path):
                    return
                length = int(self.headers.get("Content-Length") or 0)
                try:
                    body = json.loads(self.rfile.read(length) or b"{}")
                except ValueError:
                    body = None  # not JSON: FastAPI's 422 names the body
                status, answer = service.handle(self.path, body, method)
                self._answer(status, answer)

            def _answer(self, status: int, body: Any) -> None:
                if isinstance(body, str):  # the real service's bare 500
                    data, kind = body.encode(), "text/plain; charset=utf-8"
                else:
                    data, kind = json.dumps(body).encode(), "application/json"
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self._server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self._server.daemon_threads = True
        self.port = self._server.server_address[1]
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        self._answering.set()  # let held requests go, so no handler thread lingers
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None

    def handle(self, path: str, body: Any, method: str = "POST") -> tuple[int, Any]:
        """The service's answer (status, JSON body, or text for its bare 500) to one call."""
        with self.lock:
            self.calls.append(path)
            self.bodies.append((path, body))
            unlock = re.fullmatch(r"/tasks/(\d+)/unlock", path)
            patch = re.fullmatch(r"/tasks/(\d+)", path)
            if method == "PATCH":
                if patch is None:
                    return 405, {"detail": "Method Not Allowed"}
                endpoint = "patch"
            else:
                endpoint = "unlock" if unlock else path
            errors = validation_errors(endpoint, body)
            if errors:
                return 422, {"detail": errors}
            if path == "/mcp/list_available_tasks":
                return 200, self._list(body)
            if path == "/mcp/reserve_task":
                return 200, self._reserve(body)
            if path == "/mcp/complete_task":
                return 200, self._complete(body)
            if unlock:
                task = self.tasks.get(int(unlock.group(1)))
                if task is None:
                    return 500, INTERNAL_ERROR  # the real service fails on an unknown id
                task.update(task_status="available", assigned_agent=None)
                return 200, {"message": f"Task {task['id']} unlocked", "task_id": task["id"]}
            if patch and method == "PATCH":
                return self._patch(int(patch.group(1)), body)
            return 404, {"detail": "Not Found"}

    def _list(self, body: dict[str, Any]) -> dict[str, Any]:
        kinds = TYPES_FOR_AGENT.get(body["agent_type"], set())
        found = [
            dict(t)
            for t in self.tasks.values()
            if t["task_status"] == "available" and t["task_type"] in kinds
        ][: int(body.get("limit") or 10)]
        for task in found:
            if task["id"] in self.stolen_on_list:
                self.tasks[task["id"]].update(
                    task_status="in_progress", assigned_agent="competitor"
                )
        return {"tasks": found}

    def _reserve(self, body: dict[str, Any]) -> dict[str, Any]:
        task = self.tasks.get(body["task_id"])
        if task is None:
            return {"success": False, "error": f"Task {body['task_id']} not found"}
        if task["task_status"] != "available":
            return {"success": False, "error": f"Task {task['id']} is not available"}
        task.update(task_status="in_progress", assigned_agent=body["agent_id"])
        return {"success": True, "task": dict(task)}

    def _complete(self, body: dict[str, Any]) -> dict[str, Any]:
        task = self.tasks.get(body["task_id"])
        if task is None:
            return {"success": False, "error": f"Task {body['task_id']} not found"}
        # Any status, any agent: the real service checks neither.
        task.update(task_status="complete", notes=body.get("notes"))
        return {"success": True, "task_id": task["id"], "completed": True}

    def _patch(self, task_id: int, body: dict[str, Any]) -> tuple[int, Any]:
        task = self.tasks.get(task_id)
        if task is None:
            return 404, {"detail": f"Task {task_id} not found"}
        status = body.get("task_status")
        if status:
            if status not in STATUSES:
                return 400, {"detail": "Invalid task_status"}
            task["task_status"] = status
            if status == "available":
                task["assigned_agent"] = None
        if body.get("notes"):
            task["notes"] = body["notes"]
        return 200, dict(task)
