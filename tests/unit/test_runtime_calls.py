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
