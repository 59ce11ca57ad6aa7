"""The forwarder's own answers: nobody to forward to, a request already forwarded once,
and a leader that does not answer. Each is 503 ``no_leader`` with ``Retry-After``,
the answer the SDK moves on from."""

from __future__ import annotations

import io
import json
import socket
from wsgiref.util import setup_testing_defaults

from orch.http.forward import FORWARDED_HEADER, Forwarder


def call(forwarder: Forwarder, leader: str | None, **environ: str) -> tuple[str, dict, dict]:
    env: dict = {"REQUEST_METHOD": "POST", "PATH_INFO": "/tasks/assign", **environ}
    env["wsgi.input"] = io.BytesIO(b"{}")
    env["CONTENT_LENGTH"] = "2"
    setup_testing_defaults(env)
    seen: dict = {}

    def start_response(status: str, headers: list) -> None:
        seen["status"], seen["headers"] = status, dict(headers)

    body = b"".join(forwarder(env, start_response, leader))
    return seen["status"], seen["headers"], json.loads(body)


def closed_port_url() -> str:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{probe.getsockname()[1]}"


def test_no_leader_known_is_503_no_leader_with_retry_after():
    status, headers, body = call(Forwarder(5.0, lambda: "http://me"), None)
    assert status.startswith("503") and headers["Retry-After"] == "1"
    assert headers["Content-Type"] == "application/problem+json"
    assert body["code"] == "no_leader" and "no node leads" in body["detail"]


def test_a_request_forwarded_once_is_not_forwarded_again():
    header = "HTTP_" + FORWARDED_HEADER.upper().replace("-", "_")
    status, _, body = call(
        Forwarder(5.0, lambda: "http://me"), "http://elsewhere", **{header: "http://other"}
    )
    assert status.startswith("503") and body["code"] == "no_leader"


def test_a_leader_that_does_not_answer_is_503_no_leader_and_counted():
    forwarder = Forwarder(5.0, lambda: "http://me")
    gone = closed_port_url()
    status, _, body = call(forwarder, gone)
    assert status.startswith("503") and body["code"] == "no_leader" and gone in body["detail"]
    [counts, _latency] = list(forwarder.metrics())
    assert [(s.labels, s.value) for s in counts.samples] == [({"outcome": "failed"}, 1.0)]


def test_the_wait_a_request_asks_for_extends_its_time_limit():
    from orch.http.forward import asked_wait_s

    assert asked_wait_s("/events", "after=3&wait=12.5", None) == 12.5
    assert asked_wait_s("/locks/disk/acquire", "", b'{"wait_s": 7, "agent_id": "a"}') == 7.0
    assert asked_wait_s("/locks/acquire", "", b'{"wait_s": 3}') == 3.0
    assert asked_wait_s("/tasks/assign", "wait=9", b'{"wait_s": 9}') == 0.0
    assert asked_wait_s("/events", "wait=soon", None) == 0.0  # the leader refuses it
    assert asked_wait_s("/locks/disk/acquire", "", b"not json") == 0.0
