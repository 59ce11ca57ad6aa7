"""Schemathesis' stateful testing: call sequences that follow the document's links.

The links in /openapi.json (orch/http/openapi.py) say where an answer's ids go next:
register → start/heartbeat/config/deregister, assign → get/cancel/complete/fail,
acquire → renew → release. Every answer along a sequence gets the same checks as the
single-operation fuzzing, so state reached only by a sequence is checked too.

One server serves every scenario, so an answer can depend on what earlier scenarios
left behind (an agent id already taken, an agent gone lost after its 0.2 s
heartbeats). What a step draws depends on earlier answers, so Hypothesis, revisiting
a sequence it has seen, can find it drew differently and stop with "Inconsistent data
generation" (``FlakyStrategyDefinition``): about once in fifteen runs. That says
nothing about the server. Schemathesis' own runner starts a fresh session then; so
does this test, a bounded number of times, and only when no step failed: every step's
failure is recorded as it happens, so a real failure that a replay could not
reproduce is reported, not retried away.
"""

from __future__ import annotations

from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis.errors import FlakyStrategyDefinition, HypothesisException
from schemathesis import Case, Response
from schemathesis.checks import CheckFunction
from schemathesis.engine.errors import is_inconsistent_replay  # what its runner retries on

from tests.fuzz.checks import problem_json_errors
from tests.fuzz.conftest import STATEFUL_SCENARIOS, STATEFUL_STEPS

#: Fresh sessions after generation that server state made inconsistent.
SESSIONS = 3


def test_linked_sequences_conform(api_schema: schemathesis.BaseSchema) -> None:
    """A bounded, derandomized number of scenarios of a bounded number of steps."""
    links = api_schema.as_state_machine()
    failures: list[str] = []

    class Sequences(links):  # type: ignore[misc, valid-type]
        def step(self, input: Any) -> Any:
            try:
                return super().step(input)
            except HypothesisException:
                raise  # Hypothesis' own control flow (a rejected case), not a failure
            except Exception as exc:
                case = input.case
                failures.append(f"{case.method} {case.formatted_path}: {exc!r}")
                raise

        def validate_response(
            self,
            response: Response,
            case: Case,
            additional_checks: list[CheckFunction] | None = None,
            **kwargs: Any,
        ) -> None:
            super().validate_response(
                response,
                case,
                additional_checks=[*(additional_checks or []), problem_json_errors],
                **kwargs,
            )

    for session in range(1, SESSIONS + 1):
        failures.clear()
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
            return
        except Exception as exc:
            if not (isinstance(exc, FlakyStrategyDefinition) or is_inconsistent_replay(exc)):
                raise  # a failure Hypothesis reproduced and shrank, or any other error
            if failures:
                pytest.fail(
                    "generation became inconsistent after steps had failed; the first:\n"
                    + "\n".join(failures[:10]),
                    pytrace=False,
                )
            if session == SESSIONS:
                raise
