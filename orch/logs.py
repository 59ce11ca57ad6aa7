"""Logging set-up for the service: stdlib logging, as text or one JSON object a line.

Lifecycle events are logged from the event feed (one seam, as for metrics) with the
agent and task ids as structured fields: agent changes at INFO, the per-task flow at
DEBUG, so a busy orchestrator's INFO log stays readable. Nothing is logged per
heartbeat at INFO.
"""

from __future__ import annotations

import json
import logging
import re
import sys
from datetime import UTC, datetime
from typing import Any

from orch.events import Event

IDS = ("agent_id", "task_id", "resource")

INFO_EVENTS = frozenset(
    {
        "agent.registered",
        "agent.started",
        "agent.stopped",
        "agent.deregistered",
        "agent.unhealthy",
        "agent.recovered",
        "agent.lost",
        "agent.crashed",
        "agent.restarted",
        "agent.failed",
        "task.dead",
        "lock.expired",
        "scheduler.rebuilt",
        "tasks.pruned",
    }
)

events_logger = logging.getLogger("orch.events")


class JsonFormatter(logging.Formatter):
    """``{"timestamp", "level", "logger", "message", ...ids}`` on one line."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "timestamp": datetime.fromtimestamp(record.created, UTC).isoformat(
                timespec="milliseconds"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for name in (*IDS, "event"):
            value = getattr(record, name, None)
            if value is not None:
                out[name] = value
        if record.exc_info:
            out["exception"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


_CONTROL_CHARACTERS = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]")


def escape_controls(text: str) -> str:
    """``text`` with control characters (newlines too) written as ``\\xNN`` escapes."""
    return _CONTROL_CHARACTERS.sub(lambda m: f"\\x{ord(m.group()):02x}", text)


class TextFormatter(logging.Formatter):
    """One record, one line: a client-supplied newline cannot forge a log line.

    Messages carry text callers chose (paths in the access log, agents' error
    strings in events), so control characters in the message are escaped; the
    traceback of an exception, written by us, keeps its lines.
    """

    def formatMessage(self, record: logging.LogRecord) -> str:
        record.message = escape_controls(record.message)
        return super().formatMessage(record)


def configure_logging(level: str, log_format: str = "text") -> None:
    """Root logging for the service process (the embedded API leaves logging alone)."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TextFormatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level)
    # Waitress warns about queue depth on every burst; that is load, not news.
    logging.getLogger("waitress.queue").setLevel(logging.ERROR)
    logging.getLogger("pykka").setLevel(logging.WARNING)


def log_event(event: Event) -> None:
    """An ``Events`` listener: the event as a log line with its ids as fields."""
    level = logging.INFO if event.type in INFO_EVENTS else logging.DEBUG
    if not events_logger.isEnabledFor(level):
        return
    details = " ".join(f"{k}={v}" for k, v in event.data.items() if v is not None)
    extra = {name: event.data[name] for name in IDS if event.data.get(name) is not None}
    events_logger.log(level, "%s %s", event.type, details, extra={"event": event.type, **extra})
