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
    TodoRequestFailed,
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
    with pytest.raises(ReservationRefused, match="not found"):
        client.reserve_task(99, "a1")  # the real service: 200 success false, never 404
    with pytest.raises(TodoServiceError, match="not found") as refused:
        client.complete_task(99, "a1", None)
    assert not isinstance(refused.value, TodoUnavailable)


def test_the_services_own_rules_hold_for_the_client(todo):
    """Complete and unlock check neither owner nor status; an unknown type lists nothing."""
    todo.add_task(1)
    todo.add_task(2)
    client = TodoClient(todo.url, timeout_s=2)
    client.reserve_task(1, "a1")
    client.unlock_task(1, "someone-else")  # no owner check, and no `success` in the answer
    assert todo.tasks[1]["task_status"] == "available"
    todo.tasks[2]["task_status"] = "cancelled"
    client.complete_task(2, "anyone", "done anyway")  # any status, cancelled included
    assert todo.tasks[2]["task_status"] == "complete"
    client.unlock_task(2, "a1")  # even a completed task
    assert todo.tasks[2]["task_status"] == "available"
    assert client.list_available_tasks("reviewer", 10) == []


def test_unlocking_an_unknown_id_is_a_failed_request_not_an_outage(todo):
    client = TodoClient(todo.url, timeout_s=2)
    with pytest.raises(TodoRequestFailed, match="500: Internal Server Error") as failed:
        client.unlock_task(404, "a1")  # the real service's bare text/plain 500
    assert not isinstance(failed.value, TodoUnavailable)


def test_blocking_marks_the_task_blocked_with_notes(todo):
    todo.add_task(1)
    client = TodoClient(todo.url, timeout_s=2)
    client.reserve_task(1, "a1")
    answer = client.block_task(1, "ValueError: no such repo")
    assert answer["task_status"] == "blocked"
    assert todo.tasks[1]["task_status"] == "blocked"
    assert todo.tasks[1]["notes"] == "ValueError: no such repo"
    assert todo.bodies[-1] == (
        "/tasks/1",
        {"task_status": "blocked", "notes": "ValueError: no such repo"},
    )
    with pytest.raises(TodoServiceError, match="404: Task 7 not found"):
        client.block_task(7, "gone")


def test_validation_errors_name_the_field(todo):
    client = TodoClient(todo.url, timeout_s=2)
    with pytest.raises(TodoServiceError, match="422: task_id: Input should be a valid int"):
        client.reserve_task("seven", "a1")


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
