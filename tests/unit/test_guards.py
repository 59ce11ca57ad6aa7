"""orch/http/guards.py: header size and path tricks refused before routing.

Real Falcon requests built from WSGI environs as waitress fills them (``REQUEST_URI``
is the raw, undecoded target); the guard is called as Falcon calls middleware. What
the client sees of each refusal is tested over HTTP in tests/security/.
"""

from __future__ import annotations

from typing import Any

import falcon
import falcon.testing
import pytest

from orch.errors import Invalid
from orch.http.errors import HeadersTooLarge
from orch.http.guards import RequestGuard, header_bytes


def request(path: str, headers: dict[str, str] | None = None, raw_uri: str | None = None) -> Any:
    env = falcon.testing.create_environ(path=path, headers=headers)
    env["REQUEST_URI"] = raw_uri if raw_uri is not None else path
    return falcon.Request(env)


def wire_size(method: str, target: str, headers: dict[str, str]) -> int:
    """What the client sent: the request line and each header line, to the blank line."""
    lines = [f"{method} {target} HTTP/1.1", *(f"{k}: {v}" for k, v in headers.items())]
    return len("\r\n".join(lines)) + 4


def test_the_size_counted_is_about_what_the_client_sent():
    headers = {"Authorization": "Bearer " + "x" * 500, "X-Trace": "abc"}
    req = request("/agents/a1/heartbeat", headers)
    sent = wire_size("GET", "/agents/a1/heartbeat", {**headers, "Host": "falconframework.org"})
    assert abs(header_bytes(req.env) - sent) <= 64  # environ keys are longer than names
    longer = request("/agents/a1/heartbeat", {**headers, "X-Trace": "abc" * 100})
    assert header_bytes(longer.env) - header_bytes(req.env) == 297


def test_without_a_raw_uri_the_path_and_query_are_counted():
    env = falcon.testing.create_environ(path="/tasks", query_string="status=" + "p" * 200)
    env.pop("REQUEST_URI", None)
    assert header_bytes(env) >= 200 + len("/tasks")


def test_headers_over_the_limit_are_refused_naming_the_limit():
    big = {"X-Padding": "x" * 2_000}
    size = header_bytes(request("/health", big).env)
    RequestGuard(size).process_request(request("/health", big), falcon.Response())
    with pytest.raises(HeadersTooLarge) as info:
        RequestGuard(size - 1).process_request(request("/health", big), falcon.Response())
    assert info.value.status == 431
    assert f"the limit is {size - 1}" in str(info.value)


@pytest.mark.parametrize("encoded", ["%2F", "%2f", "%5C", "%5c"])
def test_an_encoded_separator_in_the_path_is_refused(encoded):
    guard = RequestGuard(32 * 1024)
    req = request("/agents/a/b/heartbeat", raw_uri=f"/agents/a{encoded}b/heartbeat")
    with pytest.raises(Invalid) as info:
        guard.process_request(req, falcon.Response())
    assert info.value.field == "path"


def test_an_encoded_separator_in_the_query_is_no_trick():
    req = request("/events", raw_uri="/events?after=1&note=a%2Fb")
    RequestGuard(32 * 1024).process_request(req, falcon.Response())


@pytest.mark.parametrize(
    ("params", "field"),
    [
        ({"agent_id": "has space"}, "agent_id"),
        ({"agent_id": "a1", "resource": "x" * 129}, "resource"),
        ({"task_id": ".."}, "task_id"),
    ],
)
def test_every_captured_id_is_validated_naming_its_parameter(params, field):
    guard = RequestGuard(32 * 1024)
    with pytest.raises(Invalid) as info:
        guard.process_resource(request("/"), falcon.Response(), None, params)
    assert info.value.field == field


def test_valid_ids_pass_and_task_ids_keep_their_own_rules():
    guard = RequestGuard(32 * 1024)
    params = {"agent_id": "worker-1.a:b", "task_id": "todo:42", "resource": "repo"}
    guard.process_resource(request("/"), falcon.Response(), None, params)
