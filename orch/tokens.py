"""Agents' tokens: made once at registration, kept only as hashes, checked on every call.

A token is 256 bits from ``secrets``: nobody guesses one, so a single SHA-256 round
is enough to store it safely (a slow password hash would only slow every heartbeat).
Agents are looked up by the hash of the token presented, in the Supervisor's
published ``Directory``, so checking a token needs no actor round trip and compares
no secrets character by character; the one comparison made is ``hmac.compare_digest``.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets

from orch.actors.directory import Directory
from orch.errors import Forbidden, Unauthorized

#: Bytes of randomness in a token (shown to the agent URL-safe base64, 43 characters).
TOKEN_BYTES = 32


def new_token() -> str:
    """A fresh agent token; show it once, store only ``hash_token`` of it."""
    return secrets.token_urlsafe(TOKEN_BYTES)


def digest(secret: str) -> bytes:
    """The SHA-256 of a presented secret (a token, the admin token), to compare or remember.

    Digests have equal lengths, so ``hmac.compare_digest`` of two leaks neither a
    secret's characters nor its length; ``surrogateescape`` hashes whatever bytes a
    header carried instead of failing on them.
    """
    return hashlib.sha256(secret.encode("utf-8", "surrogateescape")).digest()


def same_secret(secret: str, known_digest: bytes) -> bool:
    """Whether ``secret`` is the one ``known_digest`` was made of, in constant time."""
    return hmac.compare_digest(digest(secret), known_digest)


def hash_token(token: str) -> str:
    """What is stored of a token: its SHA-256, hex (see the module docstring for why one round)."""
    return digest(token).hex()


class Tokens:
    """Says whose a token is, from the agents' published ``Directory``."""

    def __init__(self, directory: Directory) -> None:
        self._directory = directory

    def owner(self, token: str) -> str | None:
        """The id of the agent ``token`` belongs to, or None if it is nobody's."""
        token_hash = hash_token(token)
        owner = self._directory.agent_with_token_hash(token_hash)
        if owner is None:
            return None
        # The index and the entry are published apart; believe the entry, in constant time.
        entry = self._directory.get(owner)
        if entry is None or not hmac.compare_digest(token_hash, entry.token_hash):
            return None
        return owner

    def identify(self, token: str | None) -> str:
        """The id of the agent ``token`` belongs to; ``Unauthorized`` if it is nobody's.

        Tokens are stored as SHA-256 hashes, and the look-up is by hash, so no
        comparison of secrets leaks timing about the token's characters.
        """
        if not token:
            raise Unauthorized("this call needs the agent's token: Authorization: Bearer <token>")
        owner = self.owner(token)
        if owner is None:
            raise Unauthorized("the token does not belong to any registered agent")
        return owner

    def authenticate(self, agent_id: str, token: str | None) -> None:
        """Check that ``token`` is ``agent_id``'s own.

        ``Unauthorized`` without a token or with one that is nobody's; ``Forbidden``
        with another agent's token. Used by the HTTP layer on agent-scoped calls.
        """
        owner = self.identify(token)
        if owner != agent_id:
            raise Forbidden(
                f"this token belongs to agent {owner!r}; an agent cannot act as {agent_id!r}"
            )
