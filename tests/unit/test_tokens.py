"""orch/tokens.py: tokens made once, kept as hashes, checked in constant time."""

from __future__ import annotations

import hashlib

import pytest

from orch import Forbidden, Orchestrator, Unauthorized
from orch.tokens import Tokens, digest, hash_token, new_token, same_secret


def test_tokens_are_256_random_bits_url_safe():
    tokens = {new_token() for _ in range(100)}
    assert len(tokens) == 100
    assert all(len(t) == 43 and t.replace("-", "").replace("_", "").isalnum() for t in tokens)


def test_what_is_stored_is_the_sha256_of_the_token():
    # Stored hashes must stay readable by every release: this is the stored format.
    assert hash_token("abc") == hashlib.sha256(b"abc").hexdigest()
    assert digest("abc") == hashlib.sha256(b"abc").digest()
    assert digest("\udcff")  # undecodable header bytes are hashed, not an exception


def test_same_secret_compares_digests():
    known = digest("the admin token")
    assert same_secret("the admin token", known)
    assert not same_secret("the admin token!", known)
    assert not same_secret("", known)


@pytest.fixture
def tokens(orch: Orchestrator) -> tuple[Tokens, str, str]:
    t1 = orch.register_agent("a1", "implementation")["token"]
    t2 = orch.register_agent("a2", "implementation")["token"]
    return Tokens(orch.directory), t1, t2


def test_a_token_says_whose_it_is(tokens):
    check, t1, t2 = tokens
    assert (check.owner(t1), check.owner(t2), check.owner("guess")) == ("a1", "a2", None)
    assert check.identify(t1) == "a1"
    check.authenticate("a2", t2)


def test_no_token_or_nobodys_is_unauthorized_and_anothers_is_forbidden(tokens):
    check, t1, _ = tokens
    for token in (None, "", "guess"):
        with pytest.raises(Unauthorized):
            check.identify(token)
        with pytest.raises(Unauthorized):
            check.authenticate("a1", token)
    with pytest.raises(Forbidden, match="belongs to agent 'a1'"):
        check.authenticate("a2", t1)


def test_a_deregistered_agents_token_is_nobodys(orch, tokens):
    check, t1, _ = tokens
    orch.deregister_agent("a1")
    assert check.owner(t1) is None
    with pytest.raises(Unauthorized):
        check.identify(t1)


def test_a_stale_index_read_is_not_believed(orch, tokens):
    """The hash index and the entries are published apart: the entry has the last word."""
    from orch.actors.directory import Directory

    _, t1, t2 = tokens

    class StaleIndex(Directory):
        def agent_with_token_hash(self, token_hash: str) -> str | None:
            return "a1"  # as if read just before a1 re-registered with a new token

    directory = StaleIndex()
    directory.put(orch.directory.get("a1"))
    check = Tokens(directory)
    assert check.owner(t1) == "a1"
    assert check.owner(t2) is None
