"""``GatedActor``: a Pykka actor behind an ``ActorGate``.

The gate's rules (``orch/runtime/gate.py``) need every message from the inbox handled
under the gate's lock and marked finished before the lock is let go, and the gate
opened only once ``on_start`` has run. Both are Pykka hooks, overridden here so that
an actor only subclasses this and marks its gate-safe messages (``gate_safe``).
"""

from __future__ import annotations

from typing import Any

import pykka

from orch.runtime.gate import ActorGate


class GatedActor(pykka.ThreadingActor):
    """An actor whose ``gate_safe`` messages may run in a caller's thread while it is idle.

    ``gate`` is the one its callers hold (created here if not given); the actor uses
    it as ``self._gate``. Combine with ``PooledActor`` as ``class A(GatedActor,
    PooledActor)``.
    """

    def __init__(self, *args: Any, gate: ActorGate | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._gate = gate if gate is not None else ActorGate()

    def _actor_loop_setup(self) -> None:
        # ``on_start`` under the lock: no direct call may run before the actor is set up.
        with self._gate.lock:
            super()._actor_loop_setup()
            if not self.actor_stopped.is_set():
                self._gate.attach(self)

    def _handle_receive(self, message: Any) -> Any:
        return self._gate.receive(self, super()._handle_receive, message)
