"""``ActorGate``: a caller runs an actor's message in its own thread when the actor is idle.

Why: an actor ask is two wake-ups of cold threads and two condition variables, and on
the hot paths (a heartbeat, a task submitted or completed over HTTP) that hand-off
cost more CPU than the message itself (bench/README.md). Plain Pykka sends every
message through the actor's inbox; a gate keeps what that buys — one message at a time, in
the order sent — without the hand-off in the common case:

* the actor handles every message while holding ``lock`` and marks it finished in
  its inbox (``task_done``) before letting go of it (``receive``);
* ``try_call`` runs the method only while holding ``lock`` *and* seeing no
  unfinished message in the inbox. Anything sent to the actor before the call has
  therefore been handled first, exactly as if the call had queued behind it.
  Otherwise (the actor is busy, has mail, is starting, stopping or has failed) it
  declines and the caller asks as usual.

``try_call`` never waits for the lock, so a direct call cannot deadlock with the actor
or with another gate: whoever finds a gate taken falls back to the inbox.

Which messages may run through a gate is said where they are defined (``gate_safe``),
never by the caller: a caller names any message, and one not declared goes through the
inbox as it would without a gate.
"""

from __future__ import annotations

import functools
import logging
import threading
from collections.abc import Callable
from typing import Any, TypeVar

from orch.runtime.proxy import messages_of

logger = logging.getLogger("orch.gate")

Method = TypeVar("Method", bound=Callable[..., Any])

_GATE_SAFE = "_orch_gate_safe"


def gate_safe(method: Method) -> Method:
    """Declare that ``method`` may run in a caller's thread through the actor's gate.

    A direct call has no ask timeout (an ask's is what turns a stuck actor into a
    503), and it runs while the caller holds whatever it holds, perhaps another
    actor's gate. So a gate-safe message promises:

    * it never waits without a bound: its own asks use the ask timeout, and it
      waits on nothing else but the store's commits. It queues the writes of its
      common case (``*_nowait``, the answer ``Durable``), so that the caller waits
      for the commit, as after an ask; a rare transition may still store in place
      (an unhealthy agent's heartbeat, the end of a drain);
    * it never asks, nor waits on, the actor of whoever may call it through a gate
      (the Scheduler never asks an agent; an agent never asks the Scheduler back),
      so two gates held by two threads cannot wait on each other;
    * what it raises reaches the caller as an ask's error would, and a one-way
      message (``ActorGate.tell``) that raises crashes the actor as a tell would.

    A registration is not gate-safe: a store that blocks in ``register_agent_nowait``
    must still give a 503.
    """
    setattr(method, _GATE_SAFE, True)
    return method


@functools.cache
def gate_safe_messages(actor_class: type) -> frozenset[str]:
    """The messages of ``actor_class`` declared ``gate_safe``, resolved once per class."""
    return frozenset(
        name
        for name in messages_of(actor_class)
        if getattr(getattr(actor_class, name), _GATE_SAFE, False)
    )


class _Raise:
    """Makes the actor raise ``error``: a gated one-way message raised in a caller."""

    __slots__ = ("error",)

    def __init__(self, error: Exception) -> None:
        self.error = error


class ActorGate:
    """The lock an actor handles its messages under, and the way round its inbox."""

    __slots__ = ("_actor", "_safe", "direct_calls", "lock", "open")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.open = False  # set once the actor has started; cleared when a message raised
        self.direct_calls = 0  # how often the hand-off was saved (tests, profiling)
        self._actor: Any = None
        self._safe: frozenset[str] = frozenset()  # nothing runs here before ``attach``

    def attach(self, actor: Any) -> None:
        """Open the gate onto ``actor``; called by the actor, holding ``lock``, once started."""
        self._safe = gate_safe_messages(type(actor))
        self._actor = actor
        self.open = True

    def try_call(self, method: str, *args: Any) -> tuple[bool, Any]:
        """``(True, answer)`` if run here and now, ``(False, None)`` if the caller must ask.

        Only a ``gate_safe`` message runs here. The method's exceptions propagate, as
        they would from an ask.
        """
        if method not in self._safe or not self.lock.acquire(blocking=False):
            return False, None
        try:
            actor = self._actor
            if (
                actor is None
                or not self.open
                or actor.actor_stopped.is_set()
                or actor.actor_inbox.unfinished_tasks
            ):
                return False, None
            self.direct_calls += 1
            return True, getattr(actor, method)(*args)
        finally:
            self.lock.release()

    def tell(self, proxy: Any, method: str, *args: Any) -> None:
        """Send a one-way message: run here if the gate lets us, else queue it (``defer``).

        For senders that must not wait on the actor (the Scheduler, worker threads);
        ``proxy`` is the actor's, for the queued case. A message that raises when run
        here is what would have crashed the actor, so the actor is made to raise it
        (and fail, and be supervised) the same way. Raises ``pykka.ActorDeadError``
        like ``defer`` when the actor is gone.
        """
        try:
            ran, _ = self.try_call(method, *args)
        except Exception as exc:
            logger.exception("message %s failed in the caller's thread", method)
            self._actor.actor_ref.tell(_Raise(exc))
            return
        if not ran:
            getattr(proxy, method).defer(*args)

    def receive(self, actor: Any, handle: Callable[[Any], Any], message: Any) -> Any:
        """Handle one message from the inbox as the gate requires (an actor's
        ``_handle_receive`` calls this with Pykka's own)."""
        with self.lock:
            try:
                if message.__class__ is _Raise:
                    raise message.error
                answer = handle(message)
            except BaseException:
                # A raising tell kills the actor once this returns; close the gate now so
                # no direct call slips in between (an ask's error closes it until the
                # next message succeeds, which costs only speed).
                self.open = False
                raise
            else:
                self.open = True
                return answer
            finally:
                actor.actor_inbox.task_done()
