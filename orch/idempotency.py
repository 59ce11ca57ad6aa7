"""``IdempotencyKeys``: the first answer to a keyed write, kept so a retry gets it again.

A client that loses an answer (a connection cut, a leader that died mid-request)
cannot tell whether its write was applied. If the write carried an
``Idempotency-Key`` (the IETF httpapi draft, as Stripe uses it), it retries with
the same key and gets the first answer back, byte for byte, instead of applying
the write twice. This module owns the two pieces of state that takes:

* the answers themselves, in the Store (``put_idempotent_answer``), kept for
  ``ORCH_IDEMPOTENCY_TTL_S`` and scoped by credential, so one client never sees
  another's answer; a retry after a restart or a failover finds them there;
* the keys whose first request is still being answered, in this process only: a
  retry that overtakes its original is refused with 409 (``IdempotencyKeyInUse``)
  rather than run beside it. Only one process answers writes (the leader), so
  in-process is where they are.

What the store holds is no secret's copy: a registration's answer carries the
agent's token, which the orchestrator otherwise keeps only as a hash. So the store
gets a digest of the key (``key_digest``), never the key, and the body sealed with
AES-GCM under a key derived from the client's key and credential (``seal``), which
only a retry presenting both can open. A reader of the database (or a backup)
learns statuses and content types, not answers; how safe that is depends on the
key being hard to guess, as the SDK's random UUIDs are.

The HTTP layer (``orch/http/idempotency.py``) reads the key, the request's
fingerprint and the credential, and calls ``begin`` before the request runs and
``finish`` once its answer is durable; nothing here knows about HTTP beyond a
status code and headers.

Why the answer is stored after the change it describes, not in one transaction
with it: the actors write their own records through the store, and the answer
exists only once they have. So a crash in the instant between the change's commit
and the answer's (one group commit) leaves a change without its answer, and its
retry is applied again. The answer is never sent before it is stored, so a client
that saw an answer always gets the same one on a retry.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import os
import threading
from collections.abc import Iterable

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from orch.clock import Clock
from orch.errors import (
    IdempotencyKeyInUse,
    IdempotencyKeyReused,
    OrchestratorError,
    StoreError,
)
from orch.events import Events
from orch.model import IdempotentAnswer
from orch.store.base import Store

logger = logging.getLogger("orch.idempotency")

#: How often expired answers are deleted from the store (monotonic seconds).
PRUNE_INTERVAL_S = 60.0
#: Statuses that are not the request's outcome but the caller's or the moment's
#: (credentials, a lockout, a slow client): never kept, so a retry with the same key,
#: once the cause is fixed, is answered afresh. 5xx answers are never kept either:
#: they say the request was not applied, or not yet.
NOT_KEPT = frozenset({401, 403, 408, 429})


#: AES-GCM's nonce: random per answer, stored in front of the sealed body.
NONCE_BYTES = 12


def key_digest(key: str) -> str:
    """What the store keeps instead of the client's key (a retry finds it by this)."""
    return hashlib.sha256(b"orch-idempotency-key\0" + key.encode()).hexdigest()


def _sealing_key(scope: str, key: str) -> bytes:
    # Another digest of the key than the stored one: the stored one does not open it.
    return hashlib.sha256(
        b"orch-idempotency-seal\0" + scope.encode() + b"\0" + key.encode()
    ).digest()


def seal(scope: str, key: str, fingerprint: str, body: bytes) -> bytes:
    """``body`` encrypted and authenticated for the retries of this request only."""
    nonce = os.urandom(NONCE_BYTES)
    return nonce + AESGCM(_sealing_key(scope, key)).encrypt(nonce, body, fingerprint.encode())


def unseal(scope: str, key: str, fingerprint: str, sealed: bytes) -> bytes:
    """The body ``seal`` sealed; ``StoreError`` if it does not open (altered, or not ours)."""
    nonce, ciphertext = sealed[:NONCE_BYTES], sealed[NONCE_BYTES:]
    try:
        return AESGCM(_sealing_key(scope, key)).decrypt(nonce, ciphertext, fingerprint.encode())
    except (InvalidTag, ValueError):
        raise StoreError(
            "store read failed: a kept answer does not open with its key (altered in the store?)"
        ) from None


def keeps(status: int) -> bool:
    """Whether an answer with ``status`` is kept for the retries of its request."""
    return status < 500 and status not in NOT_KEPT


class IdempotencyKeys:
    """Keyed requests under way, and their answers in the store; safe from any thread.

    Every ``begin`` that returns None must be followed by ``finish`` (or ``abandon``),
    whatever happens to the request, or its key stays in progress until a restart.
    """

    def __init__(self, store: Store, clock: Clock, events: Events, ttl_s: float) -> None:
        self._store = store
        self._clock = clock
        self._events = events
        self.ttl_s = ttl_s
        self._lock = threading.Lock()
        self._in_flight: dict[tuple[str, str], str] = {}  # (scope, key) -> fingerprint
        self._next_prune = clock.monotonic() + PRUNE_INTERVAL_S
        self._pruning: threading.Thread | None = None

    @property
    def in_flight(self) -> int:
        """How many keyed requests are being answered now."""
        return len(self._in_flight)

    def begin(self, scope: str, key: str, fingerprint: str) -> IdempotentAnswer | None:
        """The stored answer to replay (opened: its ``body`` as it was sent), or None:
        the caller runs the request, then ``finish``.

        Raises ``IdempotencyKeyInUse`` while the key's first request is being answered,
        ``IdempotencyKeyReused`` if the key was used for another request (another
        ``fingerprint``), and ``StoreError`` if the store cannot be read (nothing ran).
        """
        slot = (scope, key)
        with self._lock:
            running = self._in_flight.get(slot)
            if running is None:
                self._in_flight[slot] = fingerprint
        if running is not None:
            if running != fingerprint:
                raise _reused(key)
            raise IdempotencyKeyInUse(
                f"a request with Idempotency-Key {key!r} is still being answered;"
                " retry shortly to get its answer"
            )
        try:
            stored = self._store.load_idempotent_answer(scope, key_digest(key))
        except BaseException:
            self.abandon(scope, key)
            raise
        if stored is None or stored.expired(self._clock.time()):
            return None
        self.abandon(scope, key)
        if stored.fingerprint != fingerprint:
            raise _reused(key)
        body = unseal(scope, key, fingerprint, stored.body)
        self._events.signal("idempotency.replayed")
        return dataclasses.replace(stored, key=key, body=body)

    def finish(
        self,
        scope: str,
        key: str,
        fingerprint: str,
        status: int,
        headers: Iterable[tuple[str, str]],
        body: bytes,
    ) -> bool:
        """Store the first answer (if ``keeps(status)``), sealed, durably; then free the key.

        Returns whether it was stored. A store that fails here is logged, not raised:
        the change behind the answer is durable already, and the answer itself is the
        client's best chance of not retrying it.
        """
        try:
            if not keeps(status):
                return False
            now = self._clock.time()
            answer = IdempotentAnswer(
                scope,
                key_digest(key),
                fingerprint,
                status,
                tuple(headers),
                seal(scope, key, fingerprint, body),
                now,
                now + self.ttl_s,
            )
            try:
                self._store.put_idempotent_answer(answer)
            except OrchestratorError as exc:
                logger.warning(
                    "the answer to a request with Idempotency-Key %r could not be kept"
                    " (%s); a retry of it would be applied again",
                    key,
                    exc.message,
                )
                self._events.signal("idempotency.unkept")
                return False
            return True
        finally:
            self.abandon(scope, key)

    def abandon(self, scope: str, key: str) -> None:
        """Free the key without storing an answer (the request never ran)."""
        with self._lock:
            self._in_flight.pop((scope, key), None)

    def prune(self) -> int:
        """Delete the answers that have expired; returns how many."""
        return self._store.prune_idempotent_answers(self._clock.time())

    def tick(self) -> None:
        """Prune expired answers every ``PRUNE_INTERVAL_S``, on a short-lived thread.

        A day of answers may be many rows; deleting them must not hold up the ticker
        that drives leases and time-outs.
        """
        now = self._clock.monotonic()
        if now < self._next_prune or (self._pruning is not None and self._pruning.is_alive()):
            return
        self._next_prune = now + PRUNE_INTERVAL_S
        self._pruning = threading.Thread(
            target=self._prune_quietly, name="orch-idempotency-pruner", daemon=True
        )
        self._pruning.start()

    def _prune_quietly(self) -> None:
        try:
            removed = self.prune()
        except OrchestratorError as exc:
            logger.warning("pruning expired idempotent answers failed, will retry: %s", exc)
            return
        if removed:
            logger.info("pruned %d expired idempotent answers", removed)


def _reused(key: str) -> IdempotencyKeyReused:
    return IdempotencyKeyReused(
        f"Idempotency-Key {key!r} was used for another request (method, path or body);"
        " use a new key for a new request"
    )
