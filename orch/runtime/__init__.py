"""The one seam for how an actor call travels (docs/architecture.md, "Fast paths").

Everything that changes how a message reaches an actor lives here, so the rest of the
code reads as plain Pykka actors: pooled actor threads (``pool``), the gate that lets
a caller run an idle actor's message in its own thread (``gate``, ``actor``), light
proxies (``proxy``) and the one call path from a controller to an actor (``calls``).
Only this package overrides Pykka's private hooks; ``tests/unit/test_runtime_pykka.py``
pins the Pykka versions they were checked against.
"""

from orch.runtime.actor import GatedActor
from orch.runtime.calls import ActorHandle, Calls
from orch.runtime.gate import ActorGate, gate_safe, gate_safe_messages
from orch.runtime.pool import ActorPool, PooledActor
from orch.runtime.proxy import LightProxy, message, messages_of

__all__ = [
    "ActorGate",
    "ActorHandle",
    "ActorPool",
    "Calls",
    "GatedActor",
    "LightProxy",
    "PooledActor",
    "gate_safe",
    "gate_safe_messages",
    "message",
    "messages_of",
]
