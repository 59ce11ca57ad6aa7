"""The real server process with the admin token set, and a Schemathesis schema of it.

The schema is loaded from the server's own ``/openapi.json``, so what is fuzzed is the
document clients read, not a copy of it. Generation is derandomized with a fixed seed
and a bounded number of examples, so a run is repeatable and fits in ``make test``.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from typing import Any

import pytest
import requests
import schemathesis
from schemathesis import Config

from orch.http.idempotency import HEADER as KEY
from orch.http.idempotency import KEY_SCHEMA, MAX_KEY_CHARS
from tests.e2e.conftest import ServerProcess, start_server

ADMIN_TOKEN = "fuzz-admin-token"
AGENT_ID = "fuzz-agent"
SEED = 20240609
MAX_EXAMPLES = 10
STATEFUL_SCENARIOS = 20
STATEFUL_STEPS = 8


@pytest.fixture(scope="module")
def fuzz_server() -> Iterator[ServerProcess]:
    """``python -m orch`` on a free port: admin token set, short heartbeats, no integrations."""
    server = start_server(
        {
            "ORCH_ADMIN_TOKEN": ADMIN_TOKEN,
            "ORCH_HEARTBEAT_INTERVAL_S": "0.2",
            # Fuzzing presents unknown tokens on purpose; the lockout is tested in tests/api.
            "ORCH_AUTH_MAX_FAILURES": "1000000",
            # Lock waits are real time; the document states this limit, so cases obey it.
            "ORCH_LOCK_MAX_WAIT_S": "0.2",
            "ORCH_EVENTS_MAX_WAIT_S": "0.2",
            "TODO_SERVICE_URL": "",
            "GATEWAY_URL": "",
        }
    )
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def agent_token(fuzz_server: ServerProcess) -> str:
    """The token of a registered, started agent, for the agent-scoped operations."""
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    registered = requests.post(
        f"{fuzz_server.url}/agents/register",
        json={"agent_id": AGENT_ID, "agent_type": "implementation", "capabilities": ["code"]},
        headers=admin,
        timeout=5,
    )
    assert registered.status_code == 200, registered.text
    started = requests.post(f"{fuzz_server.url}/agents/{AGENT_ID}/start", headers=admin, timeout=5)
    assert started.status_code == 200, started.text
    return registered.json()["token"]


def fuzz_config(agent_token: str) -> Config:
    """Bounded, deterministic generation; each security scheme gets its real token."""
    return Config.from_dict(
        {
            "seed": SEED,
            "generation": {
                "max-examples": MAX_EXAMPLES,
                "deterministic": True,
                "database": "none",
            },
            "phases": {"stateful": {"max-steps": STATEFUL_STEPS, "inference": {"algorithms": []}}},
            "auth": {
                "openapi": {
                    "adminToken": {"bearer": ADMIN_TOKEN},
                    "agentToken": {"bearer": agent_token},
                }
            },
            "request-timeout": 10.0,
        }
    )


def filter_body(context: schemathesis.HookContext, body: Any) -> bool:
    """Drop multi-lock bodies that name a resource twice (a ``filter_body`` hook).

    The document says so in words ("each resource at most once"), because JSON Schema
    cannot express uniqueness by one key; without this the fuzzer would count the
    server's 400 for such a body as a valid request refused.
    """
    if context.operation is None or context.operation.path != "/locks/acquire":
        return True
    if not isinstance(body, dict) or not isinstance(body.get("resources"), list):
        return True
    names = [repr(item.get("resource")) for item in body["resources"] if isinstance(item, dict)]
    return len(names) == len(set(names))


#: Numbers the fuzzer's Idempotency-Keys, so no two requests share one (``map_headers``).
_KEY_NUMBERS = itertools.count()


def map_headers(context: schemathesis.HookContext, headers: Any) -> Any:
    """Make every generated ``Idempotency-Key`` that the document allows unique.

    A key names one request: the same key on another request is the client's mistake,
    refused with 422, which no JSON Schema can rule out (as with ``filter_body``).
    Keys the document does not allow (negative cases) are sent as generated.
    """
    if not isinstance(headers, dict) or not isinstance(headers.get(KEY), str):
        return headers
    key = headers[KEY]
    if re.fullmatch(KEY_SCHEMA["pattern"], key) and len(key) <= MAX_KEY_CHARS:
        headers[KEY] = f"{key[: MAX_KEY_CHARS - 12]}~{next(_KEY_NUMBERS)}"
    return headers


@pytest.fixture(scope="module")
def api_schema(fuzz_server: ServerProcess, agent_token: str) -> schemathesis.BaseSchema:
    """The served document, loaded over HTTP with the admin token."""
    schema = schemathesis.openapi.from_url(
        f"{fuzz_server.url}/openapi.json",
        config=fuzz_config(agent_token),
        headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
        timeout=5,
    )
    schema.hook(filter_body)
    schema.hook(map_headers)
    return schema
