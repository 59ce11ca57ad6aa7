"""What the launcher trusts: nothing in the REST API can name a command."""

from __future__ import annotations

from typing import Any

import falcon.testing

from orch import Orchestrator, Settings
from orch.http.app import create_app

_PROCESS_WORDS = {"command", "cmd", "argv", "args", "exec", "executable", "env", "cwd", "shell"}


def _property_names(node: Any) -> set[str]:
    names: set[str] = set()
    if isinstance(node, dict):
        properties = node.get("properties")
        if isinstance(properties, dict):
            names |= set(properties)
        for value in node.values():
            names |= _property_names(value)
    elif isinstance(node, list):
        for value in node:
            names |= _property_names(value)
    return names


def test_nothing_in_the_api_can_name_a_command():
    with Orchestrator(Settings()) as orch:
        document = falcon.testing.TestClient(create_app(orch)).simulate_get("/openapi.json").json
    request_bodies = document["components"]["schemas"]
    assert "ProcessExit" in request_bodies and "AgentMetadata" in request_bodies
    assert not _property_names(request_bodies) & _PROCESS_WORDS
    parameters = {
        p["name"]
        for path in document["paths"].values()
        for operation in path.values()
        if isinstance(operation, dict)
        for p in operation.get("parameters", ())
    }
    assert not parameters & _PROCESS_WORDS
