"""``orch/runtime/pool.py``: Pykka actors sharing a few threads keep Pykka's guarantees."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pykka
import pytest

from orch.runtime.pool import SLICE, ActorPool, PooledActor
from tests.conftest import wait_until


class Recorder(PooledActor):
    """Records what it handled, on which thread, and whether two messages overlapped."""

    def __init__(
        self,
        pool: ActorPool,
        name: str = "r",
        log: list[str] | None = None,
        made: list | None = None,
    ) -> None:
        super().__init__(pool)
        self.name = name
        self.log = log if log is not None else []
        if made is not None:
            made.append(self)
        self.seen: list[Any] = []
        self.threads: set[int] = set()
        self.started_on: int | None = None
        self.failures: list[str] = []
        self.stopped = threading.Event()
        self._inside = False
        self.overlaps = 0

    def on_start(self) -> None:
        self.started_on = threading.get_ident()

    def on_stop(self) -> None:
        self.stopped.set()

    def on_failure(self, exception_type: Any, exception_value: Any, traceback: Any) -> None:
        self.failures.append(str(exception_value))

    def note(self, value: Any) -> None:
        if self._inside:
            self.overlaps += 1
        self._inside = True
        self.seen.append(value)
        self.log.append(self.name)
        self.threads.add(threading.get_ident())
        self._inside = False

    def history(self) -> list[Any]:
        return list(self.seen)

    def facts(self) -> dict[str, Any]:
        return {"threads": set(self.threads), "overlaps": self.overlaps, "on": self.started_on}

    def boom(self, message: str) -> None:
        raise RuntimeError(message)

    def wait_for(self, gate: threading.Event) -> None:
        gate.wait(10)


def start(pool: ActorPool, name: str = "r", log: list[str] | None = None) -> tuple[Any, Recorder]:
    made: list[Recorder] = []
    ref = Recorder.start(pool, name, log, made)
    return ref, made[0]


@pytest.fixture
def pool() -> Iterator[ActorPool]:
    pool = ActorPool(2, name="test-pool")
    yield pool
    pool.close()


def test_messages_are_handled_in_order_one_at_a_time(pool):
    ref = Recorder.start(pool)
    try:
        proxy = ref.proxy()
        senders = [
            threading.Thread(target=lambda n=n: [proxy.note((n, i)) for i in range(200)])
            for n in range(4)
        ]
        for sender in senders:
            sender.start()
        for sender in senders:
            sender.join()
        wait_until(lambda: len(proxy.history().get(timeout=5)) == 800, message="all handled")
        seen = proxy.history().get(timeout=5)
        for n in range(4):  # each sender's messages in the order sent
            assert [i for m, i in seen if m == n] == list(range(200))
        assert proxy.facts().get(timeout=5)["overlaps"] == 0
    finally:
        ref.stop()


def test_a_thousand_actors_run_on_the_pool_threads_only(pool):
    before = threading.active_count()
    refs = [Recorder.start(pool, f"r{n}") for n in range(1000)]
    try:
        futures = [ref.proxy().note(n) for n, ref in enumerate(refs)]
        pykka.get_all(futures, timeout=10)
        assert threading.active_count() == before  # no thread per actor
        facts = [ref.proxy().facts().get(timeout=5) for ref in refs[:50]]
        pool_threads = {t.ident for t in threading.enumerate() if t.name.startswith("test-pool-")}
        assert len(pool_threads) == 2
        for fact in facts:
            assert fact["threads"] <= pool_threads and fact["on"] in pool_threads
    finally:
        for ref in refs:
            ref.stop()


def test_a_busy_actor_lets_others_have_a_turn():
    pool = ActorPool(1, name="one-thread")
    log: list[str] = []
    blocker, _ = start(pool, "blocker", log)
    chatty, _ = start(pool, "chatty", log)
    quiet, _ = start(pool, "quiet", log)
    try:
        # Each actor's start-up runs on the pool thread too; once all three have
        # answered, none is still setting up while the messages below arrive.
        for ref in (blocker, chatty, quiet):
            ref.proxy().history().get(timeout=5)
        gate = threading.Event()
        blocker.proxy().wait_for.defer(gate)  # holds the only pool thread
        for n in range(SLICE * 3):
            chatty.proxy().note.defer(n)
        quiet.proxy().note.defer("q")
        gate.set()
        wait_until(lambda: len(log) == SLICE * 3 + 1, message="all handled")
        # chatty had its turn of SLICE messages, then went behind quiet.
        assert log.index("quiet") == SLICE
    finally:
        for ref in (blocker, chatty, quiet):
            ref.stop()
        pool.close()


def test_an_ask_that_raises_answers_the_caller_and_the_actor_lives_on(pool):
    ref = Recorder.start(pool)
    try:
        with pytest.raises(RuntimeError, match="told you"):
            ref.proxy().boom("told you").get(timeout=5)
        assert ref.is_alive()
        ref.proxy().note(1).get(timeout=5)
    finally:
        ref.stop()


def test_a_tell_that_raises_fails_the_actor_through_on_failure(pool):
    ref, actor = start(pool)
    ref.proxy().boom.defer("crash")
    wait_until(lambda: not ref.is_alive(), message="the actor died")
    assert actor.failures == ["crash"]


def test_stop_runs_on_stop_and_later_asks_fail_instead_of_hanging(pool):
    ref, actor = start(pool)
    proxy = ref.proxy()
    ref.stop()
    assert actor.stopped.is_set()
    with pytest.raises(pykka.ActorDeadError):
        proxy.note(1).get(timeout=5)


def test_mail_queued_behind_a_stop_is_answered_actor_dead():
    pool = ActorPool(1, name="one-thread")
    blocker, _ = start(pool, "blocker")
    ref, _ = start(pool)
    try:
        gate = threading.Event()
        proxy = ref.proxy()
        proxy.note(0).get(timeout=5)
        blocker.proxy().wait_for.defer(gate)  # the actor's mail waits for the thread
        first = proxy.note(1)
        stop = ref.stop(block=False)
        later = ref.ask(
            pykka.messages.ProxyCall(attr_path=("note",), args=(2,), kwargs={}), block=False
        )
        gate.set()
        first.get(timeout=5)
        stop.get(timeout=5)
        with pytest.raises(pykka.ActorDeadError):
            later.get(timeout=5)
    finally:
        blocker.stop()
        pool.close()
