"""``schemathesis run --checks all`` against the served document: a gap fails a test.

The in-process runs (``test_schema.py``, ``test_stateful.py``) check each answer;
this one runs Schemathesis' own command line, as a user auditing the API would, with
every check it has: among them ``positive_data_acceptance``, which fails when the
document allows a value the server refuses (``GET /events?after=2**70`` answered 400
while ``after`` had no documented maximum), ``negative_data_rejection``,
``use_after_free``, ``ensure_resource_availability`` and ``ignored_auth``, plus a
response-time limit. The document is the one the server serves, fetched with the
admin token (``/openapi.json`` is admin-only) and handed over as a file; requests go
to the same server, each security scheme with its real token.

The run is deterministic (``--generation-deterministic``) and bounded: ``MAX_EXAMPLES``
cases per operation and phase, about half a minute on two cores.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import requests

from tests.e2e.conftest import ServerProcess
from tests.fuzz.conftest import ADMIN_TOKEN

MAX_EXAMPLES = 25
# Long polls and lock waits of the fuzzed server end within 0.2 s (its settings); an
# answer slower than this is a server stuck, not one waiting as asked.
MAX_RESPONSE_TIME_S = 5.0
REQUEST_TIMEOUT_S = 15.0


def test_every_schemathesis_check_passes_on_the_served_document(
    fuzz_server: ServerProcess, agent_token: str, tmp_path: Path
) -> None:
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    served = requests.get(f"{fuzz_server.url}/openapi.json", headers=admin, timeout=10)
    served.raise_for_status()
    document = tmp_path / "openapi.json"
    document.write_text(json.dumps(served.json()))
    waits = [
        p["schema"]["maximum"]
        for p in served.json()["paths"]["/events"]["get"]["parameters"]
        if p["name"] == "wait"
    ]
    assert waits and max(waits) < MAX_RESPONSE_TIME_S  # the limit is above every wait
    config = tmp_path / "schemathesis.toml"
    config.write_text(
        f'[auth.openapi.adminToken]\nbearer = "{ADMIN_TOKEN}"\n'
        f'[auth.openapi.agentToken]\nbearer = "{agent_token}"\n'
    )
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "schemathesis.cli",
            "--config-file",
            str(config),
            "run",
            str(document),
            "--url",
            fuzz_server.url,
            "--checks",
            "all",
            "--max-response-time",
            str(MAX_RESPONSE_TIME_S),
            "--request-timeout",
            str(REQUEST_TIMEOUT_S),
            "--max-examples",
            str(MAX_EXAMPLES),
            "--generation-deterministic",
            "--workers",
            "1",
            "--no-color",
            "--report-dir",
            str(tmp_path / "report"),
        ],
        env={
            **os.environ,
            "SCHEMATHESIS_HOOKS": "tests.fuzz.cli_hooks",
            "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
        },
        cwd=tmp_path,  # whatever it keeps between runs stays out of the repository
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert run.returncode == 0, run.stdout[-20_000:] + run.stderr[-5_000:]


def numeric_query_parameters(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    """(path, name, schema) of every integer or number query parameter documented."""
    return [
        (path, parameter["name"], parameter["schema"])
        for path, item in document["paths"].items()
        for operation in (item.get("get"),)
        if operation is not None
        for parameter in operation.get("parameters", [])
        if parameter["in"] == "query" and parameter["schema"].get("type") in ("integer", "number")
    ]


def test_every_numeric_query_parameter_is_taken_at_its_documented_bounds(
    fuzz_server: ServerProcess,
) -> None:
    """A value at each end the document allows (or far beyond, where it states none).

    Random generation reaches a huge number rarely, so the check that found
    ``after=2**70`` refused (ST202) would find such a gap only now and then; query
    parameters are the hand-written part of the document (``Resource.queries``), and
    this probes each one's ends deterministically.
    """
    admin = {"Authorization": f"Bearer {ADMIN_TOKEN}"}
    document = requests.get(f"{fuzz_server.url}/openapi.json", headers=admin, timeout=10).json()
    parameters = numeric_query_parameters(document)
    assert {(path, name) for path, name, _ in parameters} >= {
        ("/events", "after"),
        ("/events", "wait"),
        ("/events", "limit"),
    }
    for path, name, schema in parameters:
        ends = [schema.get("maximum", 10**30), schema.get("minimum", -(10**30))]
        for value in ends:
            url = fuzz_server.url + path.replace("{", "").replace("}", "")
            answer = requests.get(url, params={name: value}, headers=admin, timeout=10)
            assert answer.status_code != 400, (path, name, value, answer.text)
