"""orch/idempotency.py: keyed requests under way, and their answers kept in the store."""

from __future__ import annotations

from dataclasses import replace

import pytest

from orch import ManualClock
from orch.errors import IdempotencyKeyInUse, IdempotencyKeyReused, StoreError
from orch.events import Events
from orch.idempotency import PRUNE_INTERVAL_S, IdempotencyKeys, keeps, key_digest
from orch.store import MemoryStore
from tests.conftest import wait_until

HEADERS = (("content-type", "application/json"),)


@pytest.fixture
def keys(store: MemoryStore, clock: ManualClock) -> IdempotencyKeys:
    return IdempotencyKeys(store, clock, Events(clock), ttl_s=100.0)


def test_a_finished_answer_is_replayed_until_it_expires(keys, store, clock):
    assert keys.begin("s", "k", "fp") is None
    assert keys.in_flight == 1
    assert keys.finish("s", "k", "fp", 201, HEADERS, b"{}") is True
    assert keys.in_flight == 0
    replay = keys.begin("s", "k", "fp")
    assert replay is not None and (replay.status, replay.body) == (201, b"{}")
    assert replay.expires_at == clock.time() + 100.0
    assert keys.in_flight == 0  # a replay holds nothing
    clock.advance(100.0)
    assert keys.begin("s", "k", "fp") is None  # expired: the key is new again
    keys.abandon("s", "k")


def test_a_key_in_flight_refuses_its_retry_and_another_request(keys):
    assert keys.begin("s", "k", "fp") is None
    with pytest.raises(IdempotencyKeyInUse) as in_use:
        keys.begin("s", "k", "fp")
    assert in_use.value.status == 409 and in_use.value.details["retry_after_s"] == 1.0
    with pytest.raises(IdempotencyKeyReused) as reused:
        keys.begin("s", "k", "other")
    assert reused.value.status == 422
    assert keys.begin("other-scope", "k", "fp") is None  # another credential's key
    keys.abandon("s", "k")
    assert keys.begin("s", "k", "fp") is None  # abandoned: nothing was kept


def test_a_kept_answer_refuses_another_request(keys):
    keys.begin("s", "k", "fp")
    keys.finish("s", "k", "fp", 200, HEADERS, b"{}")
    with pytest.raises(IdempotencyKeyReused):
        keys.begin("s", "k", "other")
    assert keys.in_flight == 0


@pytest.mark.parametrize(
    ("status", "kept"),
    [
        (200, True),
        (201, True),
        (202, True),
        (400, True),
        (404, True),
        (409, True),
        (422, True),
        (401, False),
        (403, False),
        (408, False),
        (429, False),
        (500, False),
        (503, False),
    ],
)
def test_which_answers_are_kept(keys, store, status, kept):
    assert keeps(status) is kept
    keys.begin("s", "k", "fp")
    assert keys.finish("s", "k", "fp", status, HEADERS, b"x") is kept
    assert (store.load_idempotent_answer("s", key_digest("k")) is not None) is kept


def test_a_store_that_cannot_be_read_runs_nothing_and_frees_the_key(keys, store):
    store.close()
    with pytest.raises(StoreError):
        keys.begin("s", "k", "fp")
    assert keys.in_flight == 0


def test_a_store_that_cannot_keep_the_answer_frees_the_key_and_says_so(keys, store):
    keys.begin("s", "k", "fp")
    store.fail_writes = "disk full"
    assert keys.finish("s", "k", "fp", 200, HEADERS, b"{}") is False
    assert keys.in_flight == 0


def test_the_ticker_prunes_expired_answers_once_a_minute(store, clock):
    keys = IdempotencyKeys(store, clock, Events(clock), ttl_s=10.0)
    keys.begin("s", "k", "fp")
    keys.finish("s", "k", "fp", 200, HEADERS, b"{}")
    clock.advance(11.0)
    keys.tick()  # the first minute has not passed
    assert store.load_idempotent_answer("s", key_digest("k")) is not None  # expired, not yet pruned
    clock.advance(PRUNE_INTERVAL_S)
    keys.tick()
    wait_until(lambda: store.load_idempotent_answer("s", key_digest("k")) is None, message="pruned")
    keys.begin("s", "k2", "fp")
    keys.finish("s", "k2", "fp", 200, HEADERS, b"{}")
    clock.advance(11.0)
    keys.tick()  # within the minute since the last pruning: not again
    assert store.load_idempotent_answer("s", key_digest("k2")) is not None
    clock.advance(PRUNE_INTERVAL_S)

    def pruned() -> bool:
        keys.tick()  # a no-op while the last pruning thread is still finishing
        return store.load_idempotent_answer("s", key_digest("k2")) is None

    wait_until(pruned, message="pruned")


def test_the_store_holds_neither_the_key_nor_the_answer_in_the_clear(keys, store):
    token_answer = b'{"agent_id":"a1","status":"registered","token":"s3cret-token"}'
    keys.begin("s", "my-key", "fp")
    keys.finish("s", "my-key", "fp", 201, HEADERS, token_answer)
    assert store.load_idempotent_answer("s", "my-key") is None  # not under the key itself
    kept = store.load_idempotent_answer("s", key_digest("my-key"))
    assert kept is not None and b"s3cret-token" not in kept.body
    assert kept.key != "my-key" and "my-key" not in kept.key
    replay = keys.begin("s", "my-key", "fp")
    assert replay is not None and replay.body == token_answer and replay.key == "my-key"


def test_an_altered_answer_is_refused_not_replayed(keys, store):
    keys.begin("s", "k", "fp")
    keys.finish("s", "k", "fp", 200, HEADERS, b"{}")
    kept = store.load_idempotent_answer("s", key_digest("k"))
    assert kept is not None
    store.put_idempotent_answer(replace(kept, body=kept.body[:-1] + bytes([kept.body[-1] ^ 1])))
    with pytest.raises(StoreError, match="does not open"):
        keys.begin("s", "k", "fp")
    assert keys.in_flight == 0
