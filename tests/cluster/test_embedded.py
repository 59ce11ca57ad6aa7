"""``Orchestrator(store="postgresql://...")`` is a node like any other, in this process.

While it is a standby its calls raise ``NotLeader`` naming the leader; a node may go
leader, standby, leader again, and each step down stops its own actors, threads and
writer, leaving Pykka's registry to the others.
"""

from __future__ import annotations

import threading

import pykka
import pytest

from orch import Orchestrator, Settings
from orch.errors import NotLeader
from tests.conftest import wait_until

LEASE_S = 1.5


def node(url: str, name: str) -> Orchestrator:
    settings = Settings(leader_lease_s=LEASE_S, advertise_url=f"http://{name}.example:8005")
    return Orchestrator(settings, store=url)


def writers() -> int:
    return sum(thread.name == "orch-store-writer" for thread in threading.enumerate())


def test_a_standby_names_the_leader_and_takes_over_when_it_goes(pg_url: str):
    first = node(pg_url, "first").start()
    second = node(pg_url, "second").start()
    try:
        assert (first.role, second.role) == ("leader", "standby")
        first.submit({"n": 1}, task_id="kept")
        with pytest.raises(NotLeader, match=r"first\.example") as refused:
            second.submit({"n": 2})
        assert refused.value.leader == "http://first.example:8005"
        assert refused.value.code == "no_leader"

        first.stop()
        wait_until(lambda: second.role == "leader", timeout_s=30, message="second takes over")
        assert second.task("kept")["payload"] == {"n": 1}
    finally:
        first.stop()
        second.stop()


def test_leader_standby_leader_in_one_process_releases_what_it_held(pg_url: str):
    actors_before = len(pykka.ActorRegistry.get_all())
    writers_before = writers()
    first = node(pg_url, "first").start()
    second = node(pg_url, "second").start()
    try:
        assert first.role == "leader"
        first.submit({}, task_id="t1")
        term_actors = len(pykka.ActorRegistry.get_all()) - actors_before
        assert term_actors > 0
        # First's session to the lease dies (as if cut off): second takes over at once,
        # and first, finding the lease gone, steps down and stops its term.
        first.node._lease._conn.close()
        wait_until(lambda: second.role == "leader", timeout_s=30, message="second leads")
        wait_until(lambda: first.role == "standby", timeout_s=30, message="first steps down")
        # Its role changes first (no new calls), then its term stops: second's only.
        wait_until(
            lambda: (
                len(pykka.ActorRegistry.get_all()) - actors_before == term_actors
                and writers() - writers_before == 1
            ),
            timeout_s=30,
            message="first's actors and writer stopped",
        )
        second.submit({}, task_id="t2")

        second.stop()  # resigns: first leads again, from the store
        wait_until(lambda: first.role == "leader", timeout_s=30, message="first leads again")
        assert {t["task_id"] for t in first.tasks()} >= {"t1", "t2"}
        assert len(pykka.ActorRegistry.get_all()) - actors_before == term_actors
        assert writers() - writers_before == 1
    finally:
        first.stop()
        second.stop()
    assert len(pykka.ActorRegistry.get_all()) == actors_before
    assert writers() == writers_before


def test_a_string_that_is_not_postgresql_is_orch_db_as_before():
    with Orchestrator(store=":memory:") as orchestrator:
        assert orchestrator.settings.db == ":memory:"
        orchestrator.submit({}, task_id="x")
