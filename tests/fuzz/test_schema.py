"""Every operation of the served document, fuzzed: no 5xx, answers as documented.

Schemathesis generates schema-valid (positive) and schema-invalid (negative) requests
for each operation. Its default checks run on every answer — not a server error,
status code, content type, response schema and header conformance, valid data
accepted and invalid data refused — plus ``problem_json_errors``.
"""

from __future__ import annotations

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from schemathesis import Case, GenerationMode

from orch.http.app import ROUTES
from tests.fuzz.checks import problem_json_errors
from tests.fuzz.conftest import MAX_EXAMPLES

ROUTE_OPERATIONS = [
    (method, template) for template, resource in ROUTES for method in resource.scopes
]
OPERATIONS = [
    pytest.param(method, template, mode, id=f"{method} {template} {mode.value}")
    for template, resource in ROUTES
    for method in resource.scopes
    for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE)
    # Negative cases need something to make invalid: a body or a path parameter.
    if mode is GenerationMode.POSITIVE or "{" in template or method in resource.bodies
]


def test_the_document_lists_every_route(api_schema: schemathesis.BaseSchema) -> None:
    """The parametrisation below comes from the route table; the document must match it."""
    documented = {
        (method.upper(), path)
        for path, item in api_schema.raw_schema["paths"].items()
        for method in item
        if method != "parameters"
    }
    assert documented == set(ROUTE_OPERATIONS)


@pytest.mark.parametrize(("method", "path", "mode"), OPERATIONS)
def test_every_operation_conforms(
    api_schema: schemathesis.BaseSchema, method: str, path: str, mode: GenerationMode
) -> None:
    """A bounded, derandomized run of one operation in one generation mode."""
    operation = api_schema[path][method]

    @given(case=operation.as_strategy(generation_mode=mode))
    @settings(
        max_examples=MAX_EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        suppress_health_check=list(HealthCheck),
    )
    def run(case: Case) -> None:
        case.call_and_validate(additional_checks=[problem_json_errors])

    run()
