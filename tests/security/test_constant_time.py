"""Secrets are compared in constant time: ``hmac.compare_digest`` on equal-length digests.

Timing cannot be measured reliably on a shared machine, so these tests prove the
mechanism instead: the comparison that decides is ``hmac.compare_digest`` (a spy
that answers False makes the right token fail), and what it compares are SHA-256
digests of equal length whatever the presented token's length, so neither the
secret's characters nor its length can leak through an early exit.
"""

from __future__ import annotations

import hmac
from collections.abc import Callable
from typing import Any

import pytest

from orch import Unauthorized
from orch.http.auth import AuthMiddleware
from tests.security.conftest import ADMIN_TOKEN, AppFactory

Calls = list[tuple[Any, Any]]


def spy_on_compare_digest(
    monkeypatch: pytest.MonkeyPatch, answer: Callable[[Any, Any], bool] | None = None
) -> Calls:
    """Replace ``hmac.compare_digest`` with a recorder; by default it still compares."""
    calls: Calls = []
    real = hmac.compare_digest

    def spy(a: Any, b: Any) -> bool:
        calls.append((a, b))
        return real(a, b) if answer is None else answer(a, b)

    monkeypatch.setattr(hmac, "compare_digest", spy)
    return calls


@pytest.mark.parametrize("presented", ["x", ADMIN_TOKEN[:-1], ADMIN_TOKEN + "x" * 500, ADMIN_TOKEN])
def test_the_admin_token_is_compared_as_equal_length_digests(
    monkeypatch: pytest.MonkeyPatch, presented: str
) -> None:
    calls = spy_on_compare_digest(monkeypatch)
    middleware = AuthMiddleware(ADMIN_TOKEN)
    assert middleware.is_admin(presented) is (presented == ADMIN_TOKEN)
    assert len(calls) == 1
    ours, theirs = calls[0]
    assert isinstance(ours, bytes) and isinstance(theirs, bytes)
    assert len(ours) == len(theirs) == 32  # SHA-256 digests, not the raw strings


def test_compare_digest_alone_decides_whether_a_token_is_the_admin_token(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spy_on_compare_digest(monkeypatch, answer=lambda a, b: False)
    assert AuthMiddleware(ADMIN_TOKEN).is_admin(ADMIN_TOKEN) is False


def test_an_agent_token_is_checked_with_compare_digest_on_hashes(
    make_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    orch, _ = make_app()
    token = orch.register_agent("a1", "implementation")["token"]
    calls = spy_on_compare_digest(monkeypatch)
    assert orch.identify(token) == "a1"
    assert calls and all(len(a) == len(b) == 64 for a, b in calls)  # hex SHA-256
    assert token not in {value for pair in calls for value in pair}
    spy_on_compare_digest(monkeypatch, answer=lambda a, b: False)
    with pytest.raises(Unauthorized):
        orch.identify(token)


def test_the_admin_check_over_http_uses_compare_digest(
    make_app: AppFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, client = make_app()
    spy_on_compare_digest(monkeypatch, answer=lambda a, b: False)
    refused = client.simulate_get("/stats", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"})
    assert refused.status_code == 401
