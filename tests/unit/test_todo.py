"""orch/integrations/todo.py: answers mapped to clear exceptions; only idempotent calls retried."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from orch.integrations.todo import (
    ReservationRefused,
    TodoClient,
    TodoServiceError,
    TodoUnavailable,
)
from tests.unit.test_dependencies import free_port


@pytest.fixture
def failing() -> Iterator[tuple[str, list[str]]]:
    """A server that answers every request 503; yields its URL and the paths it saw."""
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args) -> None:
            pass

        def do_POST(self) -> None:
            seen.append(self.path)
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            data = json.dumps({"error": "overloaded"}).encode()
            self.send_response(503)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}", seen
    finally:
        server.shutdown()
        server.server_close()


def test_a_round_trip_of_calls_against_the_service(todo):
    todo.add_task(1, title="parser")
    todo.add_task(2, task_type="epic")
    client = TodoClient(todo.url, timeout_s=2)
    assert [t["id"] for t in client.list_available_tasks("implementation", 10)] == [1]
    assert [t["id"] for t in client.list_available_tasks("breakdown", 10)] == [2]
    assert client.reserve_task(1, "a1")["assigned_agent"] == "a1"
    client.complete_task(1, "a1", "done")
    assert todo.tasks[1]["task_status"] == "complete" and todo.tasks[1]["notes"] == "done"
    client.reserve_task(2, "b1")
    client.unlock_task(2, "b1")
    assert todo.tasks[2]["task_status"] == "available"
    assert client.health() == {"status": "healthy"}
    client.close()


def test_success_false_answers_are_clear_exceptions(todo):
    todo.add_task(1)
    client = TodoClient(todo.url, timeout_s=2)
    client.reserve_task(1, "a1")
    with pytest.raises(ReservationRefused, match="not available"):
        client.reserve_task(1, "a2")  # another consumer has it
    with pytest.raises(TodoServiceError, match="not reserved by this agent") as refused:
        client.complete_task(1, "a2", None)
    assert not isinstance(refused.value, TodoUnavailable)
    with pytest.raises(TodoServiceError, match="not reserved by this agent"):
        client.unlock_task(1, "a2")


def test_server_errors_are_unavailable_and_only_idempotent_calls_are_retried(failing):
    url, seen = failing
    client = TodoClient(url, timeout_s=2, read_retries=2, retry_backoff_s=0.001)
    with pytest.raises(TodoUnavailable, match="503"):
        client.list_available_tasks("implementation", 1)
    assert seen.count("/mcp/list_available_tasks") == 3  # one call and two retries
    for call in (
        lambda: client.reserve_task(1, "a1"),
        lambda: client.complete_task(1, "a1", "n"),
        lambda: client.unlock_task(1, "a1"),
    ):
        with pytest.raises(TodoUnavailable):
            call()
    assert [p for p in seen if p != "/mcp/list_available_tasks"] == [
        "/mcp/reserve_task",
        "/mcp/complete_task",
        "/tasks/1/unlock",
    ]  # each once: they change the service's state


def test_an_unreachable_or_hanging_service_is_unavailable(todo):
    closed = TodoClient(f"http://127.0.0.1:{free_port()}", timeout_s=1, read_retries=0)
    with pytest.raises(TodoUnavailable, match="cannot connect"):
        closed.health()
    todo.hang()
    hung = TodoClient(todo.url, timeout_s=0.2, read_retries=0)
    with pytest.raises(TodoUnavailable, match="no answer within"):
        hung.list_available_tasks("implementation", 1)
