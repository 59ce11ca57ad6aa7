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
import threading
import time
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


class BatchingStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A stream handler that writes what was logged within ``interval_s`` as one write.

    Why: every agent registered and started logs a line at INFO, and each line was a
    ``write`` to stderr, giving up the GIL inside the handler's lock and waiting to
    win it back while other threads queued on that lock. Registering and starting
    3,000 agents over HTTP took 1.42-1.53 ms an agent with those lines and 1.24-1.32
    ms without them (alternated, bench/README.md). Here a record is formatted and
    kept; a thread writes what has gathered, at most ``interval_s`` later, in one
    call. A record at ``flush_level`` or above is written at once, with everything
    before it, so a warning is never held back; ``flush()`` and ``close()`` (logging
    calls them at exit) write what is left. What a ``kill -9`` can lose is the INFO
    and DEBUG lines of its last ``interval_s``.
    """

    def __init__(
        self,
        stream: Any = None,
        interval_s: float = 0.05,
        flush_level: int = logging.WARNING,
    ) -> None:
        super().__init__(stream)
        self.interval_s = interval_s
        self.flush_level = flush_level
        self._lines: list[str] = []
        self._gathered = threading.Event()  # set when a line waits to be written
        self._closed = False
        self._writer = threading.Thread(target=self._write_batches, name="orch-log-writer")
        self._writer.daemon = True
        self._writer.start()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record) + self.terminator
        except Exception:
            self.handleError(record)
            return
        self._lines.append(line)  # under self.lock: Handler.handle holds it
        if record.levelno >= self.flush_level or self._closed:
            self.flush()
        elif len(self._lines) == 1:
            self._gathered.set()

    def flush(self) -> None:
        with self.lock:
            lines, self._lines = self._lines, []
            if not lines:
                return
            try:
                self.stream.write("".join(lines))
                self.stream.flush()
            except Exception:  # as StreamHandler: a broken stream must not break callers
                self.handleError(logging.makeLogRecord({"msg": lines[0].rstrip()}))

    def close(self) -> None:
        self._closed = True
        self.flush()
        self._gathered.set()
        super().close()

    def _write_batches(self) -> None:
        while not self._closed:
            self._gathered.wait()
            time.sleep(self.interval_s)  # let a batch gather: the point of the handler
            self._gathered.clear()
            self.flush()


def configure_logging(level: str, log_format: str = "text") -> None:
    """Root logging for the service process (the embedded API leaves logging alone)."""
    handler = BatchingStreamHandler(sys.stderr)
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
