"""Schemathesis' stateful testing: call sequences that follow the document's links.

The links in /openapi.json (orch/http/openapi.py) say where an answer's ids go next:
register → start/heartbeat/config/deregister, assign → get/cancel/complete/fail,
acquire → renew → release. Every answer along a sequence gets the same checks as the
single-operation fuzzing, so state reached only by a sequence is checked too.

Why each scenario gets a server of its own, on a clock that does not move: the test
used to fail about once in fifteen full runs with Hypothesis'
``FlakyStrategyDefinition`` ("Inconsistent data generation"). Schemathesis files each
answer into a bundle by its status code (``POST /agents/register -> 200``), and the
next step draws its input from those bundles, so what a step draws depends on the
status codes before it. Hypothesis records every draw of every scenario in a tree and
replays recorded prefixes when it generates new scenarios; it raises that error when a
replayed prefix draws differently (a bundle of another size, another set of rules to
choose from). All scenarios shared one server process, and its answers depended on
more than the scenario's own requests:

* what earlier scenarios left behind: derandomized generation sends the same ids
  again, so ``POST /agents/register`` of an id is 200 the first time and 409 ("a live
  id") when a prefix is replayed, and a task submitted without an agent went to
  whichever agent an earlier scenario had started;
* elapsed time: the agents' 0.2 s heartbeat interval (and any interval, lease or
  lock TTL the fuzzer sets) could make an agent unhealthy or lost, or a lease
  expire, between two steps or not, depending on how busy the machine was.

Logging each step of each scenario found it: in a run that failed, the replayed
scenario's ``POST /tasks/assign`` of task ``"0"`` answered 409 ("task '0' is still
pending", left queued by the recorded run) where the recorded run had 202, and
Hypothesis stopped with "the second run stopped drawing earlier than the first". Two
runs of the old test drew different numbers of scenarios (27 and 30); two runs of
this one send the same requests and get the same status codes, step for step.

Each scenario now starts a fresh Orchestrator, served by the real HTTP stack
(``orch.http.serve``'s ``Server``: waitress, inline answers, the app) on its own port,
with a ``ManualClock`` that never moves, so an answer depends only on the scenario's
own requests and nothing expires or goes missing between steps (about 20 ms a
scenario). Lock waits are set to 0 on this server (the document says so, and the
fuzzer obeys it): a wait is timed by the clock, and one that can never end would only
give 503 after the ask timeout; lock waits are fuzzed by ``test_schema.py`` and
tested in ``tests/api``. Nothing is retried: a failure, or an inconsistency if one
ever came back, fails at once.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import Case, Config, Response
from schemathesis.checks import CheckFunction

from orch import ManualClock, Orchestrator, Settings
from orch.http.serve import Server
from tests.fuzz.checks import problem_json_errors
from tests.fuzz.conftest import (
    ADMIN_TOKEN,
    AGENT_ID,
    SEED,
    STATEFUL_SCENARIOS,
    STATEFUL_STEPS,
    filter_body,
    map_headers,
)

SETTINGS = Settings(
    admin_token=ADMIN_TOKEN,
    # Fuzzing presents unknown tokens on purpose; the lockout is tested in tests/api.
    auth_max_failures=1_000_000,
    lock_max_wait_s=0.0,  # see the module docstring
    events_max_wait_s=0.2,
    todo_service_url="",
    gateway_url="",
    http_threads=4,
)
AGENT_ONLY = [{"agentToken": []}]


class FreshServer:
    """One scenario's orchestrator: in memory, frozen in time, served over real HTTP."""

    def __init__(self) -> None:
        self.orchestrator = Orchestrator(SETTINGS, clock=ManualClock())
        self.server = Server(self.orchestrator, SETTINGS, host="127.0.0.1", port=0)
        self.orchestrator.start()
        self._thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self._thread.start()
        self.url = f"http://127.0.0.1:{self.server.port}"
        registered = self.orchestrator.register_agent(
            AGENT_ID, "implementation", capabilities=["code"]
        )
        self.orchestrator.start_agent(AGENT_ID)
        self.agent_token: str = registered["token"]
        self._stopped = False

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        self.server.stop()
        self._thread.join(30)
        assert not self._thread.is_alive(), "a scenario's server did not stop"


@pytest.fixture(scope="module")
def sequence_schema() -> Iterator[schemathesis.BaseSchema]:
    """The document as a fresh server serves it (every scenario's server serves the same)."""
    first = FreshServer()
    try:
        config = Config.from_dict(
            {
                "seed": SEED,
                "generation": {
                    "deterministic": True,
                    "database": "none",
                    # The agent's token differs per server: added per call, below.
                    "with-security-parameters": False,
                },
                "phases": {"stateful": {"inference": {"algorithms": []}}},
                "auth": {"openapi": {"adminToken": {"bearer": ADMIN_TOKEN}}},
                "request-timeout": 10.0,
            }
        )
        schema = schemathesis.openapi.from_url(
            f"{first.url}/openapi.json",
            config=config,
            headers={"Authorization": f"Bearer {ADMIN_TOKEN}"},
            timeout=10,
        )
        lock_wait = schema.raw_schema["components"]["schemas"]["AcquireLock"]["properties"]
        assert lock_wait["wait_s"]["maximum"] == 0  # what the fuzzer is held to
        schema.hook(filter_body)
        schema.hook(map_headers)
        yield schema
    finally:
        first.stop()


def test_linked_sequences_conform(sequence_schema: schemathesis.BaseSchema) -> None:
    """A bounded, derandomized number of scenarios of a bounded number of steps."""
    links = sequence_schema.as_state_machine()
    servers: list[FreshServer] = []

    class Sequences(links):  # type: ignore[misc, valid-type]
        def setup(self) -> None:
            super().setup()
            self.fresh = FreshServer()
            servers.append(self.fresh)

        def teardown(self) -> None:
            self.fresh.stop()
            super().teardown()

        def get_call_kwargs(self, case: Case) -> dict[str, Any]:
            """This scenario's server; its agent's token where nothing else gave one.

            A link from a registration gives the new agent's token; other calls that
            only an agent may make act as this server's registered agent.
            """
            security = case.operation.definition.raw.get("security")
            if security == AGENT_ONLY:
                if case.headers is None:
                    case.headers = {}
                case.headers.setdefault("Authorization", f"Bearer {self.fresh.agent_token}")
                # The token is a real one (a registration's, through a link, or this
                # server's agent's; none is generated: with-security-parameters is off).
                # Told to Schemathesis as given, as its own ``apply_basic_auth`` does:
                # else it takes the header for a random credential, and the 200 a real
                # token earns fails its ignored-auth check ("generated auth likely
                # invalid"). Told, it probes the call without the token and with a wrong
                # one, which is the check we want.
                case._has_explicit_auth = True
            return {"base_url": self.fresh.url}

        def validate_response(
            self,
            response: Response,
            case: Case,
            additional_checks: list[CheckFunction] | None = None,
            **kwargs: Any,
        ) -> None:
            kwargs.pop("base_url", None)
            super().validate_response(
                response,
                case,
                additional_checks=[*(additional_checks or []), problem_json_errors],
                **kwargs,
            )

    try:
        Sequences.run(
            settings=settings(
                max_examples=STATEFUL_SCENARIOS,
                stateful_step_count=STATEFUL_STEPS,
                derandomize=True,
                database=None,
                deadline=None,
                suppress_health_check=list(HealthCheck),
            )
        )
    finally:
        for fresh in servers:  # a scenario that failed may not have reached teardown
            fresh.stop()
    assert len(servers) >= STATEFUL_SCENARIOS
