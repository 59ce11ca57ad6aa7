"""``ActorGate``: a caller runs an actor's message in its own thread when the actor is idle.

Why: an actor ask is two wake-ups of cold threads and two condition variables, and on
the hot paths (a heartbeat, a task submitted or completed over HTTP) that hand-off
cost more CPU than the message itself (bench/README.md). DESIGN.md has every message
go through the actor's inbox; a gate keeps what that buys — one message at a time, in
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

A direct call has no ask timeout (an ask's is what turns a stuck actor into a 503).
Only messages that never wait without a bound go through a gate: they queue their
store writes (the caller then waits for the commit, as after an ask) and ask other
actors with the ask timeout. A registration is not one of them (a test's store that
blocks in ``register_agent_nowait`` must still give a 503), and a Supervisor gate
measured no faster anyway.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any


class ActorGate:
    """The lock an actor handles its messages under, and the way round its inbox."""

    __slots__ = ("_actor", "direct_calls", "lock", "open")

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.open = False  # set once the actor has started; cleared when a message raised
        self.direct_calls = 0  # how often the hand-off was saved (tests, profiling)
        self._actor: Any = None

    def attach(self, actor: Any) -> None:
        """Open the gate onto ``actor``; called by the actor, holding ``lock``, once started."""
        self._actor = actor
        self.open = True

    def try_call(self, method: str, *args: Any) -> tuple[bool, Any]:
        """``(True, answer)`` if run here and now, ``(False, None)`` if the caller must ask.

        The method's exceptions propagate, as they would from an ask.
        """
        if not self.lock.acquire(blocking=False):
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

    def receive(self, actor: Any, handle: Callable[[Any], Any], message: Any) -> Any:
        """Handle one message from the inbox as the gate requires (an actor's
        ``_handle_receive`` calls this with Pykka's own)."""
        with self.lock:
            try:
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
