"""Samples of the server process during a soak, and how much they grew.

From /proc (RSS, open file descriptors, threads: what leaks show in) and from the
server's /metrics (heartbeats and other counters, 5xx by route), every few seconds
on a thread of its own.
"""

from __future__ import annotations

import os
import statistics
import threading
import time
from dataclasses import dataclass
from typing import Any

import requests
from prometheus_client.parser import text_string_to_metric_families

from bench import processes


@dataclass(frozen=True)
class Sample:
    """The server process at one moment; ``t_s`` counts from the start of the load."""

    t_s: float
    rss_mb: float
    fds: int
    threads: int
    heartbeats: float | None  # the server's own counter (every agent, wrk and workers)
    server_5xx: float | None


def read_proc(pid: int) -> tuple[float, int, int]:
    """RSS in MB, open file descriptors and threads of ``pid``, from /proc."""
    rss_mb, threads = float("nan"), -1
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                rss_mb = int(line.split()[1]) / 1024
            elif line.startswith("Threads:"):
                threads = int(line.split()[1])
    return rss_mb, len(os.listdir(f"/proc/{pid}/fd")), threads


#: Server counters worth a figure: /metrics sample name -> report key.
COUNTERS = {
    "orchestrator_heartbeats_total": "heartbeats",
    "orchestrator_agents_unhealthy_total": "agents_marked_unhealthy",
    "orchestrator_agents_lost_total": "agents_declared_lost",
}


def scrape(session: requests.Session, url: str) -> tuple[dict[str, float], dict[str, float]]:
    """The server's ``COUNTERS``, and its 5xx answers by route and method."""
    text = session.get(f"{url}/metrics", timeout=30).text
    counters = dict.fromkeys(COUNTERS.values(), 0.0)
    errors: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name in COUNTERS:
                counters[COUNTERS[sample.name]] = sample.value
            elif (
                sample.name == "orchestrator_http_requests_total"
                and sample.labels.get("status") == "5xx"
                and sample.value
            ):
                errors[f"{sample.labels['method']} {sample.labels['route']}"] = sample.value
    return counters, errors


class Sampler:
    """Samples the server every ``interval_s`` on a thread until stopped."""

    def __init__(self, server: processes.Process, interval_s: float) -> None:
        self.server = server
        self.interval_s = interval_s
        self.samples: list[Sample] = []
        self.scrape_failures = 0
        self.started_at = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="soak-sampler", daemon=True)
        self._session = requests.Session()

    def start(self) -> None:
        self.started_at = time.monotonic()
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(40)

    def sample(self) -> Sample:
        """One sample now; /proc always, /metrics when it answers in time."""
        t_s = time.monotonic() - self.started_at
        rss_mb, fds, threads = read_proc(self.server.popen.pid)
        try:
            counters, errors = scrape(self._session, self.server.url)
            heartbeats: float | None = counters["heartbeats"]
            server_5xx: float | None = sum(errors.values())
        except (requests.RequestException, ValueError):
            self.scrape_failures += 1
            heartbeats, server_5xx = None, None
        return Sample(round(t_s, 2), round(rss_mb, 1), fds, threads, heartbeats, server_5xx)

    def _run(self) -> None:
        while True:
            try:
                self.samples.append(self.sample())
            except OSError:  # the process is gone
                return
            if self._stop.wait(self.interval_s):
                return


def growth(samples: list[Sample], attr: str, start_s: float, end_s: float) -> dict[str, Any]:
    """How much ``attr`` grew between ``start_s`` and ``end_s``, by a least-squares line.

    A line through every sample of the window is steadier than comparing two
    samples: a garbage collection or a burst of connections at either end does not
    decide the verdict. The means of the window's first and last quarter are kept
    too, for a reader who distrusts the fit.
    """
    points = [(s.t_s, float(getattr(s, attr))) for s in samples if start_s <= s.t_s <= end_s]
    values = [v for _, v in points]
    if len(points) < 2:
        return {"samples": len(points), "growth_pct": float("nan")}
    ts = [t for t, _ in points]
    slope = statistics.linear_regression(ts, values).slope
    mean_t, mean_v = statistics.fmean(ts), statistics.fmean(values)
    at_start = mean_v + slope * (ts[0] - mean_t)
    at_end = mean_v + slope * (ts[-1] - mean_t)
    quarter = max(1, len(values) // 4)
    return {
        "samples": len(points),
        "fit_start": round(at_start, 2),
        "fit_end": round(at_end, 2),
        "growth_pct": round((at_end - at_start) / at_start * 100, 2) if at_start else 0.0,
        "first_quarter_mean": round(statistics.fmean(values[:quarter]), 2),
        "last_quarter_mean": round(statistics.fmean(values[-quarter:]), 2),
        "min": min(values),
        "max": max(values),
    }


def rate_between(samples: list[Sample], start_s: float, end_s: float) -> float | None:
    """Heartbeats a second by the server's counter between two moments."""
    window = [s for s in samples if start_s <= s.t_s <= end_s and s.heartbeats is not None]
    if len(window) < 2 or window[-1].t_s == window[0].t_s:
        return None
    return (window[-1].heartbeats - window[0].heartbeats) / (window[-1].t_s - window[0].t_s)
