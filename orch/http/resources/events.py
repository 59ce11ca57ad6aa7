"""The event feed: a bounded long-poll, so a watcher need not hammer /stats."""

from __future__ import annotations

import falcon
import msgspec

from orch.errors import Unavailable
from orch.http.auth import Scope
from orch.http.media import send
from orch.http.resources.base import Resource
from orch.http.schemas import Id

MAX_EVENTS = 1000


class EventFeed(Resource):
    """``GET /events?after=&wait=&limit=&epoch=``.

    Waitress has few threads, so long waits (these polls and lock waits together) may
    park at most half of them; one more is refused with 503 and ``Retry-After`` rather
    than left to starve the other endpoints of threads.
    """

    scopes = {"GET": Scope.ADMIN}
    queries = {
        "GET": {
            # The controller holds seq numbers to 64 bits; the document says so (ST202).
            "after": {"type": "integer", "minimum": 0, "maximum": 2**63 - 1},
            # Its maximum is ORCH_EVENTS_MAX_WAIT_S, stated by build_document.
            "wait": {"type": "number", "minimum": 0},
            "limit": {"type": "integer", "minimum": 1, "maximum": MAX_EVENTS},
            # The numbering's name from an earlier answer: tells a restart (orch/events.py).
            "epoch": msgspec.json.schema(Id),
        }
    }

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Events with ``seq`` above ``after``, waiting up to ``wait`` s for the first."""
        after = req.get_param_as_int("after", min_value=0) or 0
        limit = req.get_param_as_int("limit", min_value=1, max_value=MAX_EVENTS) or MAX_EVENTS
        max_wait_s = self.orch.settings.events_max_wait_s
        wait_s = req.get_param_as_float("wait", min_value=0, max_value=max_wait_s) or 0.0
        epoch = req.get_param("epoch")
        if wait_s <= 0:
            send(resp, self.orch.events(after, limit=limit, epoch=epoch))
            return
        if not self.options["wait_slots"].acquire(blocking=False):
            raise Unavailable(
                "too many long-polls are waiting already; poll again shortly or without wait"
            )
        try:
            send(resp, self.orch.events(after, limit=limit, wait_s=wait_s, epoch=epoch))
        finally:
            self.options["wait_slots"].release()
