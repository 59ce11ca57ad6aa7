"""``orch/runtime/gate.py`` and ``actor.py``: only a message declared gate-safe runs in
the caller's thread, only while its actor is idle, and messages keep their order."""

from __future__ import annotations

import functools
import queue
import threading
from collections.abc import Iterator
from typing import Any

import pykka
import pytest

from orch.runtime import (
    ActorGate,
    ActorHandle,
    ActorPool,
    Calls,
    GatedActor,
    PooledActor,
    gate_safe,
    gate_safe_messages,
)
from tests.conftest import wait_until


class Recorder(GatedActor):
    """Notes each message it handles with the thread it ran on."""

    def __init__(self, made: list[Recorder], gate: ActorGate | None = None) -> None:
        super().__init__(gate=gate)
        made.append(self)
        self.log: list[tuple[str, Any, int]] = []
        self.failures: list[BaseException] = []

    def on_failure(self, exception_type: Any, exception_value: Any, traceback: Any) -> None:
        self.failures.append(exception_value)

    @gate_safe
    def declared(self, value: Any) -> Any:
        self.log.append(("declared", value, threading.get_ident()))
        return value

    def undeclared(self, value: Any) -> Any:
        self.log.append(("undeclared", value, threading.get_ident()))
        return value

    def hold(self, entered: threading.Event, release: threading.Event) -> None:
        entered.set()
        release.wait(10)

    def history(self) -> list[tuple[str, Any, int]]:
        return list(self.log)

    @gate_safe
    def boom(self) -> None:
        raise ValueError("raised in the caller's thread")


@pytest.fixture
def recorder() -> Iterator[tuple[Any, ActorGate, Recorder]]:
    gate = ActorGate()
    made: list[Recorder] = []
    ref = Recorder.start(made, gate=gate)
    proxy = ref.proxy()
    proxy.history().get(timeout=5)  # started: the gate is open
    yield proxy, gate, made[0]
    ref.stop()


CALLS = Calls(5.0, on_write_failed=lambda: None)


def test_an_undeclared_message_never_runs_in_the_callers_thread(recorder):
    proxy, gate, _ = recorder
    here = threading.get_ident()
    assert gate.try_call("undeclared", 0) == (False, None)  # idle, yet declined
    assert CALLS.call(ActorHandle(proxy, gate), "undeclared", 1) == 1
    gate.tell(proxy, "undeclared", 2)
    log = proxy.history().get(timeout=5)
    assert [(m, v) for m, v, _ in log] == [("undeclared", 1), ("undeclared", 2)]
    assert here not in {thread for _, _, thread in log}
    assert gate.direct_calls == 0


def test_a_declared_message_runs_in_the_callers_thread_while_the_actor_is_idle(recorder):
    proxy, gate, _ = recorder
    assert CALLS.call(ActorHandle(proxy, gate), "declared", 1) == 1
    gate.tell(proxy, "declared", 2)
    log = proxy.history().get(timeout=5)
    assert log == [("declared", 1, threading.get_ident()), ("declared", 2, threading.get_ident())]
    assert gate.direct_calls == 2


def test_a_declared_message_goes_through_the_inbox_while_the_actor_is_busy(recorder):
    proxy, gate, _ = recorder
    entered, release = threading.Event(), threading.Event()
    proxy.hold.defer(entered, release)
    assert entered.wait(5)
    proxy.undeclared.defer(1)  # sent before the declared ones: handled before them
    gate.tell(proxy, "declared", 2)  # the actor is busy: queued, not run here
    asked = proxy.declared(3)
    release.set()
    assert asked.get(timeout=5) == 3
    assert CALLS.call(ActorHandle(proxy, gate), "declared", 4) == 4
    log = proxy.history().get(timeout=5)
    assert [(m, v) for m, v, _ in log] == [
        ("undeclared", 1),
        ("declared", 2),
        ("declared", 3),
        ("declared", 4),
    ]
    actor_thread = log[0][2]
    assert {thread for _, _, thread in log[:3]} == {actor_thread} != threading.get_ident()


def test_a_gated_tell_that_raises_fails_the_actor_with_its_error(recorder):
    proxy, gate, actor = recorder
    gate.tell(proxy, "boom")
    wait_until(lambda: actor.actor_stopped.is_set(), message="the actor failed")
    assert [str(e) for e in actor.failures] == ["raised in the caller's thread"]
    assert isinstance(actor.failures[0], ValueError)
    with pytest.raises(pykka.ActorDeadError):
        gate.tell(proxy, "declared", 1)


def test_a_gated_call_that_raises_raises_in_the_caller_and_the_actor_lives_on(recorder):
    proxy, gate, actor = recorder
    with pytest.raises(ValueError, match="caller's thread"):
        CALLS.call(ActorHandle(proxy, gate), "boom")
    assert proxy.declared(1).get(timeout=5) == 1 and actor.failures == []


class SlowStart(GatedActor):
    def __init__(self, release: threading.Event, gate: ActorGate | None = None) -> None:
        super().__init__(gate=gate)
        self.release = release

    def on_start(self) -> None:
        self.release.wait(10)

    @gate_safe
    def ping(self) -> str:
        return "pong"


def test_nothing_runs_through_the_gate_before_on_start_has_run():
    release = threading.Event()
    gate = ActorGate()
    ref = SlowStart.start(release, gate)
    try:
        assert gate.try_call("ping") == (False, None)
        release.set()
        assert ref.proxy().ping().get(timeout=5) == "pong"
        wait_until(lambda: not ref.actor_inbox.unfinished_tasks, message="idle")
        assert gate.try_call("ping") == (True, "pong")
    finally:
        release.set()
        ref.stop()


class PooledRecorder(GatedActor, PooledActor):
    def __init__(self, pool: ActorPool, gate: ActorGate) -> None:
        super().__init__(pool, gate=gate)
        self.threads: list[int] = []

    @gate_safe
    def declared(self) -> int:
        self.threads.append(threading.get_ident())
        return len(self.threads)

    def threads_seen(self) -> list[int]:
        return list(self.threads)


def test_a_pooled_actor_behind_a_gate_runs_declared_messages_here_and_mail_on_the_pool():
    pool = ActorPool(1, name="gated-pool")
    gate = ActorGate()
    ref = PooledRecorder.start(pool, gate)
    try:
        proxy = ref.proxy()
        assert proxy.declared().get(timeout=5) == 1  # asked: handled on the pool thread
        assert CALLS.call(ActorHandle(proxy, gate), "declared") == 2
        pool_thread, here = proxy.threads_seen().get(timeout=5)
        assert here == threading.get_ident() != pool_thread
    finally:
        ref.stop()
        pool.close()


class _StubActor:
    """Just what the gate looks at: an inbox and a stopped flag."""

    def __init__(self) -> None:
        self.actor_inbox: queue.Queue[Any] = queue.Queue()
        self.actor_stopped = threading.Event()
        self.calls = 0

    @gate_safe
    def ping(self) -> str:
        self.calls += 1
        return "pong"

    def unsafe_ping(self) -> str:
        self.calls += 1
        return "pong"


def _open_gate(actor: _StubActor) -> ActorGate:
    gate = ActorGate()
    gate.attach(actor)
    return gate


def test_gate_runs_only_when_the_inbox_has_nothing_unfinished():
    actor = _StubActor()
    gate = _open_gate(actor)
    assert gate.try_call("ping") == (True, "pong")
    actor.actor_inbox.put("an earlier message")  # sent before the call, not yet handled
    assert gate.try_call("ping") == (False, None)
    actor.actor_inbox.get()  # taken by the actor but still being handled
    assert gate.try_call("ping") == (False, None)
    actor.actor_inbox.task_done()  # handled
    assert gate.try_call("ping") == (True, "pong")
    assert gate.try_call("unsafe_ping") == (False, None)
    assert actor.calls == 2 and gate.direct_calls == 2


def test_gate_declines_while_the_actor_is_busy_closed_or_stopped():
    actor = _StubActor()
    gate = _open_gate(actor)
    with gate.lock:  # the actor is handling a message
        assert gate.try_call("ping") == (False, None)
    gate.open = False  # a message raised: its fate is not settled yet
    assert gate.try_call("ping") == (False, None)
    gate.open = True
    actor.actor_stopped.set()
    assert gate.try_call("ping") == (False, None)
    assert ActorGate().try_call("ping") == (False, None)  # actor not started yet
    assert actor.calls == 0


def _wrapped(method: Any) -> Any:
    @functools.wraps(method)
    def wrapper(self: Any, *args: Any) -> Any:
        return method(self, *args)

    return wrapper


def test_gate_safety_is_read_from_the_definition_once_per_class():
    class Base(_StubActor):
        @gate_safe
        @_wrapped  # a decorator that keeps the function's attributes keeps the mark
        def wrapped(self) -> str:
            return "wrapped"

        @gate_safe
        def overridden(self) -> str:
            return "base"

    class Child(Base):
        def overridden(self) -> str:  # not declared where it is defined: not gate-safe
            return "child"

    assert gate_safe_messages(Base) == {"ping", "wrapped", "overridden"}
    assert gate_safe_messages(Child) == {"ping", "wrapped"}
    assert gate_safe_messages(Child) is gate_safe_messages(Child)
    assert gate_safe_messages(Recorder) == {"declared", "boom"}
