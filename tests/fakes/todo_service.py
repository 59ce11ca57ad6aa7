"""A small, real HTTP stand-in for the June TODO MCP service (README, "TODO service intake").

Same endpoints, request and response shapes and rules as the service: only
``available`` tasks can be reserved; ``implementation`` agents get ``concrete`` tasks,
``breakdown`` agents ``abstract`` and ``epic`` ones. Backed by a dict; it can be taken
down and brought back on the same port to stage an outage, or made to ``hang``: accept
every request and hold it without answering, as a wedged service does.
"""

from __future__ import annotations

import json
import re
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

TYPES_FOR_AGENT = {"implementation": {"concrete"}, "breakdown": {"abstract", "epic"}}


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
                if service._hold(self.path):
                    return
                length = int(self.headers.get("Content-Length") or 0)
                body = json.loads(self.rfile.read(length) or b"{}")
                status, answer = service.handle(self.path, body)
                self._answer(status, answer)

            def _answer(self, status: int, body: Any) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
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

    def handle(self, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        with self.lock:
            self.calls.append(path)
            self.bodies.append((path, body))
            if path == "/mcp/list_available_tasks":
                kinds = TYPES_FOR_AGENT.get(body.get("agent_type"), set())
                found = [
                    dict(t)
                    for t in self.tasks.values()
                    if t["task_status"] == "available" and t["task_type"] in kinds
                ][: int(body.get("limit", 10))]
                for task in found:
                    if task["id"] in self.stolen_on_list:
                        self.tasks[task["id"]].update(
                            task_status="in_progress", assigned_agent="competitor"
                        )
                return 200, {"tasks": found}
            if path == "/mcp/reserve_task":
                task = self.tasks.get(body.get("task_id"))
                if task is None:
                    return 200, {"success": False, "error": "no such task"}
                if task["task_status"] != "available":
                    return 200, {"success": False, "error": "task is not available"}
                task.update(task_status="in_progress", assigned_agent=body["agent_id"])
                return 200, {"success": True, "task": dict(task)}
            if path == "/mcp/complete_task":
                task = self.tasks.get(body.get("task_id"))
                if task is None or task["assigned_agent"] != body.get("agent_id"):
                    return 200, {"success": False, "error": "not reserved by this agent"}
                task.update(task_status="complete", notes=body.get("notes"))
                return 200, {"success": True, "task_id": task["id"], "completed": True}
            match = re.fullmatch(r"/tasks/(\d+)/unlock", path)
            if match:
                task = self.tasks.get(int(match.group(1)))
                if task is None or task["assigned_agent"] != body.get("agent_id"):
                    return 200, {"success": False, "error": "not reserved by this agent"}
                task.update(task_status="available", assigned_agent=None)
                return 200, {"success": True}
            return 404, {"error": f"no endpoint {path}"}
