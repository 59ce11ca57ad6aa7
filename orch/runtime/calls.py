"""``Calls``: the one call path from a controller to an actor.

A controller never waits on a Pykka future itself: it hands the future (or the
message's name and arguments, ``call``) to ``Calls``, which waits with the ask
timeout, maps Pykka's failures to the domain's errors and settles ``Durable``
answers (waits for the writes behind them) before giving the answer back.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pykka

from orch.errors import StoreError, Timeout, Unavailable
from orch.runtime.gate import ActorGate
from orch.store.base import Durable, PendingWrite


@dataclass(frozen=True, slots=True)
class ActorHandle:
    """How a controller reaches one actor: its proxy and, if it has one, its gate."""

    proxy: Any
    gate: ActorGate | None = None


class Calls:
    """Waits for actors' answers on behalf of the controllers."""

    def __init__(self, ask_timeout_s: float, on_write_failed: Callable[[], None]) -> None:
        self.ask_timeout_s = ask_timeout_s
        # Makes the actors rebuild from the store: an answer's write failed after the
        # change was applied in memory.
        self._on_write_failed = on_write_failed

    def call(
        self,
        handle: ActorHandle,
        method: str,
        *args: Any,
        answer_writes: list[PendingWrite] | None = None,
    ) -> Any:
        """``method``'s answer: run through the actor's gate if the message is declared
        ``gate_safe`` and the actor is idle, else asked through its inbox.

        Run here, the message's own tells and asks (the LockBroker's, for tasks with
        resources) fail in this thread, so Pykka's failures are mapped as for an ask,
        and its writes are settled as an ask's answer is.
        """
        gate = handle.gate
        if gate is not None:
            with self.errors():
                ran, answer = gate.try_call(method, *args)
            if ran:
                return self.settle([answer], answer_writes)[0]
        return self.ask(getattr(handle.proxy, method)(*args), answer_writes)

    def ask(
        self, future: pykka.Future[Any], answer_writes: list[PendingWrite] | None = None
    ) -> Any:
        """The answer behind ``future``, settled (see ``ask_all``)."""
        return self.ask_all([future], answer_writes)[0]

    def ask_all(
        self, futures: list[pykka.Future[Any]], answer_writes: list[PendingWrite] | None = None
    ) -> list[Any]:
        """Wait for actor answers, mapping Pykka's failures to the domain's errors."""
        with self.errors():
            answers = pykka.get_all(futures, timeout=self.ask_timeout_s)
        return self.settle(answers, answer_writes)

    @contextlib.contextmanager
    def errors(self) -> Iterator[None]:
        """Pykka's time-out and dead actor as the domain's ``Timeout`` and ``Unavailable``."""
        try:
            yield
        except pykka.Timeout:
            raise Timeout(f"the orchestrator did not answer within {self.ask_timeout_s}s") from None
        except pykka.ActorDeadError:
            raise Unavailable("the orchestrator is stopping or an actor has died") from None

    def settle(
        self, answers: list[Any], answer_writes: list[PendingWrite] | None = None
    ) -> list[Any]:
        """The answers, once the writes of any ``Durable`` among them are committed.

        Given ``answer_writes``, the writes still in flight are appended there instead
        of waited for (``Durable.result_holding``): the caller holds the answer back
        until they are durable. Every caller that does not is given stored answers.
        """
        try:
            if answer_writes is None:
                return [a.result() if isinstance(a, Durable) else a for a in answers]
            return [
                a.result_holding(answer_writes) if isinstance(a, Durable) else a for a in answers
            ]
        except StoreError:
            self._on_write_failed()
            raise
