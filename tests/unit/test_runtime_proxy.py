"""``orch/runtime/proxy.py``: a light proxy sends Pykka's own messages, and only messages."""

from __future__ import annotations

from typing import Any

import pykka
import pytest

from orch.runtime import GatedActor, LightProxy, messages_of


class Counter(GatedActor):
    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def add(self, n: int = 1) -> int:
        self.count += n
        return self.count

    def _private(self) -> None:
        pass


def test_a_light_proxy_asks_and_tells_as_a_pykka_proxy_does():
    ref = Counter.start()
    try:
        proxy = LightProxy(ref)
        future = proxy.add(2)
        assert isinstance(future, pykka.Future) and future.get(timeout=5) == 2
        proxy.add.defer(n=3)
        assert proxy.add(0).get(timeout=5) == 5
        assert ref.proxy().add(0).get(timeout=5) == 5  # the same messages as Pykka's proxy
    finally:
        ref.stop()


@pytest.mark.parametrize("name", ["no_such_message", "_private", "count", "on_start", "stop"])
def test_a_light_proxy_names_only_the_actors_messages(name: str):
    ref = Counter.start()
    try:
        with pytest.raises(AttributeError, match=repr(name)):
            getattr(LightProxy(ref), name)
    finally:
        ref.stop()


def test_the_messages_of_an_actor_are_its_own_public_methods():
    class Child(Counter):
        def reset(self) -> None:
            self.count = 0

    assert messages_of(Counter) == {"add"}
    assert messages_of(Child) == {"add", "reset"}


def test_a_light_proxy_to_a_stopped_actor_raises_actor_dead():
    ref = Counter.start()
    ref.stop()
    proxy: Any = LightProxy(ref)
    with pytest.raises(pykka.ActorDeadError):
        proxy.add.defer()
    with pytest.raises(pykka.ActorDeadError):
        proxy.add().get(timeout=5)
