"""Schemathesis' stateful testing: call sequences that follow the document's links.

The links in /openapi.json (orch/http/openapi.py) say where an answer's ids go next:
register → start/heartbeat/config/deregister, assign → get/cancel/complete/fail,
acquire → renew → release. Every answer along a sequence gets the same checks as the
single-operation fuzzing, so state reached only by a sequence is checked too.
"""

from __future__ import annotations

from typing import Any

import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis import Case, Response
from schemathesis.checks import CheckFunction

from tests.fuzz.checks import problem_json_errors
from tests.fuzz.conftest import STATEFUL_SCENARIOS, STATEFUL_STEPS


def test_linked_sequences_conform(api_schema: schemathesis.BaseSchema) -> None:
    """A bounded, derandomized number of scenarios of a bounded number of steps."""
    links = api_schema.as_state_machine()

    class Sequences(links):  # type: ignore[misc, valid-type]
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
