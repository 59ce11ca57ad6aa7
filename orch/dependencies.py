"""Background checks of what the orchestrator depends on: its store, TODO service, gateway.

``/health`` must answer at once even when a dependency hangs, so checks run on their
own daemon thread every ``interval_s`` and ``/health`` only reads the last results.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import requests

from orch.errors import OrchestratorError

logger = logging.getLogger("orch.dependencies")

CHECK_TIMEOUT_S = 2.0


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The last outcome of one dependency's check."""

    status: str  # "ok" | "failing" | "unknown" (not checked yet)
    latency_ms: float | None = None
    checked_at: float | None = None
    last_error: str | None = None
    target: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"status": self.status}
        if self.target is not None:
            out["url"] = self.target
        out["latency_ms"] = self.latency_ms
        out["checked_at"] = self.checked_at
        out["last_error"] = self.last_error
        return out


def http_probe(base_url: str, session: requests.Session) -> Callable[[], None]:
    """A check that ``GET <base_url>/health`` answers 2xx within the time-out."""
    url = base_url.rstrip("/") + "/health"

    def probe() -> None:
        answer = session.get(url, timeout=CHECK_TIMEOUT_S)
        if answer.status_code >= 300:
            raise RuntimeError(f"GET {url} answered {answer.status_code}")

    return probe


class DependencyChecks:
    """Runs named checks on an interval; ``results`` is what ``/health`` reads."""

    def __init__(self, interval_s: float = 10.0, wall: Callable[[], float] = time.time) -> None:
        self._interval_s = interval_s
        self._wall = wall
        self._checks: dict[str, tuple[Callable[[], None], str | None, bool]] = {}
        self._results: dict[str, CheckResult] = {}
        self._off_hints: dict[str, str] = {}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._session = requests.Session()

    def add(
        self, name: str, check: Callable[[], None], *, target: str | None = None, critical: bool
    ) -> None:
        """Register a check; a failing ``critical`` one makes the service unhealthy."""
        self._checks[name] = (check, target, critical)
        self._results[name] = CheckResult("unknown", target=target)

    def add_http(self, name: str, base_url: str, *, off_hint: str | None = None) -> None:
        """Check a service's ``/health`` (not critical: it makes us ``degraded``).

        ``off_hint`` says how to turn the check off; the warning of a failing check
        ends with it, because a new user's first run has none of these services.
        """
        self.add(name, http_probe(base_url, self._session), target=base_url, critical=False)
        if off_hint:
            self._off_hints[name] = off_hint

    def results(self) -> dict[str, CheckResult]:
        return dict(self._results)

    def status(self) -> str:
        """``unhealthy`` if a critical check fails, ``degraded`` if another does."""
        worst = "healthy"
        for name, result in self._results.items():
            if result.status != "failing":
                continue
            if self._checks[name][2]:
                return "unhealthy"
            worst = "degraded"
        return worst

    def run_once(self) -> None:
        """Run every check now (the thread's loop; also used at start and in tests)."""
        for name, (check, target, _) in list(self._checks.items()):
            started = time.perf_counter()
            error = None
            try:
                check()
            except requests.Timeout:
                error = f"no answer within {CHECK_TIMEOUT_S}s"
            except requests.ConnectionError:
                error = f"cannot connect to {target}"
            except (OrchestratorError, requests.RequestException, RuntimeError, OSError) as exc:
                error = str(exc) or type(exc).__name__
            latency_ms = round((time.perf_counter() - started) * 1000, 3)
            previous = self._results.get(name)
            result = CheckResult(
                "failing" if error else "ok", latency_ms, self._wall(), error, target
            )
            changed = previous is not None and previous.status != result.status
            if changed and (error or previous.status != "unknown"):
                if error:
                    hint = self._off_hints.get(name)
                    logger.warning(
                        "dependency %s is now failing: %s%s",
                        name,
                        error,
                        f"; {hint}" if hint else "",
                    )
                else:
                    logger.info("dependency %s is now %s", name, result.status)
            self._results[name] = result

    def start(self) -> None:
        self.run_once()
        self._thread = threading.Thread(target=self._loop, name="orch-dependencies", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(CHECK_TIMEOUT_S + 1)
        self._session.close()

    def _loop(self) -> None:
        while not self._stop.wait(self._interval_s):
            self.run_once()
