"""orch/dependencies.py: degraded while a service is down, healthy once it answers."""

from __future__ import annotations

import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, HTTPServer

import pytest

from orch import Orchestrator, Settings
from tests.conftest import wait_until


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Healthy(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200 if self.path == "/health" else 404)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.mark.parametrize(
    ("check_name", "other"), [("todo_service", "gateway"), ("gateway", "todo_service")]
)
def test_health_is_degraded_while_a_service_is_down_and_recovers(check_name, other):
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    urls = {f"{check_name}_url": url, f"{other}_url": ""}
    settings = Settings(**urls, dependency_check_interval_s=0.05)
    with Orchestrator(settings, connect_services=True) as orch:
        health = orch.health()
        assert health["status"] == "degraded"
        check = health["checks"][check_name]
        assert check["status"] == "failing" and check["url"] == url and check["last_error"]
        assert other not in health["checks"]  # an empty URL is not configured
        server = HTTPServer(("127.0.0.1", port), Healthy)
        threading.Thread(target=server.serve_forever, daemon=True).start()
        try:
            wait_until(lambda: orch.health()["status"] == "healthy", message="recovered")
            check = orch.health()["checks"][check_name]
            assert check["status"] == "ok" and check["latency_ms"] >= 0
        finally:
            server.shutdown()
            server.server_close()


def test_embedded_orchestrators_do_not_connect_services_unless_asked():
    with Orchestrator(Settings()) as orch:
        assert set(orch.health()["checks"]) == {"actors", "store"}
        assert orch.health()["status"] == "healthy"


def test_the_warning_of_a_service_that_is_not_there_says_how_to_turn_its_check_off(caplog):
    # A new user's first `make run`: nothing listens at the default addresses.
    settings = Settings(
        todo_service_url=f"http://127.0.0.1:{free_port()}",
        gateway_url=f"http://127.0.0.1:{free_port()}",
        dependency_check_interval_s=3600,
    )
    with (
        caplog.at_level(logging.WARNING, logger="orch.dependencies"),
        Orchestrator(settings, connect_services=True),
    ):
        pass
    warnings = {
        r.getMessage().split()[1]: r.getMessage()
        for r in caplog.records
        if r.name == "orch.dependencies" and r.levelno == logging.WARNING
    }
    assert set(warnings) == {"todo_service", "gateway"}
    assert warnings["todo_service"].endswith(
        "; to turn off the TODO intake and this check, start with TODO_SERVICE_URL="
    )
    assert warnings["gateway"].endswith("; to turn off this check, start with GATEWAY_URL=")
    assert "cannot connect" in warnings["gateway"]
