"""What every resource shares: the facade it calls and its declared scopes."""

from __future__ import annotations

from typing import Any, ClassVar

import msgspec

from orch.http.auth import Scope
from orch.system import Orchestrator


class Resource:
    """A Falcon resource bound to one Orchestrator.

    ``scopes`` says who may call each method (see ``orch.http.auth``); ``bodies``
    names the Struct that validates each method's body, which /openapi.json documents.
    """

    scopes: ClassVar[dict[str, Scope]] = {}
    bodies: ClassVar[dict[str, type[msgspec.Struct]]] = {}
    answers: ClassVar[dict[str, tuple[int, ...]]] = {}

    def __init__(self, orch: Orchestrator, **options: Any) -> None:
        self.orch = orch
        self.options = options
