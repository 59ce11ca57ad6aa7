"""``orch/client/answers.py``: problem+json answers rebuilt into ``orch.errors`` classes.

No server needed: each case is a ``requests.Response`` built by hand, as a proxy or a
newer server might send it.
"""

from __future__ import annotations

import io

import pytest
import requests

from orch.client import error_from_response
from orch.errors import (
    Invalid,
    OrchestratorError,
    StoreError,
    Timeout,
    Unavailable,
    VersionMismatch,
)


def _answer(status: int, body: bytes, content_type: str, **headers: str) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response.raw = io.BytesIO(body)
    response.headers.update({"Content-Type": content_type, **headers})
    response.reason = "Reason"
    return response


@pytest.mark.parametrize(
    ("status", "code", "expected"),
    [
        (413, "payload_too_large", Invalid),
        (415, "unsupported_media_type", Invalid),
        (503, "unavailable", Unavailable),
        (503, "timeout", Timeout),
        (503, "store_unavailable", StoreError),
        (412, "precondition_failed", VersionMismatch),
    ],
)
def test_every_problem_code_maps_to_its_class(status: int, code: str, expected: type):
    body = (
        f'{{"type":"t","title":"T","status":{status},"detail":"went wrong","code":"{code}"}}'
    ).encode()
    error = error_from_response(
        _answer(status, body, "application/problem+json", **{"Retry-After": "1"})
    )
    assert type(error) is expected
    assert error.details["retry_after_s"] == 1.0


def test_answers_that_are_not_problem_json_are_judged_by_status():
    error = error_from_response(_answer(502, b"<html>bad gateway</html>", "text/html"))
    assert isinstance(error, Unavailable) and error.message == "Reason"
    odd = error_from_response(
        _answer(405, b'{"code":"method_not_allowed","detail":"no"}', "application/problem+json")
    )
    assert type(odd) is OrchestratorError and odd.code == "method_not_allowed"
    assert odd.status == 405
