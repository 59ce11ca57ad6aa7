"""Hooks for the ``schemathesis`` command line (``SCHEMATHESIS_HOOKS=tests.fuzz.cli_hooks``).

The command-line run in ``test_all_checks.py`` gets the same extra check, body filter
and Idempotency-Key numbering as the in-process runs, so ``--checks all`` means ours
too. Its coverage phase builds cases without the generation hooks, so the keys are
numbered again just before each call.
"""

from __future__ import annotations

from typing import Any

import schemathesis
from schemathesis import Case

from tests.fuzz.checks import problem_json_errors
from tests.fuzz.conftest import KEY, filter_body, map_headers

schemathesis.check(problem_json_errors)
schemathesis.hook(filter_body)
schemathesis.hook(map_headers)


@schemathesis.hook
def before_call(context: schemathesis.HookContext, case: Case, kwargs: Any) -> None:
    """Every phase's requests: an allowed ``Idempotency-Key`` is made unique (``map_headers``)."""
    headers = case.headers  # a case-insensitive mapping by now, not a dict
    if headers is not None and isinstance(headers.get(KEY), str):
        headers[KEY] = map_headers(context, {KEY: headers[KEY]})[KEY]
