"""Hooks for the ``schemathesis`` command line (``SCHEMATHESIS_HOOKS=tests.fuzz.cli_hooks``).

The command-line run in ``test_all_checks.py`` gets the same extra check and the same
body filter as the in-process runs, so ``--checks all`` means ours too.
"""

from __future__ import annotations

import schemathesis

from tests.fuzz.checks import problem_json_errors
from tests.fuzz.conftest import filter_body

schemathesis.check(problem_json_errors)
schemathesis.hook(filter_body)
