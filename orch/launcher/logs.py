"""Per-agent log files under ``--log-dir``, rotated, and ``launcher logs NAME-i [-f]``.

The launcher writes each agent process's output to ``<log-dir>/<agent id>.log``
through the standard library's ``RotatingFileHandler`` (size-based, with numbered
backups ``.log.1`` …), one handler per agent, the way supervisord keeps
``stdout_logfile`` per program. ``show`` prints a file and, with ``follow``, keeps
printing what is added, across rotations.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import re
import sys
import time
from typing import BinaryIO

DEFAULT_LOG_DIR = "launcher-logs"
_AGENT_ID = re.compile(r"^(?!\.+$)[A-Za-z0-9._:-]{1,128}$")


def log_path(log_dir: str, agent_id: str) -> str:
    """Where ``agent_id``'s output goes; the id is checked, so it cannot leave the dir."""
    if not _AGENT_ID.match(agent_id):
        raise ValueError(f"not an agent id: {agent_id!r}")
    return os.path.join(log_dir, f"{agent_id}.log")


class AgentLog:
    """One agent's rotated log file; its output is written here line by line."""

    def __init__(self, log_dir: str, agent_id: str, max_bytes: int, backups: int) -> None:
        os.makedirs(log_dir, exist_ok=True)
        self.path = log_path(log_dir, agent_id)
        self._handler = logging.handlers.RotatingFileHandler(
            self.path, maxBytes=max_bytes, backupCount=backups, encoding="utf-8", delay=True
        )
        self._handler.setFormatter(logging.Formatter("%(message)s"))
        self._handler.terminator = ""

    def write(self, line: bytes) -> None:
        """Append one line of the process's output (bytes that are not UTF-8 are escaped)."""
        text = line.decode("utf-8", errors="backslashreplace")
        if not text.endswith("\n"):
            text += "\n"
        self._handler.handle(logging.makeLogRecord({"msg": text, "levelno": logging.INFO}))

    def note(self, message: str) -> None:
        """A line from the launcher itself (launched, exited, stopped) among the output."""
        stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime())
        self.write(f"[launcher {stamp}Z] {message}\n".encode())

    def close(self) -> None:
        """Flush and close the file."""
        self._handler.close()


def show(
    log_dir: str,
    agent_id: str,
    *,
    follow: bool = False,
    lines: int | None = None,
    out: BinaryIO | None = None,
    poll_s: float = 0.2,
) -> int:
    """Print the agent's log (its last ``lines``), then follow it; returns an exit status."""
    out = out or sys.stdout.buffer
    try:
        path = log_path(log_dir, agent_id)
    except ValueError as exc:
        print(f"june-orchestrator launcher logs: {exc}", file=sys.stderr)
        return 2
    try:
        file = open(path, "rb")  # noqa: SIM115 - kept open while following
    except FileNotFoundError:
        print(
            f"june-orchestrator launcher logs: no log for {agent_id!r} in {log_dir}",
            file=sys.stderr,
        )
        return 1
    try:
        content = file.read()
        if lines is not None:
            content = b"".join(content.splitlines(keepends=True)[-lines:]) if lines else b""
        out.write(content)
        out.flush()
        while follow:
            chunk = file.read()
            if chunk:
                out.write(chunk)
                out.flush()
                continue
            if _rotated(file, path):
                file.close()
                file = open(path, "rb")  # noqa: SIM115
                continue
            time.sleep(poll_s)
    except KeyboardInterrupt:
        pass
    finally:
        file.close()
    return 0


def _rotated(file: BinaryIO, path: str) -> bool:
    """The name now points at a new file (the handler rotated ours away)."""
    try:
        return os.stat(path).st_ino != os.fstat(file.fileno()).st_ino
    except FileNotFoundError:
        return False
