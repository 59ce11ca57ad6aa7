"""``orch/runtime/calls.py``: one call path, the same answers and errors either way."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

from orch.errors import StoreError, Timeout, Unavailable
from orch.runtime import ActorGate, ActorHandle, Calls, GatedActor, gate_safe
from orch.store.base import Durable


class _Write:
    """A store write already ended, stored or not (the ``PendingWrite`` protocol)."""

    def __init__(self, stored: bool) -> None:
        self._stored = stored

    def wait(self) -> None:
        if not self._stored:
            raise StoreError("database or disk is full")

    def done(self) -> bool:
        return True

    def failed(self) -> bool:
        return not self._stored


class Answerer(GatedActor):
    @gate_safe
    def declared(self, value: Any, stored: bool | None = None) -> Any:
        return value if stored is None else Durable(value, (_Write(stored),))

    def undeclared(self, value: Any, stored: bool | None = None) -> Any:
        return self.declared(value, stored)

    def hold(self, entered: threading.Event, release: threading.Event) -> None:
        entered.set()
        release.wait(10)


@pytest.fixture
def handle() -> Iterator[ActorHandle]:
    gate = ActorGate()
    ref = Answerer.start(gate=gate)
    proxy = ref.proxy()
    proxy.declared(None).get(timeout=5)  # started: the gate is open
    yield ActorHandle(proxy, gate)
    ref.stop()


@pytest.fixture
def rebuilds() -> list[str]:
    return []


@pytest.fixture
def calls(rebuilds: list[str]) -> Calls:
    return Calls(5.0, on_write_failed=lambda: rebuilds.append("rebuild"))


@pytest.mark.parametrize("method", ["declared", "undeclared"])
def test_an_answer_is_given_once_its_writes_are_stored(calls, handle, rebuilds, method):
    assert calls.call(handle, method, 1) == 1
    assert calls.call(handle, method, 2, True) == 2
    assert calls.call(ActorHandle(handle.proxy), method, 3, True) == 3  # no gate: asked
    assert rebuilds == []


@pytest.mark.parametrize("method", ["declared", "undeclared"])
def test_a_write_that_failed_behind_an_answer_refuses_it_and_rebuilds(
    calls, handle, rebuilds, method
):
    with pytest.raises(StoreError, match="disk is full"):
        calls.call(handle, method, 1, False)
    assert rebuilds == ["rebuild"]
    with pytest.raises(StoreError):
        calls.ask_all([handle.proxy.undeclared(1), handle.proxy.undeclared(2, False)])
    assert rebuilds == ["rebuild", "rebuild"]


def test_an_actor_that_does_not_answer_in_time_is_a_timeout(handle, rebuilds):
    calls = Calls(0.05, on_write_failed=lambda: rebuilds.append("rebuild"))
    entered, release = threading.Event(), threading.Event()
    handle.proxy.hold.defer(entered, release)
    try:
        assert entered.wait(5)
        with pytest.raises(Timeout, match=r"0\.05s"):
            calls.call(handle, "declared", 1)  # busy: asked, and the ask times out
        with pytest.raises(Timeout):
            calls.ask(handle.proxy.undeclared(1))
    finally:
        release.set()


def test_a_stopped_actor_is_unavailable(calls, handle):
    handle.proxy.actor_ref.stop()
    with pytest.raises(Unavailable):
        calls.call(handle, "declared", 1)
    with pytest.raises(Unavailable):
        calls.call(handle, "undeclared", 1)


class _InFlight:
    """A store write still committing until ``end`` is called (``PendingWrite``)."""

    def __init__(self) -> None:
        self._ended = threading.Event()
        self._stored = True

    def end(self, stored: bool = True) -> None:
        self._stored = stored
        self._ended.set()

    def wait(self) -> None:
        assert self._ended.wait(10), "the write never ended"
        if not self._stored:
            raise StoreError("database or disk is full")

    def done(self) -> bool:
        return self._ended.is_set()

    def failed(self) -> bool:
        return self.done() and not self._stored


def test_a_durable_answer_is_given_only_once_stored_whoever_settles_it() -> None:
    """No thread-local or context changes what "stored" means: without a list to
    collect the writes into, settling waits for the commit, on any thread."""
    calls = Calls(5.0, lambda: None)
    write = _InFlight()
    answers: list[Any] = []
    settler = threading.Thread(target=lambda: answers.extend(calls.settle([Durable(7, (write,))])))
    settler.start()
    settler.join(0.2)
    assert settler.is_alive() and answers == [], "the answer was given before its commit"
    write.end()
    settler.join(5)
    assert answers == [7]


def test_a_caller_holding_the_answer_collects_the_writes_still_in_flight() -> None:
    calls = Calls(5.0, lambda: None)
    in_flight, stored = _InFlight(), _Write(stored=True)
    collected: list[Any] = []
    assert calls.settle([Durable("ok", (stored, in_flight)), 3], collected) == ["ok", 3]
    assert collected == [in_flight]  # the ended write is not handed on; nothing waited


def test_a_write_already_failed_refuses_the_answer_even_to_a_caller_holding_it() -> None:
    rebuilt: list[bool] = []
    calls = Calls(5.0, lambda: rebuilt.append(True))
    collected: list[Any] = []
    with pytest.raises(StoreError):
        calls.settle([Durable("ok", (_Write(stored=False),))], collected)
    assert rebuilt == [True] and collected == []
