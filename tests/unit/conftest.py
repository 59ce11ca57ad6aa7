"""Fixtures for the unit tests of the HTTP server (orch/http/serve.py and its waitress adapter)."""

from __future__ import annotations

import threading
from collections.abc import Iterator

import pytest

from orch import Orchestrator, Settings
from orch.http.serve import Server


@pytest.fixture
def server() -> Iterator[Server]:
    """The REST API served in this process on a free port, on its own thread."""
    settings = Settings(todo_service_url="", gateway_url="", port=0)
    orch = Orchestrator(settings).start()
    served = Server(orch, settings, port=0)
    thread = threading.Thread(target=served.serve_forever, daemon=True)
    thread.start()
    yield served
    served.stop()
    thread.join(10)
