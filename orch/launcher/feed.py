"""The launcher's own connection: the event feed, long-polled, filtered to its agents.

An operator's ``stop`` or ``start`` is an ``agent.*`` event; the feed hands the ids
of the launcher's agents it sees to the control loop, which then reads the agent
and acts (``orch/launcher/control.py``), so a decision reaches the processes within
a long poll's answer. Whenever the feed (re)connects, or the server's numbering was
reset (it restarted), it asks for everything to be read again: decisions made while
the launcher could not listen are caught up from the agents themselves, not from a
stream that may have gaps.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

from orch.client import OrchestratorClient
from orch.errors import OrchestratorError

logger = logging.getLogger("orch.launcher")

#: What the feed hands over: an agent id and the event's type, or ``None`` for
#: "read every agent again" (connected, reconnected, or the server restarted).
Notice = tuple[str, str] | None


class EventFeed:
    """A thread following ``GET /events`` with its own client."""

    def __init__(
        self,
        client: OrchestratorClient,
        is_mine: Callable[[str], bool],
        notify: Callable[[Notice], None],
        *,
        wait_s: float = 10.0,
        backoff_max_s: float = 5.0,
    ) -> None:
        self._client = client
        self._is_mine = is_mine
        self._notify = notify
        self._wait_s = wait_s
        self._backoff_max_s = backoff_max_s
        self._halt = threading.Event()
        self._thread = threading.Thread(target=self._follow, name="launcher-feed", daemon=True)
        self.connected = False

    def start(self) -> None:
        """Start following."""
        self._thread.start()

    def stop(self) -> None:
        """Stop following (the long poll in flight ends within its wait)."""
        self._halt.set()
        self._client.close()
        self._thread.join(timeout=self._wait_s + self._client.timeout_s + 1)

    def _follow(self) -> None:
        after = 0
        epoch: str | None = None  # the numbering's name: another one is a restart
        backoff_s = 0.1
        while not self._halt.is_set():
            try:
                page = self._client.events(
                    after,
                    wait_s=self._wait_s if self.connected else 0.0,
                    limit=1000,
                    epoch=epoch,
                )
            except OrchestratorError as exc:
                if self._halt.is_set():
                    return
                if self.connected:
                    logger.warning("event feed lost: %s; reconnecting", exc.message)
                self.connected = False
                self._halt.wait(backoff_s)
                backoff_s = min(self._backoff_max_s, backoff_s * 2)
                continue
            except Exception:  # a bug must not end the feed silently
                logger.exception("event feed failed")
                self.connected = False
                self._halt.wait(backoff_s)
                continue
            backoff_s = 0.1
            if not self.connected or page.get("reset"):
                self.connected = True
                self._notify(None)
            for event in page.get("events", ()):
                agent_id = event.get("agent_id")
                kind = str(event.get("type", ""))
                if (
                    kind.startswith("agent.")
                    and isinstance(agent_id, str)
                    and self._is_mine(agent_id)
                ):
                    self._notify((agent_id, kind))
            after = int(page.get("next", after))
            epoch = page.get("epoch", epoch)
