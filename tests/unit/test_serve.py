"""``orch/http/serve.py``: the server's start-up warnings and its orderly stop.

What it does to waitress itself is tested in test_waitress_adapter.py.
"""

from __future__ import annotations

import logging
import threading

import pytest
import requests

from orch import Orchestrator, Settings
from orch.errors import Unavailable
from orch.http.serve import Server, _is_loopback


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("localhost", True), ("127.0.0.1", True), ("::1", True), ("0.0.0.0", False), ("a.b", False)],
)
def test_loopback_hosts_are_told_apart(host: str, loopback: bool) -> None:
    assert _is_loopback(host) is loopback


def serve_once(settings: Settings, host: str) -> Server:
    """Start a server on ``host``, answer one request, and stop it (the actors with it)."""
    orch = Orchestrator(settings).start()
    server = Server(orch, settings, host=host, port=0)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        assert requests.get(f"http://127.0.0.1:{server.port}/health", timeout=5).ok
    finally:
        server.stop()
        thread.join(10)
    assert not thread.is_alive()
    return server


def test_an_open_api_beyond_loopback_is_warned_about(caplog: pytest.LogCaptureFixture) -> None:
    settings = Settings(todo_service_url="", gateway_url="", port=0)
    caplog.set_level(logging.WARNING, logger="orch.http")
    serve_once(settings, "127.0.0.1")
    assert "ORCH_ADMIN_TOKEN is not set" not in caplog.text
    serve_once(settings, "0.0.0.0")
    assert "ORCH_ADMIN_TOKEN is not set and the API listens on 0.0.0.0" in caplog.text


def test_stop_stops_the_actors_and_closes_every_socket() -> None:
    settings = Settings(todo_service_url="", gateway_url="", port=0)
    server = serve_once(settings, "127.0.0.1")
    assert not server.waitress.busy()
    assert server.waitress.open_sockets == 0  # listener, trigger and connections closed
    with pytest.raises(Unavailable):  # the actors are stopped
        server.orchestrator.tick()
