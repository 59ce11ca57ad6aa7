"""Tokens cannot be guessed quickly: an address that presents unknown tokens is locked out.

After ``auth_max_failures`` unknown tokens within ``auth_failure_window_s`` every
request from that address that carries a token is refused with 429 and Retry-After
for ``auth_lockout_s`` — the right token too, so a guess made during the cool-down
learns nothing. Time is a ManualClock: lockouts end by ``clock.advance``.
"""

from __future__ import annotations

import logging

import falcon.testing
import pytest

from orch import ManualClock
from orch.http.auth import FailedTokenThrottle
from tests.api.conftest import assert_problem, bearer, register, snapshot
from tests.security.conftest import ADMIN_TOKEN, AppFactory

ADMIN = bearer(ADMIN_TOKEN)
ATTACKER = "203.0.113.7"
BYSTANDER = "198.51.100.2"


def guess(
    client: falcon.testing.TestClient, token: str, address: str = ATTACKER, path: str = "/stats"
) -> falcon.testing.Result:
    """An admin call from ``address`` presenting ``token``."""
    return client.simulate_get(path, headers=bearer(token), remote_addr=address)


def test_guessing_the_admin_token_locks_the_address_out(
    make_app: AppFactory, clock: ManualClock
) -> None:
    _, client = make_app(auth_max_failures=5, auth_failure_window_s=60, auth_lockout_s=300)
    for n in range(5):
        assert_problem(guess(client, f"guess-{n}"), 401, "unauthorized")
    # Locked out: even the right token is refused, before it is checked.
    refused = guess(client, ADMIN_TOKEN)
    problem = assert_problem(refused, 429, "too_many_requests")
    assert refused.headers["Retry-After"] == "300"
    assert "wait" in problem["detail"]
    assert_problem(guess(client, "guess-6"), 429, "too_many_requests")
    # Other addresses are not affected.
    assert guess(client, ADMIN_TOKEN, address=BYSTANDER).status_code == 200
    clock.advance(299)
    refused = guess(client, ADMIN_TOKEN)
    assert refused.status_code == 429 and refused.headers["Retry-After"] == "1"
    clock.advance(1)
    assert guess(client, ADMIN_TOKEN).status_code == 200


def test_guessing_agent_tokens_locks_the_address_out(
    make_app: AppFactory, clock: ManualClock
) -> None:
    orch, client = make_app(auth_max_failures=3, auth_lockout_s=60)
    token = register(client, "a1", start=True, headers=ADMIN)
    before = snapshot(client, orch, ADMIN)
    for n in range(3):
        answer = client.simulate_post(
            "/agents/a1/heartbeat", headers=bearer(f"guess-{n}"), remote_addr=ATTACKER
        )
        assert_problem(answer, 401, "unauthorized")
    refused = client.simulate_post(
        "/agents/a1/heartbeat", headers=bearer(token), remote_addr=ATTACKER
    )
    assert_problem(refused, 429, "too_many_requests")
    assert refused.headers["Retry-After"] == "60"
    assert snapshot(client, orch, ADMIN) == before
    clock.advance(60)
    beat = client.simulate_post("/agents/a1/heartbeat", headers=bearer(token), remote_addr=ATTACKER)
    assert beat.status_code == 200


def test_failures_spread_wider_than_the_window_do_not_lock_out(
    make_app: AppFactory, clock: ManualClock
) -> None:
    _, client = make_app(auth_max_failures=3, auth_failure_window_s=60)
    for _ in range(5):
        for n in range(2):
            assert guess(client, f"guess-{n}").status_code == 401
        clock.advance(61)
    assert guess(client, ADMIN_TOKEN).status_code == 200


def test_only_unknown_tokens_count_as_failures(make_app: AppFactory) -> None:
    _, client = make_app(auth_max_failures=2)
    first = register(client, "a1", start=True, headers=ADMIN)
    second = register(client, "a2", start=True, headers=ADMIN)
    for _ in range(10):
        # No token at all: refused, but nothing was guessed.
        assert client.simulate_get("/stats", remote_addr=ATTACKER).status_code == 401
        # A malformed header guesses nothing either.
        malformed = {"Authorization": "Basic YTpi"}
        assert (
            client.simulate_get("/stats", headers=malformed, remote_addr=ATTACKER).status_code
            == 401
        )
        # Another agent's (valid) token: 403, a known identity.
        other = client.simulate_post(
            "/agents/a1/heartbeat", headers=bearer(second), remote_addr=ATTACKER
        )
        assert other.status_code == 403
        # An agent's token on an admin call: 403.
        assert guess(client, first).status_code == 403
        # The admin token where an agent's is needed: 401, but it is no guess.
        admin_as_agent = client.simulate_post(
            "/agents/a1/heartbeat", headers=ADMIN, remote_addr=ATTACKER
        )
        assert admin_as_agent.status_code == 401
    assert guess(client, ADMIN_TOKEN).status_code == 200


def test_a_valid_token_does_not_reset_the_count(make_app: AppFactory) -> None:
    # Otherwise a rogue agent could interleave its own token with guesses at the admin's.
    _, client = make_app(auth_max_failures=3)
    token = register(client, "rogue", start=True, headers=ADMIN)
    for n in range(3):
        beat = client.simulate_post(
            "/agents/rogue/heartbeat", headers=bearer(token), remote_addr=ATTACKER
        )
        assert beat.status_code == 200
        assert guess(client, f"guess-{n}").status_code == 401
    assert guess(client, ADMIN_TOKEN).status_code == 429


def test_public_reads_and_token_free_calls_stay_open_during_a_lockout(
    make_app: AppFactory,
) -> None:
    _, client = make_app(auth_max_failures=1)
    assert guess(client, "guess").status_code == 401
    assert client.simulate_get("/health", remote_addr=ATTACKER).status_code == 200
    assert client.simulate_get("/metrics", remote_addr=ATTACKER).status_code == 200
    assert guess(client, ADMIN_TOKEN).status_code == 429


def test_without_an_admin_token_agent_token_guesses_are_still_throttled(
    make_app: AppFactory,
) -> None:
    _, client = make_app(admin_token=None, auth_max_failures=2)
    token = register(client, "a1", start=True)
    for n in range(2):
        answer = client.simulate_post(
            "/agents/a1/heartbeat", headers=bearer(f"g{n}"), remote_addr=ATTACKER
        )
        assert answer.status_code == 401
    answer = client.simulate_post(
        "/agents/a1/heartbeat", headers=bearer(token), remote_addr=ATTACKER
    )
    assert_problem(answer, 429, "too_many_requests")


def test_a_lockout_is_logged_with_the_address_but_not_the_token(
    make_app: AppFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="orch.http.auth")
    _, client = make_app(auth_max_failures=2)
    guess(client, "secret-guess-1")
    guess(client, "secret-guess-2")
    lines = [r.getMessage() for r in caplog.records if r.name == "orch.http.auth"]
    assert len(lines) == 1 and ATTACKER in lines[0]
    assert "secret-guess" not in lines[0]


def test_a_stale_token_retried_is_counted_once(make_app: AppFactory) -> None:
    # An agent whose token went stale (it was deregistered) retries it every beat.
    _, client = make_app(auth_max_failures=3)
    token = register(client, "a1", start=True, headers=ADMIN)
    assert client.simulate_delete("/agents/a1", headers=ADMIN).status_code == 200
    for _ in range(20):
        beat = client.simulate_post(
            "/agents/a1/heartbeat", headers=bearer(token), remote_addr=ATTACKER
        )
        assert_problem(beat, 401, "unauthorized")
    assert guess(client, ADMIN_TOKEN).status_code == 200


def test_the_throttle_remembers_a_bounded_number_of_addresses() -> None:
    clock = ManualClock()
    throttle = FailedTokenThrottle(clock, max_failures=2, lockout_s=60, max_addresses=3)
    throttle.record_failure("locked", "guess-1")
    assert throttle.record_failure("locked", "guess-2") is True
    for n in range(100):
        throttle.record_failure(f"10.0.0.{n}", "guess")
    assert throttle.tracked_addresses <= 3
    # A locked-out address is not forgotten to make room for new ones.
    assert throttle.retry_after_s("locked") == 60
    clock.advance(60)
    assert throttle.retry_after_s("locked") is None
