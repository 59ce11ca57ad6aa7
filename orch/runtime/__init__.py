"""The one seam for how an actor call travels (see docs/architecture.md, "Fast paths").

Everything that changes how a message reaches an actor lives here; the rest of the
code reads as plain Pykka actors.
"""

from orch.runtime.calls import ActorHandle, Calls

__all__ = ["ActorHandle", "Calls"]
