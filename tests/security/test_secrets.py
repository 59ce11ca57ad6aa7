"""Tokens never leave the process: not in logs, events, error answers or listings.

Each test exercises every path a token travels (registration, every agent-scoped
call, wrong and malformed tokens, an unexpected error while a token is presented, a
lockout) and then searches everything observable for the token *and* its SHA-256
hash, since the hash is as good as the token for anyone who can read the store.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import falcon.testing
import pytest

from orch import Orchestrator
from orch.config import Settings
from orch.logs import JsonFormatter, TextFormatter
from orch.tokens import hash_token
from tests.api.conftest import bearer, register
from tests.security.conftest import ADMIN_TOKEN, AppFactory

ADMIN = bearer(ADMIN_TOKEN)


class Recorder:
    """A TestClient wrapper that keeps every answer's headers and body."""

    def __init__(self, client: falcon.testing.TestClient) -> None:
        self.client = client
        self.answers: list[falcon.testing.Result] = []

    def __call__(self, method: str, path: str, **kwargs: Any) -> falcon.testing.Result:
        answer = self.client.simulate_request(method, path, **kwargs)
        self.answers.append(answer)
        return answer

    def texts(self) -> list[str]:
        return [f"{a.status} {dict(a.headers)} {a.text}" for a in self.answers]


def secrets_of(*tokens: str) -> list[str]:
    """The tokens and their hashes (hex, as stored)."""
    return [*tokens, *(hash_token(t) for t in tokens)]


def exercise(orch: Orchestrator, call: Recorder) -> list[str]:
    """Use tokens every way the API allows (and some it refuses); returns the tokens."""
    first = register(call.client, "a1", start=True, headers=ADMIN)
    second = register(call.client, "a2", start=True, headers=ADMIN)
    call("POST", "/tasks/assign", json={"task_id": "t1", "agent_id": "a1"}, headers=ADMIN)
    call("POST", "/tasks/assign", json={"task_id": "t2", "agent_id": "a2"}, headers=ADMIN)
    call("POST", "/agents/a1/heartbeat", headers=bearer(first))
    grant = call("POST", "/locks/repo/acquire", json={"ttl_s": 5}, headers=bearer(first))
    call("POST", "/locks/repo/renew", json={"fencing_token": 1}, headers=bearer(first))
    call("POST", "/locks/repo/release", json={"fencing_token": 1}, headers=bearer(first))
    assert grant.status_code == 200
    call("POST", "/tasks/t1/complete", json={"result": {"ok": 1}}, headers=bearer(first))
    call(
        "POST", "/tasks/t2/fail", json={"error": "boom", "retryable": False}, headers=bearer(second)
    )
    # Refusals: another agent's token, a token that is nobody's, malformed headers,
    # the admin token where an agent's is needed, an agent's where the admin's is.
    call("POST", "/agents/a1/heartbeat", headers=bearer(second))
    call("POST", "/agents/a1/heartbeat", headers=bearer(first + "x"))
    call("POST", "/agents/a1/heartbeat", headers={"Authorization": f"Basic {first}"})
    call("POST", "/agents/a1/heartbeat", headers=ADMIN)
    call("GET", "/stats", headers=bearer(first))
    call("GET", "/stats", headers=bearer(ADMIN_TOKEN + "x"))
    call("GET", "/agents/a1/tasks", headers=bearer(second))
    call("POST", "/tasks/t1/complete", json={"agent_id": "a2"}, headers=bearer(first))
    return [first, second, first + "x", ADMIN_TOKEN, ADMIN_TOKEN + "x"]


def listings(call: Recorder) -> None:
    for path in (
        "/agents",
        "/agents/a1",
        "/agents/a2",
        "/agents/a1/tasks",
        "/agents/a1/config",
        "/events?limit=1000",
        "/stats",
        "/tasks",
        "/tasks/t1",
        "/tasks/pending",
        "/locks",
        "/health",
        "/metrics",
    ):
        answer = call("GET", path, headers=ADMIN)
        assert answer.status_code == 200, (path, answer.text)


def test_tokens_never_appear_in_listings_events_or_error_answers(make_app: AppFactory) -> None:
    orch, client = make_app()
    call = Recorder(client)
    tokens = exercise(orch, call)
    listings(call)
    assert any(a.status_code in (401, 403) for a in call.answers)  # refusals were made
    everything = "\n".join(call.texts())
    events = json.dumps(orch.events(0, limit=1000))
    for secret in secrets_of(*tokens):
        assert secret not in everything
        assert secret not in events
    for agent in orch.agents()["agents"]:
        assert not {"token", "token_hash"} & agent.keys()


def record_texts(records: list[logging.LogRecord]) -> list[str]:
    """Each record as the service's text and JSON formatters write it, plus its fields."""
    text, as_json = TextFormatter("%(name)s %(message)s"), JsonFormatter()
    out = []
    for record in records:
        out.append(text.format(record))
        out.append(as_json.format(record))
        out.append(repr(record.__dict__))
    return out


def test_tokens_never_appear_in_logs_access_log_or_exception_logs(
    make_app: AppFactory, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.DEBUG)  # every logger, the per-task DEBUG flow included
    # exercise() presents two unknown tokens; the two guesses below make the lockout.
    orch, client = make_app(access_log=True, auth_max_failures=4)
    call = Recorder(client)
    tokens = exercise(orch, call)
    # A bug while a token is presented: the 500 is logged with its traceback.
    first = tokens[0]

    def broken(agent_id: str, **options: Any) -> dict[str, Any]:
        raise RuntimeError("heartbeat handler exploded")

    monkeypatch.setattr(orch, "heartbeat", broken)
    crashed = call("POST", "/agents/a1/heartbeat", headers=bearer(first))
    assert crashed.status_code == 500
    # Enough unknown tokens to lock this address out: the warning names the address.
    call("GET", "/stats", headers=bearer("guess-1"))
    call("GET", "/stats", headers=bearer("guess-2"))
    assert call("GET", "/stats", headers=ADMIN).status_code == 429
    tokens += ["guess-1", "guess-2"]

    logged = record_texts(caplog.records)
    assert any("heartbeat handler exploded" in line for line in logged)  # the traceback
    assert any("orch.access" in line for line in logged)  # access lines were written
    assert any("refused for" in line for line in logged)  # the lockout warning
    for secret in secrets_of(*tokens):
        for line in logged:
            assert secret not in line


def test_settings_never_show_the_admin_token() -> None:
    settings = Settings(admin_token=ADMIN_TOKEN)
    for shown in (json.dumps(settings.describe()), repr(settings), str(settings)):
        assert ADMIN_TOKEN not in shown
    assert settings.describe()["admin_token"] == "***"


def test_in_memory_records_never_show_the_token_hash(make_app: AppFactory) -> None:
    # Whatever logs an entry or record by accident (an f-string, a debugger dump)
    # must not print the credential.
    orch, _ = make_app()
    token = orch.register_agent("a1", "implementation")["token"]
    entry = orch.directory.get("a1")
    assert entry is not None and entry.token_hash == hash_token(token)
    for shown in (repr(entry), str(entry), repr(entry.record)):
        for secret in secrets_of(token):
            assert secret not in shown
