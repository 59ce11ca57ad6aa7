"""Settings, read once from the environment into a frozen dataclass.

Nothing else in the package reads ``os.environ``: the service builds ``Settings``
with ``Settings.from_env()`` at start-up and passes it down; the embedded API uses the
defaults unless given a ``Settings``. A bad value fails start-up with one line that
names the variable.
"""

from __future__ import annotations

import math
import os
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from orch import supervision

#: Where the service keeps its state unless ``ORCH_DB`` says otherwise.
SERVICE_DB = "orchestrator.db"
#: The collector thresholds the service applies (orch/gc_tuning.py says why).
SERVICE_GC_THRESHOLDS = (700, 10, 100)


#: How to turn off each optional service the server checks (said in its warnings).
OFF_SWITCHES = {
    "todo_service": "to turn off the TODO intake and this check, start with TODO_SERVICE_URL=",
    "gateway": "to turn off this check, start with GATEWAY_URL=",
}


class ConfigError(ValueError):
    """An environment variable has a value the orchestrator cannot use."""


@dataclass(frozen=True, slots=True)
class Settings:
    """Everything configurable, with production defaults."""

    host: str = "127.0.0.1"
    port: int = 8005
    todo_service_url: str = "http://localhost:8004"
    gateway_url: str = "http://localhost:8000"
    log_level: str = "INFO"
    log_format: str = "text"
    access_log: bool = False
    db: str = ":memory:"  # embedded default; the service defaults to SERVICE_DB (below)
    db_sync: str = "full"
    # PostgreSQL store: how long a write waits for an unreachable server before it
    # fails (503 store_unavailable); README, "PostgreSQL store".
    db_write_wait_s: float = 10.0
    task_retention_s: float = 7 * 86_400.0
    # A cluster (several servers on one PostgreSQL database): how long a leader's lease
    # lasts unrenewed (it renews every third of it), and the URL other nodes forward
    # to while it leads (None: http://host:port as it listens).
    leader_lease_s: float = 5.0
    advertise_url: str | None = None
    # How long the first answer to a write with an Idempotency-Key is kept for retries.
    idempotency_ttl_s: float = 86_400.0
    admin_token: str | None = field(default=None, repr=False)  # a secret: never shown
    http_threads: int = 8
    # Hot POSTs answered on the event loop's thread, each held until stored
    # (InlineAnswers in orch/http/waitress_adapter.py).
    http_inline: bool = True
    agent_threads: int = 8  # the pool every agent actor's messages run on (orch/runtime/pool.py)
    # gc.set_threshold while running; None leaves the interpreter's (embedded default).
    gc_thresholds: tuple[int, int, int] | None = None

    # Limits that keep one client from exhausting the service (see SECURITY.md).
    # Remote agents keep their connection between heartbeats: room for a 10,000 fleet.
    http_connection_limit: int = 10_000
    http_idle_timeout_s: int = 60  # waitress's channel_timeout: whole seconds
    http_request_read_timeout_s: float = 30.0
    http_max_header_bytes: int = 32 * 1024
    http_max_body_bytes: int = 1024 * 1024
    max_metadata_bytes: int = 16 * 1024
    max_queued_tasks_per_submitter: int = 10_000
    auth_max_failures: int = 30
    auth_failure_window_s: float = 60.0
    auth_lockout_s: float = 300.0

    heartbeat_interval_s: float = 30.0
    unhealthy_after_missed: float = 3.0
    lost_after_missed: float = 10.0
    task_timeout_s: float = 3600.0

    max_restarts: int = supervision.DEFAULT_MAX_RESTARTS
    restart_window_s: float = supervision.DEFAULT_RESTART_WINDOW_S
    restart_backoff_initial_s: float = supervision.DEFAULT_BACKOFF_INITIAL_S
    restart_backoff_max_s: float = supervision.DEFAULT_BACKOFF_MAX_S

    retry_backoff_initial_s: float = 1.0
    retry_backoff_max_s: float = 60.0

    lock_max_ttl_s: float = 3600.0
    lock_max_wait_s: float = 30.0
    events_max_wait_s: float = 20.0  # a long-poll of /events holds a thread this long at most
    progress_event_interval_s: float = 1.0  # one task.progress event per task per interval

    dependency_check_interval_s: float = 10.0
    todo_poll_s: float = 5.0
    todo_timeout_s: float = 5.0  # per request to the TODO service; a hung one is given up
    # A todo: task that ends dead: "block" marks it blocked in the TODO service (with its
    # last error as notes); "cooldown" gives it back after todo_cooldown_s, doubling
    # with each death of the same task up to todo_cooldown_max_s.
    todo_dead_tasks: str = "block"
    todo_cooldown_s: float = 300.0
    todo_cooldown_max_s: float = 86_400.0
    # Answered failures (a refusal, a 500) after which one task's outcome is given up.
    todo_outcome_max_failures: int = 5
    tick_interval_s: float = 0.05
    ask_timeout_s: float = 5.0

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> Settings:
        """Build settings from ``environ`` (default ``os.environ``); raise ``ConfigError``."""
        env = os.environ if environ is None else environ
        values: dict[str, Any] = {"db": SERVICE_DB, "gc_thresholds": SERVICE_GC_THRESHOLDS}
        for name, (attr, parse) in _ENV.items():
            raw = env.get(name)
            if raw is None:
                continue
            try:
                values[attr] = parse(raw)
            except ValueError as exc:
                raise ConfigError(f"{name}={raw!r}: {exc}") from None
        settings = cls(**values)
        settings.validate()
        return settings

    def validate(self) -> None:
        """Reject combinations no single variable's parser can see."""
        if self.lost_after_missed <= self.unhealthy_after_missed:
            raise ConfigError(
                "ORCH_LOST_AFTER_MISSED must be greater than ORCH_UNHEALTHY_AFTER_MISSED"
            )
        if self.heartbeat_interval_s < 0.1:
            raise ConfigError("ORCH_HEARTBEAT_INTERVAL_S must be at least 0.1")
        if self.http_max_header_bytes < 1024:
            # Below this a browser's or requests' ordinary headers no longer fit.
            raise ConfigError("ORCH_HTTP_MAX_HEADER_BYTES must be at least 1024")
        if self.http_max_body_bytes < 1024:
            raise ConfigError("ORCH_HTTP_MAX_BODY_BYTES must be at least 1024")
        if self.todo_dead_tasks not in ("block", "cooldown"):
            raise ConfigError("ORCH_TODO_DEAD_TASKS must be 'block' or 'cooldown'")
        if not 0.5 <= self.leader_lease_s <= 300:
            # Renewed every third of it: shorter leases flap on a loaded machine,
            # longer ones leave a frozen leader's cluster without one that long.
            raise ConfigError("ORCH_LEADER_LEASE_S must be between 0.5 and 300 seconds")
        if self.todo_cooldown_max_s < self.todo_cooldown_s:
            raise ConfigError("ORCH_TODO_COOLDOWN_MAX_S must be at least ORCH_TODO_COOLDOWN_S")

    def describe(self) -> dict[str, Any]:
        """Settings as shown to operators; secrets are masked."""
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["admin_token"] = "***" if self.admin_token else None
        out["db"] = _without_password(self.db)
        return out


def _without_password(db: str) -> str:
    """A database URL with any password masked (``postgresql://u:***@host/db``)."""
    masked = re.sub(r"^([a-z]+://[^/@:]*:)[^/@]*@", r"\1***@", db)
    return re.sub(r"([?&]password=)[^&]*", r"\1***", masked)


# Each parser's ValueError is said after "NAME='value': ", so it reads as one
# sentence saying what is allowed (never Python's "invalid literal for int()").


def _whole_number(raw: str, allowed: str) -> int:
    try:
        return int(raw.strip())
    except ValueError:
        raise ValueError(f"not a whole number; {allowed}") from None


def _port(raw: str) -> int:
    allowed = "give a port number from 0 to 65535"
    value = _whole_number(raw, allowed)
    if not 0 <= value <= 65535:
        raise ValueError(f"out of range; {allowed}")
    return value


def _positive_int(raw: str) -> int:
    allowed = "give a whole number of at least 1"
    value = _whole_number(raw, allowed)
    if value < 1:
        raise ValueError(f"too small; {allowed}")
    return value


def _positive_float(raw: str) -> float:
    allowed = "give a number above 0, like 2.5"
    try:
        value = float(raw.strip())
    except ValueError:
        raise ValueError(f"not a number; {allowed}") from None
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"not above 0; {allowed}")
    return value


def _url(raw: str) -> str:
    raw = raw.strip()
    if raw and not raw.startswith(("http://", "https://")):
        raise ValueError("must be an http:// or https:// URL, or empty to disable")
    return raw.rstrip("/")


def _log_level(raw: str) -> str:
    level = raw.strip().upper()
    if level not in {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}:
        raise ValueError("must be one of DEBUG, INFO, WARNING, ERROR, CRITICAL")
    return level


def _nonempty(raw: str) -> str:
    if not raw.strip():
        raise ValueError("must not be empty")
    return raw.strip()


def _sync_mode(raw: str) -> str:
    value = raw.strip().lower()
    if value not in ("full", "normal"):
        raise ValueError("must be 'full' or 'normal'")
    return value


def _log_format(raw: str) -> str:
    value = raw.strip().lower()
    if value not in ("text", "json"):
        raise ValueError("must be 'text' or 'json'")
    return value


def _dead_task_policy(raw: str) -> str:
    value = raw.strip().lower()
    if value not in ("block", "cooldown"):
        raise ValueError("must be 'block' (mark it blocked) or 'cooldown' (give it back later)")
    return value


def _flag(raw: str) -> bool:
    value = raw.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off", ""):
        return False
    raise ValueError("must be true or false")


def _gc_thresholds(raw: str) -> tuple[int, int, int] | None:
    value = raw.strip().lower()
    if value in ("", "off", "default"):
        return None  # the interpreter's own thresholds
    try:
        parts = tuple(int(part) for part in value.split(","))
    except ValueError:
        parts = ()
    if len(parts) != 3 or min(parts) < 1:
        raise ValueError(
            "must be three positive integers for gc.set_threshold, e.g. 700,10,100,"
            " or 'off' for the interpreter's own"
        )
    return parts  # type: ignore[return-value]  # three ints, checked above


def _optional_secret(raw: str) -> str | None:
    return raw or None


_ENV: dict[str, tuple[str, Callable[[str], Any]]] = {
    "ORCHESTRATOR_HOST": ("host", _nonempty),
    "ORCHESTRATOR_PORT": ("port", _port),
    "TODO_SERVICE_URL": ("todo_service_url", _url),
    "GATEWAY_URL": ("gateway_url", _url),
    "LOG_LEVEL": ("log_level", _log_level),
    "ORCH_LOG_FORMAT": ("log_format", _log_format),
    "ORCH_ACCESS_LOG": ("access_log", _flag),
    "ORCH_DB": ("db", _nonempty),
    "ORCH_DB_SYNC": ("db_sync", _sync_mode),
    "ORCH_DB_WRITE_WAIT_S": ("db_write_wait_s", _positive_float),
    "ORCH_TASK_RETENTION_S": ("task_retention_s", _positive_float),
    "ORCH_IDEMPOTENCY_TTL_S": ("idempotency_ttl_s", _positive_float),
    "ORCH_LEADER_LEASE_S": ("leader_lease_s", _positive_float),
    "ORCH_ADVERTISE_URL": ("advertise_url", _url),
    "ORCH_ADMIN_TOKEN": ("admin_token", _optional_secret),
    "ORCH_HTTP_THREADS": ("http_threads", _positive_int),
    "ORCH_HTTP_INLINE": ("http_inline", _flag),
    "ORCH_AGENT_THREADS": ("agent_threads", _positive_int),
    "ORCH_GC_THRESHOLDS": ("gc_thresholds", _gc_thresholds),
    "ORCH_HTTP_CONNECTION_LIMIT": ("http_connection_limit", _positive_int),
    "ORCH_HTTP_IDLE_TIMEOUT_S": ("http_idle_timeout_s", _positive_int),
    "ORCH_HTTP_REQUEST_READ_TIMEOUT_S": ("http_request_read_timeout_s", _positive_float),
    "ORCH_HTTP_MAX_HEADER_BYTES": ("http_max_header_bytes", _positive_int),
    "ORCH_HTTP_MAX_BODY_BYTES": ("http_max_body_bytes", _positive_int),
    "ORCH_MAX_METADATA_BYTES": ("max_metadata_bytes", _positive_int),
    "ORCH_MAX_QUEUED_TASKS_PER_SUBMITTER": ("max_queued_tasks_per_submitter", _positive_int),
    "ORCH_AUTH_MAX_FAILURES": ("auth_max_failures", _positive_int),
    "ORCH_AUTH_FAILURE_WINDOW_S": ("auth_failure_window_s", _positive_float),
    "ORCH_AUTH_LOCKOUT_S": ("auth_lockout_s", _positive_float),
    "ORCH_HEARTBEAT_INTERVAL_S": ("heartbeat_interval_s", _positive_float),
    "ORCH_UNHEALTHY_AFTER_MISSED": ("unhealthy_after_missed", _positive_float),
    "ORCH_LOST_AFTER_MISSED": ("lost_after_missed", _positive_float),
    "ORCH_TASK_TIMEOUT_S": ("task_timeout_s", _positive_float),
    "ORCH_MAX_RESTARTS": ("max_restarts", _positive_int),
    "ORCH_RESTART_WINDOW_S": ("restart_window_s", _positive_float),
    "ORCH_LOCK_MAX_TTL_S": ("lock_max_ttl_s", _positive_float),
    "ORCH_LOCK_MAX_WAIT_S": ("lock_max_wait_s", _positive_float),
    "ORCH_EVENTS_MAX_WAIT_S": ("events_max_wait_s", _positive_float),
    "ORCH_PROGRESS_EVENT_INTERVAL_S": ("progress_event_interval_s", _positive_float),
    "ORCH_TODO_POLL_S": ("todo_poll_s", _positive_float),
    "ORCH_TODO_TIMEOUT_S": ("todo_timeout_s", _positive_float),
    "ORCH_TODO_DEAD_TASKS": ("todo_dead_tasks", _dead_task_policy),
    "ORCH_TODO_COOLDOWN_S": ("todo_cooldown_s", _positive_float),
    "ORCH_TODO_COOLDOWN_MAX_S": ("todo_cooldown_max_s", _positive_float),
    "ORCH_TODO_OUTCOME_MAX_FAILURES": ("todo_outcome_max_failures", _positive_int),
    "ORCH_DEPENDENCY_CHECK_INTERVAL_S": ("dependency_check_interval_s", _positive_float),
    "ORCH_TICK_INTERVAL_S": ("tick_interval_s", _positive_float),
    "ORCH_ASK_TIMEOUT_S": ("ask_timeout_s", _positive_float),
}

#: The environment variables ``Settings.from_env`` reads, for ``--help`` and the README.
ENVIRONMENT_VARIABLES = tuple(_ENV)
