"""``LightProxy``: what a Pykka proxy offers, for actors there are thousands of.

``proxy.method(...)`` asks and returns a future, ``proxy.method.defer(...)`` tells,
as with ``ActorRef.proxy()``. Pykka builds each ``ActorProxy`` by introspecting every
attribute of the actor, which cost more than the rest of an agent's registration
(bench/README.md), and every agent needs one. The messages sent are Pykka's own
``ProxyCall``, so the actor handles them exactly as a proxy's; only the actor's
messages (``messages_of``) can be named, ``AttributeError`` otherwise, as with a proxy.

Type checkers see a light proxy through the actor's typed proxy class (``pykka.typing``,
``orch/actors/proxies.py``), as they see a Pykka proxy; ``message`` types each message
there.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, Concatenate, Generic, ParamSpec, Protocol, TypeVar, cast

import pykka
from pykka.messages import ProxyCall

P = ParamSpec("P")
T = TypeVar("T")


class MessageCall(Protocol, Generic[P, T]):
    """A message as a proxy offers it: called, it asks; ``defer`` tells."""

    def __call__(self, *args: P.args, **kwargs: P.kwargs) -> pykka.Future[T]: ...

    def defer(self, *args: P.args, **kwargs: P.kwargs) -> None: ...


class Message(Protocol, Generic[P, T]):
    """A message on a typed proxy class: read from a proxy, a ``MessageCall``."""

    def __get__(self, instance: Any, owner: type | None = None) -> MessageCall[P, T]: ...


def message(method: Callable[Concatenate[Any, P], T]) -> Message[P, T]:
    """Type an actor's message on its typed proxy class.

    ``pykka.typing.proxy_method`` types the ask only, and our actors tell each other
    (``defer``) as much as they ask; this types both. Only for type checkers: the
    method itself is returned.
    """
    return cast("Message[P, T]", method)


@functools.cache
def messages_of(actor_class: type) -> frozenset[str]:
    """The messages an actor class accepts: its public methods, not Pykka's or the runtime's."""
    inherited = {
        name
        for base in actor_class.__mro__
        if base.__module__.startswith(("pykka", "orch.runtime"))
        for name in vars(base)
    }
    return frozenset(
        name
        for name in dir(actor_class)
        if not name.startswith("_")
        and name not in inherited
        and callable(getattr(actor_class, name))
    )


class LightProxy:
    """A proxy for the actor behind ``actor_ref``; see the module docstring."""

    __slots__ = ("_messages", "actor_ref")

    def __init__(self, actor_ref: pykka.ActorRef[Any]) -> None:
        self.actor_ref = actor_ref
        self._messages = messages_of(actor_ref.actor_class)

    def __getattr__(self, name: str) -> _ProxyMethod:
        if name not in self._messages:
            raise AttributeError(f"{self.actor_ref.actor_class.__name__} has no message {name!r}")
        return _ProxyMethod(self.actor_ref, (name,))

    def __repr__(self) -> str:
        return f"LightProxy({self.actor_ref!r})"


class _ProxyMethod:
    __slots__ = ("_path", "_ref")

    def __init__(self, ref: pykka.ActorRef[Any], path: tuple[str]) -> None:
        self._ref = ref
        self._path = path

    def __call__(self, *args: Any, **kwargs: Any) -> pykka.Future[Any]:
        return self._ref.ask(ProxyCall(attr_path=self._path, args=args, kwargs=kwargs), block=False)

    def defer(self, *args: Any, **kwargs: Any) -> None:
        self._ref.tell(ProxyCall(attr_path=self._path, args=args, kwargs=kwargs))
