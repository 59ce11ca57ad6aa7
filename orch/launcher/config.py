"""The launcher's file: ``[programs.NAME]`` tables, read with ``tomllib`` and checked.

Like a supervisord ``[program:x]`` section: a command (a list, never a shell line),
how many instances, their environment and working directory, and a restart policy in
OTP's words with the in-process agents' defaults (``orch/supervision.py``). Every
field is checked when the file is read, at start and on SIGHUP, so a bad file is
refused with one line naming the program and the field, before anything runs.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from orch.supervision import (
    DEFAULT_BACKOFF_INITIAL_S,
    DEFAULT_BACKOFF_MAX_S,
    DEFAULT_MAX_RESTARTS,
    DEFAULT_RESTART_WINDOW_S,
    RestartPolicy,
)

_NAME = re.compile(r"^[A-Za-z0-9._:-]{1,100}$")
_ID = re.compile(r"^(?!\.+$)[A-Za-z0-9._:-]{1,128}$")
_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")
#: Set by the launcher for each process; a program may not override them.
RESERVED_ENV = frozenset({"ORCH_URL", "ORCH_AGENT_ID", "ORCH_AGENT_TOKEN", "ORCH_ADMIN_TOKEN"})

DEFAULT_STOP_GRACE_S = 10.0
DEFAULT_LOG_MAX_BYTES = 10 * 1024 * 1024
DEFAULT_LOG_BACKUPS = 5


class LauncherConfigError(ValueError):
    """The file cannot be used; the message is one line naming the file and field."""


@dataclass(frozen=True, slots=True)
class Program:
    """One ``[programs.NAME]`` table; its instance *i* is agent ``NAME-i``."""

    name: str
    command: tuple[str, ...]
    instances: int = 1
    agent_type: str = "implementation"
    capabilities: tuple[str, ...] = ()
    max_concurrent_tasks: int = 1
    env: Mapping[str, str] = field(default_factory=dict)
    cwd: str | None = None
    restart: RestartPolicy = field(default_factory=RestartPolicy)
    stop_grace_s: float = DEFAULT_STOP_GRACE_S
    log_max_bytes: int = DEFAULT_LOG_MAX_BYTES
    log_backups: int = DEFAULT_LOG_BACKUPS

    def agent_ids(self) -> list[str]:
        """``NAME-1`` … ``NAME-n``."""
        return [f"{self.name}-{i}" for i in range(1, self.instances + 1)]


@dataclass(frozen=True, slots=True)
class LauncherConfig:
    """Every program in the file, by name."""

    programs: Mapping[str, Program]

    def instances(self) -> dict[str, Program]:
        """Agent id -> its program, for every instance the file asks for."""
        return {aid: p for p in self.programs.values() for aid in p.agent_ids()}


_FIELDS = {
    "command",
    "instances",
    "agent_type",
    "capabilities",
    "max_concurrent_tasks",
    "env",
    "cwd",
    "max_restarts",
    "restart_window_s",
    "backoff_initial_s",
    "backoff_max_s",
    "stop_grace_s",
    "log_max_bytes",
    "log_backups",
}


def load_config(path: str) -> LauncherConfig:
    """Read and check the file at ``path``; ``LauncherConfigError`` names what is wrong."""
    try:
        with open(path, "rb") as file:
            document = tomllib.load(file)
    except OSError as exc:
        raise LauncherConfigError(f"{path}: cannot read: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise LauncherConfigError(f"{path}: not valid TOML: {exc}") from None
    try:
        return parse_config(document)
    except LauncherConfigError as exc:
        raise LauncherConfigError(f"{path}: {exc}") from None


def parse_config(document: Mapping[str, Any]) -> LauncherConfig:
    """Check a parsed document (``tomllib``'s answer)."""
    unknown = sorted(set(document) - {"programs"})
    if unknown:
        raise LauncherConfigError(f"{unknown[0]}: unknown table (only [programs.NAME])")
    programs = document.get("programs")
    if not isinstance(programs, Mapping) or not programs:
        raise LauncherConfigError("programs: no [programs.NAME] table")
    parsed = {}
    for name, table in programs.items():
        if not _NAME.match(name):
            raise LauncherConfigError(
                f"programs.{name}: a program name is 1-100 letters, digits or '._:-'"
            )
        if not isinstance(table, Mapping):
            raise LauncherConfigError(f"programs.{name}: must be a table")
        parsed[name] = _program(name, table)
    return LauncherConfig(parsed)


def _program(name: str, table: Mapping[str, Any]) -> Program:
    def fail(field_name: str, message: str) -> LauncherConfigError:
        return LauncherConfigError(f"programs.{name}.{field_name}: {message}")

    unknown = sorted(set(table) - _FIELDS)
    if unknown:
        raise fail(unknown[0], "unknown field")
    command = table.get("command")
    if (
        not isinstance(command, list)
        or not command
        or not all(isinstance(part, str) and part for part in command)
    ):
        raise fail("command", 'must be a non-empty list of strings, e.g. ["python", "w.py"]')

    def integer(key: str, default: int, low: int, high: int) -> int:
        value = table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
            raise fail(key, f"must be an integer from {low} to {high}, got {value!r}")
        return value

    def seconds(key: str, default: float) -> float:
        value = table.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise fail(key, f"must be a number of seconds, got {value!r}")
        if not math.isfinite(value) or value <= 0:
            raise fail(key, f"must be a positive number of seconds, got {value!r}")
        return float(value)

    agent_type = table.get("agent_type", "implementation")
    if not isinstance(agent_type, str) or not _ID.match(agent_type):
        raise fail("agent_type", "must be 1-128 letters, digits or '._:-'")
    capabilities = table.get("capabilities", [])
    if not isinstance(capabilities, list) or not all(
        isinstance(c, str) and _ID.match(c) for c in capabilities
    ):
        raise fail("capabilities", "must be a list of names (letters, digits or '._:-')")
    if len(capabilities) > 64:
        raise fail("capabilities", "at most 64")
    env = table.get("env", {})
    if not isinstance(env, Mapping):
        raise fail("env", 'must be a table of NAME = "value"')
    for key, value in env.items():
        if not _ENV_NAME.match(key) or not isinstance(value, str):
            raise fail(f"env.{key}", 'must be NAME = "string value"')
        if key in RESERVED_ENV:
            raise fail(f"env.{key}", "is set by the launcher and may not be overridden")
    cwd = table.get("cwd")
    if cwd is not None and (not isinstance(cwd, str) or not os.path.isdir(cwd)):
        raise fail("cwd", f"must be an existing directory, got {cwd!r}")
    restart = RestartPolicy(
        max_restarts=integer("max_restarts", DEFAULT_MAX_RESTARTS, 0, 10_000),
        restart_window_s=seconds("restart_window_s", DEFAULT_RESTART_WINDOW_S),
        backoff_initial_s=seconds("backoff_initial_s", DEFAULT_BACKOFF_INITIAL_S),
        backoff_max_s=seconds("backoff_max_s", DEFAULT_BACKOFF_MAX_S),
    )
    if restart.backoff_max_s < restart.backoff_initial_s:
        raise fail("backoff_max_s", "must be at least backoff_initial_s")
    return Program(
        name=name,
        command=tuple(command),
        instances=integer("instances", 1, 0, 1000),
        agent_type=agent_type,
        capabilities=tuple(capabilities),
        max_concurrent_tasks=integer("max_concurrent_tasks", 1, 1, 1024),
        env=dict(env),
        cwd=cwd,
        restart=restart,
        stop_grace_s=seconds("stop_grace_s", DEFAULT_STOP_GRACE_S),
        log_max_bytes=integer("log_max_bytes", DEFAULT_LOG_MAX_BYTES, 1024, 2**40),
        log_backups=integer("log_backups", DEFAULT_LOG_BACKUPS, 0, 1000),
    )
