"""What every resource shares: the facade it calls and its declared scopes."""

from __future__ import annotations

from enum import Enum
from typing import Any, ClassVar, TypeVar

import falcon
import msgspec

from orch.http.auth import Scope
from orch.http.schemas import Id
from orch.model import AgentState, TaskState
from orch.store.base import PendingWrite
from orch.system import Orchestrator
from orch.validation import parse_enum

#: Listings return at most this many rows in one answer.
MAX_LIMIT = 100_000
LIMIT = {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT}
ID = msgspec.json.schema(Id)
AGENT_STATE = {"type": "string", "enum": [state.value for state in AgentState]}
TASK_STATE = {"type": "string", "enum": [state.value for state in TaskState]}

S = TypeVar("S", bound=Enum)

#: The WSGI environ key under which the HTTP loop passes the list that collects the
#: writes behind an answer it holds until they commit (``orch/http/waitress_adapter.py``).
ANSWER_WRITES = "orch.answer_writes"


def answer_writes(req: falcon.Request) -> list[PendingWrite] | None:
    """The list collecting this request's answer writes, if the loop holds its answer.

    ``None`` (every worker thread, every embedded call): the facade waits for the
    commit before answering. A list: the request runs on the HTTP loop, which sends
    the answer only once every write collected there is durable.
    """
    return req.env.get(ANSWER_WRITES)


def status_param(req: falcon.Request, states: type[S]) -> S | None:
    """The ``status`` query parameter as a state; ``Invalid`` names ``status``, as sent.

    The controllers call this filter ``state`` and would name that field; a client of
    the REST API sent ``status``.
    """
    value = req.get_param("status")
    return None if value is None else parse_enum(states, "status", value)


class Resource:
    """A Falcon resource bound to one Orchestrator.

    ``scopes`` says who may call each method (see ``orch.http.auth``); ``bodies``
    names the Struct that validates each method's body and ``queries`` the JSON Schema
    of each query parameter, both documented (and so fuzzed) by /openapi.json.
    """

    scopes: ClassVar[dict[str, Scope]] = {}
    bodies: ClassVar[dict[str, type[msgspec.Struct]]] = {}
    queries: ClassVar[dict[str, dict[str, dict[str, Any]]]] = {}
    answers: ClassVar[dict[str, tuple[int, ...]]] = {}

    def __init__(self, orch: Orchestrator, **options: Any) -> None:
        self.orch = orch
        self.options = options
