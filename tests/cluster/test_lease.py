"""The lease and the fenced commit, against a real PostgreSQL (each test its own database).

One node leads at a time; a standby takes over when the lease expires or at once when
the holder's session ends; epochs grow by one per takeover; and a store writing for
an epoch that is not the lease's any more can commit nothing.
"""

from __future__ import annotations

import contextlib
import time

import pytest

from orch.errors import StoreError
from orch.model import Task
from orch.store.postgres import PostgresStore
from orch.store.postgres_lease import LeaderLease
from tests.store.records import make_task


def lease(url: str, name: str, ttl_s: float = 30.0) -> LeaderLease:
    return LeaderLease(url, holder=name, url=f"http://{name}", ttl_s=ttl_s)


def test_one_node_leads_and_the_others_see_it(pg_url: str):
    nodes = [lease(pg_url, name) for name in ("a", "b", "c")]
    try:
        epochs = [node.try_lead() for node in nodes]
        assert epochs == [1, None, None]
        seen = nodes[2].leader()
        assert (seen.holder, seen.epoch, seen.url, seen.expired) == ("a", 1, "http://a", False)
        assert nodes[0].renew() is True
        assert nodes[1].renew() is False  # never led
        assert [node.try_lead() for node in nodes[1:]] == [None, None]
    finally:
        for node in nodes:
            node.close()


def test_a_closed_session_is_taken_over_at_once_with_the_next_epoch(pg_url: str):
    first, second = lease(pg_url, "a"), lease(pg_url, "b")
    try:
        assert first.try_lead() == 1
        assert second.try_lead() is None
        first._conn.close()  # the leader's process died: its session ends, not its lease
        assert second.try_lead() == 2
        assert first.renew() is False  # it reconnects to find the lease gone
        assert second.leader().holder == "b"
    finally:
        first.close()
        second.close()


def test_an_expired_lease_is_taken_over_though_its_holder_lives(pg_url: str):
    frozen, standby = lease(pg_url, "a", ttl_s=0.2), lease(pg_url, "b")
    try:
        assert frozen.try_lead() == 1
        deadline = time.monotonic() + 10
        while (epoch := standby.try_lead()) is None:
            assert time.monotonic() < deadline, "the expired lease was never taken over"
            time.sleep(0.05)
        assert epoch == 2
        assert frozen.renew() is False
    finally:
        frozen.close()
        standby.close()


def test_resigning_frees_the_lease_for_the_next(pg_url: str):
    first, second = lease(pg_url, "a"), lease(pg_url, "b")
    try:
        assert first.try_lead() == 1
        first.resign()
        assert second.try_lead() == 2
    finally:
        first.close()
        second.close()


def task(key: str) -> Task:
    return make_task(key)


def test_a_deposed_leader_commits_nothing(pg_url: str):
    first, second = lease(pg_url, "a"), lease(pg_url, "b")
    old = new = None
    try:
        old = PostgresStore(pg_url, epoch=first.try_lead(), write_wait_s=2)
        old.put_task(task("before"))  # ours: committed
        first._conn.close()
        new = PostgresStore(pg_url, epoch=second.try_lead(), write_wait_s=2)
        with pytest.raises(StoreError, match="not the leader"):
            old.put_task(task("late"))
        with pytest.raises(StoreError, match="not the leader"):
            old.delete_task("before")
        new.put_task(task("after"))
        assert {t.key for t in new.load_tasks()} == {"before", "after"}
    finally:
        for store in (old, new):
            if store is not None:
                store.close()
        first.close()
        second.close()


def test_a_store_without_an_epoch_is_not_fenced(pg_url: str):
    store = PostgresStore(pg_url)
    try:
        store.put_task(task("plain"))
        assert [t.key for t in store.load_tasks()] == ["plain"]
    finally:
        store.close()


def test_a_leader_frozen_inside_a_transaction_does_not_block_the_takeover(pg_url: str):
    import psycopg

    first, second = lease(pg_url, "a", ttl_s=0.5), lease(pg_url, "b")
    store = PostgresStore(pg_url, epoch=first.try_lead())
    # The writer's session as a frozen process leaves it: a fenced write begun, the
    # lease row locked for share, the transaction never finished.
    frozen = psycopg.connect(pg_url, options=store._options["options"])
    try:
        frozen.execute("DELETE FROM tasks WHERE key = 'nothing'")  # fence: FOR SHARE
        deadline = time.monotonic() + 30
        epoch = None
        while epoch is None:
            assert time.monotonic() < deadline, "the takeover stayed blocked"
            with contextlib.suppress(StoreError):  # waited on the row lock in vain
                epoch = second.try_lead()
            time.sleep(0.05)
        assert epoch == 2
        with pytest.raises(psycopg.Error, match="idle-in-transaction"):
            frozen.execute("SELECT 1")  # the server ended the idle transaction's session
    finally:
        frozen.close()
        store.close()
        first.close()
        second.close()
