"""The MCP server as an MCP client starts it: a subprocess on stdio, driven by the SDK.

Every test talks to a real orchestrator server process (``tests/e2e``'s
``start_server``) through ``python -m orch mcp`` started by the official SDK's
``stdio_client`` and spoken to by its ``ClientSession``. The scenarios are async
(``anyio.run`` inside plain tests: no pytest plugin needed); the admin's REST calls
in them are short and synchronous.
"""

from __future__ import annotations

import contextlib
import itertools
import sys
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp import ClientSession, StdioServerParameters, stdio_client
from mcp.types import CallToolResult

from orch.client import OrchestratorClient
from tests.conftest import reap
from tests.e2e.conftest import ServerProcess, start_server

ADMIN_TOKEN = "mcp-admin-token"
REPO = Path(__file__).resolve().parents[2]

#: A fast heartbeat, and generous misses: only the health test relies on the threshold.
SHARED_ENV = {
    "ORCH_DB": ":memory:",
    "TODO_SERVICE_URL": "",
    "GATEWAY_URL": "",
    "ORCH_ADMIN_TOKEN": ADMIN_TOKEN,
    "ORCH_HEARTBEAT_INTERVAL_S": "0.2",
    "ORCH_UNHEALTHY_AFTER_MISSED": "15",
    "ORCH_LOST_AFTER_MISSED": "50",
    "ORCH_LOCK_MAX_TTL_S": "600",  # below the tools' own bound: the server's 400 is tested
}

_numbers = itertools.count(1)


@pytest.fixture(scope="session")
def shared_server() -> Iterator[ServerProcess]:
    server = start_server(SHARED_ENV)
    yield server
    server.stop()


@pytest.fixture
def url(shared_server: ServerProcess) -> str:
    return shared_server.url


@pytest.fixture
def admin(url: str) -> Iterator[OrchestratorClient]:
    with OrchestratorClient(url, token=ADMIN_TOKEN) as client:
        yield client


@pytest.fixture
def name() -> Callable[[str], str]:
    """Unique ids per test, so tests sharing the server never take each other's work."""
    number = next(_numbers)
    return lambda prefix: f"{prefix}-{number}"


@pytest.fixture
def server_factory() -> Iterator[Callable[..., ServerProcess]]:
    """Orchestrator servers of a test's own, for other settings or to be stopped."""
    started: list[ServerProcess] = []

    def factory(**env: str) -> ServerProcess:
        server = start_server({**SHARED_ENV, **env})
        started.append(server)
        return server

    yield factory
    for server in started:
        reap(server.process)


@pytest.fixture
def errlog(tmp_path: Path) -> Path:
    """Where the MCP server processes of a test write their stderr (shown on failure)."""
    return tmp_path / "mcp-server.log"


@contextlib.asynccontextmanager
async def mcp_session(
    url: str, *args: str, errlog: Path, **env: str
) -> AsyncIterator[ClientSession]:
    """``python -m orch mcp ARGS`` started and initialised by the SDK's stdio client."""
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "orch", "mcp", *args],
        env={"ORCH_URL": url, **env},
        cwd=REPO,
    )
    with errlog.open("a") as stderr:
        async with (
            stdio_client(params, errlog=stderr) as (read, write),
            ClientSession(read, write) as session,
        ):
            await session.initialize()
            yield session


def register_args(agent_id: str, *capabilities: str) -> list[str]:
    """The arguments of a session that registers (and at its end stops) its agent."""
    args = ["--register", "--agent-id", agent_id]
    for capability in capabilities:
        args += ["--capability", capability]
    return args


async def ok(session: ClientSession, tool: str, **arguments: Any) -> dict[str, Any]:
    """Call ``tool``; it must succeed. Its structured answer."""
    result = await session.call_tool(tool, arguments)
    assert isinstance(result, CallToolResult)
    assert not result.is_error, result.content
    assert result.structured_content is not None
    return result.structured_content


async def refused(session: ClientSession, tool: str, **arguments: Any) -> str:
    """Call ``tool``; it must come back as a tool error. The error's text."""
    result = await session.call_tool(tool, arguments)
    assert isinstance(result, CallToolResult)
    assert result.is_error, result
    return " ".join(block.text for block in result.content)  # type: ignore[union-attr]


async def eventually(
    predicate: Callable[[], Any], timeout_s: float = 10.0, message: str = ""
) -> Any:
    """Poll ``predicate`` (another process at work) until it is truthy, within a deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s}s: {message}")
        await anyio.sleep(0.02)


def run(scenario: Callable[[], Any]) -> None:
    """Run an async scenario from a plain test."""
    anyio.run(scenario)
