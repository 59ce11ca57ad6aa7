"""Pykka actors that share a few threads instead of having one each.

Why: a ``ThreadingActor`` is a thread, and a fleet of 10,000 agents was 10,000 threads.
Even idle, blocked on their inboxes, they slowed the whole process: every actor round
trip and assignment at 10,000 agents ran at a fraction of their rate at 100
(bench/README.md).
Starting a thread per registration was also a good part of registering a fleet.

A ``PooledActor`` is still a Pykka actor: the same ``ActorRef``, ``tell``/``ask``,
futures, ``on_start``/``on_stop``/``on_failure`` and ``ActorRegistry`` entry, one
message at a time in the order sent. Only the thread differs: when mail arrives, the
actor is queued on its ``ActorPool``, and a pool thread handles its messages (at most
``SLICE`` before letting other actors have a turn), then lets it go. An actor is never
on two pool threads at once.

Deviation from Pykka: a ``BaseException`` escaping a message makes Pykka stop every
actor in the process; here it fails this actor like any other exception (its
``on_failure`` runs, so the Supervisor restarts it), because a pool thread must not
be lost and one Orchestrator must never stop another's actors (tests run many in
one process). And a failure that is an ``orch.errors.LoggedFailure`` (an in-process
agent's crash, whose cause the runner logged with the user's traceback) stops the
actor without Pykka's "Unhandled exception" traceback of our own frames.
"""

from __future__ import annotations

import collections
import logging
import queue
import sys
import threading
import time
from typing import Any

import pykka

from orch.errors import LoggedFailure

logger = logging.getLogger("orch.pool")
pykka_logger = logging.getLogger("pykka")

#: Messages one actor handles before the pool thread turns to the next actor.
SLICE = 32


class ActorPool:
    """A fixed set of threads running ``PooledActor`` messages; owned by one Supervisor."""

    def __init__(self, threads: int, name: str = "orch-agents") -> None:
        if threads < 1:
            raise ValueError("an actor pool needs at least one thread")
        self._ready: queue.SimpleQueue[PooledActor | None] = queue.SimpleQueue()
        self._threads = [
            threading.Thread(target=self._work, name=f"{name}-{n}", daemon=True)
            for n in range(threads)
        ]
        for thread in self._threads:
            thread.start()

    def schedule(self, actor: PooledActor) -> None:
        """Give ``actor`` a turn on a pool thread (it asks, never anyone else)."""
        self._ready.put(actor)

    def close(self, timeout_s: float = 5.0) -> None:
        """Let the threads finish what is queued, then end them (waiting ``timeout_s`` in all)."""
        for _ in self._threads:
            self._ready.put(None)
        deadline = time.monotonic() + timeout_s
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(max(0.0, deadline - time.monotonic()))

    def _work(self) -> None:
        while (actor := self._ready.get()) is not None:
            try:
                actor._run_slice()
            except BaseException:  # never lose a pool thread; the actor logged its own
                logger.exception("pooled actor %s failed outside a message", actor)


class _Inbox:
    """A Pykka inbox that wakes its actor when mail arrives.

    The part of ``queue.Queue`` that Pykka and the gate use (``put``, ``get``,
    ``get_nowait``, ``empty``, ``qsize``, ``task_done``, ``unfinished_tasks``), on a
    deque and one lock: no thread ever blocks waiting on a pooled actor's inbox, so
    the three Conditions a Queue builds are not needed, and building them was a
    measurable part of registering an agent (bench/README.md).
    """

    __slots__ = ("_actor", "_items", "_lock", "unfinished_tasks")

    def __init__(self, actor: PooledActor) -> None:
        self._actor = actor
        self._items: collections.deque[Any] = collections.deque()
        self._lock = threading.Lock()
        self.unfinished_tasks = 0  # put and not yet marked done, as in queue.Queue

    def put(self, item: Any, block: bool = True, timeout: float | None = None) -> None:
        with self._lock:
            self._items.append(item)
            self.unfinished_tasks += 1
        self._actor._wake()

    def get_nowait(self) -> Any:
        try:
            return self._items.popleft()
        except IndexError:
            raise queue.Empty from None

    def get(self, block: bool = True, timeout: float | None = None) -> Any:
        # Only ever called after ``empty()`` said no (Pykka's teardown): never waits.
        return self.get_nowait()

    def empty(self) -> bool:
        return not self._items

    def qsize(self) -> int:
        return len(self._items)

    def task_done(self) -> None:
        with self._lock:
            self.unfinished_tasks -= 1


class PooledActor(pykka.ThreadingActor):
    """A Pykka actor whose messages run on an ``ActorPool`` instead of its own thread."""

    def __init__(self, pool: ActorPool) -> None:
        super().__init__()
        self._pool = pool
        self._turn_lock = threading.Lock()
        self._scheduled = False  # queued on, or running on, a pool thread
        self._loop_started = False
        self._set_up = False

    def _create_actor_inbox(self) -> Any:
        return _Inbox(self)

    def _start_actor_loop(self) -> None:
        with self._turn_lock:
            self._loop_started = True
        self._wake()  # on_start runs on a pool thread, before any message

    def _wake(self) -> None:
        with self._turn_lock:
            if self._scheduled or not self._loop_started:
                return
            self._scheduled = True
        self._pool.schedule(self)

    def _run_slice(self) -> None:
        """Handle up to ``SLICE`` messages on the calling pool thread, then yield it."""
        if not self._set_up:
            self._set_up = True
            self._actor_loop_setup()
        inbox = self.actor_inbox
        for _ in range(SLICE):
            if self.actor_stopped.is_set():
                break
            try:
                envelope = inbox.get_nowait()
            except queue.Empty:
                break
            self._handle_envelope(envelope)
        if self.actor_stopped.is_set():
            # Anything that came in after the stop is answered ActorDeadError; a later
            # arrival wakes the actor again for the same, so no ask waits for ever.
            self._actor_loop_teardown()
        with self._turn_lock:
            # Under the lock a put either is seen here or wakes the actor after this.
            if inbox.empty():
                self._scheduled = False
                return
        self._pool.schedule(self)

    def _handle_failure(self, exception_type: Any, exception_value: Any, traceback: Any) -> None:
        if isinstance(exception_value, LoggedFailure):
            # Pykka's own, without its log line: the cause was logged where it happened
            # (an in-process agent's runner logs the user's traceback), and Pykka's
            # would show only our frames.
            pykka.ActorRegistry.unregister(self.actor_ref)
            self.actor_stopped.set()
            return
        super()._handle_failure(exception_type, exception_value, traceback)

    def _handle_envelope(self, envelope: Any) -> None:
        # Pykka's ``_actor_loop_running`` for one envelope, but see the module docstring
        # on BaseException.
        try:
            response = self._handle_receive(envelope.message)
            if envelope.reply_to is not None:
                envelope.reply_to.set(response)
        except BaseException:
            if envelope.reply_to is not None:
                pykka_logger.info(
                    "Exception returned from %s to caller:", self, exc_info=sys.exc_info()
                )
                envelope.reply_to.set_exception()
            else:
                self._handle_failure(*sys.exc_info())
                try:
                    self.on_failure(*sys.exc_info())
                except Exception:
                    self._handle_failure(*sys.exc_info())
