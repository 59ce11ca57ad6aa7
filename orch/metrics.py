"""Prometheus metrics, one ``CollectorRegistry`` per Orchestrator (never the default).

Three sources, none of them on an actor's hot path:

* gauges by state are computed at scrape time from the facade's counts
  (``StateCollector``), so nothing updates a gauge per request;
* counters and the queue-wait and run-time histograms follow the event feed
  (``Events.subscribe``), the one seam every actor reports through;
* what only the facade and the HTTP layer see (heartbeats, lock waits and refusals,
  request latency, answers withdrawn) comes as ``Events.signal``, on the same seam
  but kept out of the ring; nothing outside this module touches a metric.

No label ever takes an agent id, task id or resource name: labels are states,
outcomes, route templates and methods, all from small fixed sets. The seed's names
(``orchestrator_task_assignments_total``, ``orchestrator_active_agents``,
``orchestrator_pending_tasks``, ``orchestrator_agent_starts_total``,
``orchestrator_agent_stops_total``) are kept so existing dashboards keep working.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

from orch.events import Event, Events

#: Event type -> (counter name, help); each counts one per event.
EVENT_COUNTERS: dict[str, tuple[str, str]] = {
    "agent.registered": ("agent_registrations", "Agents registered."),
    "agent.started": ("agent_starts", "Agents admitted to scheduling (start)."),
    "agent.stopped": ("agent_stops", "Agents stopped."),
    "agent.deregistered": ("agent_deregistrations", "Agents deregistered."),
    "agent.unhealthy": ("agents_unhealthy", "Agents marked unhealthy (missed heartbeats)."),
    "agent.lost": ("agents_lost", "Agents declared lost (heartbeat grace exceeded)."),
    "agent.crashed": ("agent_crashes", "Agent actors that crashed."),
    "agent.restarted": ("agent_restarts", "Agent actors restarted by the supervisor."),
    "agent.failed": ("agents_failed", "Agents given up on (restart intensity exceeded)."),
    "task.queued": ("task_submissions", "Tasks submitted."),
    "task.assigned": ("task_assignments", "Task assignments (leases) made."),
    "task.completed": ("task_completions", "Tasks completed."),
    "task.failed": ("task_failures", "Failed task attempts that will be retried."),
    "task.retried": ("task_retries", "Failed tasks put back in the queue after backoff."),
    "task.requeued": ("task_requeues", "Leases lost (agent lost/stopped, time-out)."),
    "task.dead": ("tasks_dead", "Tasks that failed with no attempts left."),
    "task.cancelled": ("tasks_cancelled", "Tasks cancelled."),
    "lock.granted": ("lock_grants", "Lock leases granted (one per resource)."),
    "lock.released": ("lock_releases", "Lock leases released."),
    "lock.expired": ("lock_expiries", "Lock leases that ran out."),
    "intake.reserved": ("intake_reservations", "TODO tasks reserved and assigned."),
    "intake.completed": ("intake_completions", "TODO tasks reported complete."),
    "intake.released": ("intake_releases", "TODO tasks given back (unlocked)."),
    "intake.blocked": ("intake_blocks", "Dead TODO tasks marked blocked in the TODO service."),
    "intake.cooling": ("intake_cool_downs", "Dead TODO tasks held for a cool-down."),
    "intake.outcome_abandoned": (
        "intake_outcomes_abandoned",
        "TODO outcomes (complete, unlock, block) given up after repeated refusals.",
    ),
}

LATENCY_BUCKETS_S = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10)
DURATION_BUCKETS_S = (0.01, 0.1, 0.5, 1, 5, 15, 60, 300, 900, 3600, 4 * 3600, 24 * 3600)
HTTP_METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class StateCollector(Collector):
    """Agents, tasks and locks as they are at the moment of the scrape."""

    def __init__(self, stats: Callable[[], dict[str, Any]]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        stats = self._stats()
        agents = GaugeMetricFamily(
            "orchestrator_agents", "Registered agents by lifecycle state.", labels=["state"]
        )
        for state, count in stats["agents_by_state"].items():
            agents.add_metric([state], count)
        yield agents
        yield GaugeMetricFamily(
            "orchestrator_active_agents",
            "Agents started and healthy (idle or busy).",
            value=stats["active_agents"],
        )
        tasks = GaugeMetricFamily("orchestrator_tasks", "Tasks by state.", labels=["state"])
        for state, count in stats["tasks"]["tasks_by_state"].items():
            tasks.add_metric([state], count)
        yield tasks
        yield GaugeMetricFamily(
            "orchestrator_pending_tasks",
            "Tasks waiting for an agent.",
            value=stats["pending_tasks"],
        )
        by_priority = GaugeMetricFamily(
            "orchestrator_pending_tasks_by_priority",
            "Tasks waiting for an agent, by priority (0-10).",
            labels=["priority"],
        )
        for priority, count in stats["tasks"]["pending_by_priority"].items():
            by_priority.add_metric([priority], count)
        yield by_priority
        locks = stats["locks"]
        yield GaugeMetricFamily(
            "orchestrator_locks_held", "Lock leases currently held.", value=locks["locks_held"]
        )
        yield GaugeMetricFamily(
            "orchestrator_lock_waiters", "Acquire calls waiting in line.", value=locks["waiters"]
        )
        yield GaugeMetricFamily(
            "orchestrator_restarting_agents",
            "Agents waiting out a restart backoff.",
            value=len(stats["restarting_agents"]),
        )
        yield GaugeMetricFamily(
            "orchestrator_uptime_seconds", "Seconds since start.", value=stats["uptime_s"]
        )


class StoreCollector(Collector):
    """The store's own counters (``Store.stats``), read at scrape time.

    Why not counters updated by the writer: its thread is the one every acknowledged
    write waits for, so it keeps plain integers and this reads them only when asked.
    ``writes / commits`` is the group-commit size; the commit histogram is how long
    each transaction took, syncs included, which is what every answer waits behind.
    """

    def __init__(self, stats: Callable[[], dict[str, Any]]) -> None:
        self._stats = stats

    def collect(self) -> Iterator[Metric]:
        stats = self._stats()
        yield CounterMetricFamily(
            "orchestrator_store_writes", "Writes the store made durable.", value=stats["writes"]
        )
        yield CounterMetricFamily(
            "orchestrator_store_write_failures",
            "Writes the store refused or failed (each answered with StoreError / 503).",
            value=stats["failed_writes"],
        )
        yield GaugeMetricFamily(
            "orchestrator_store_queued_writes",
            "Writes waiting for the store's writer.",
            value=stats["queued_writes"],
        )
        if "commits" in stats:
            yield CounterMetricFamily(
                "orchestrator_store_commits",
                "Transactions committed, health probes included (writes_total / commits_total"
                " is about the group-commit size).",
                value=stats["commits"],
            )
        if "commit_seconds" in stats:
            timing = stats["commit_seconds"]
            buckets = [(floatToGoString(bound), count) for bound, count in timing["buckets"]]
            yield HistogramMetricFamily(
                "orchestrator_store_commit_seconds",
                "Time each transaction took in the writer, sync included.",
                buckets=[*buckets, ("+Inf", timing["count"])],
                sum_value=timing["sum"],
            )
        if "bytes" in stats:
            yield GaugeMetricFamily(
                "orchestrator_store_bytes",
                "Size of the database on disk, write-ahead log included.",
                value=stats["bytes"],
            )


class Metrics:
    """The collectors of one Orchestrator; ``registry`` is what ``/metrics`` exposes."""

    def __init__(
        self,
        events: Events,
        stats: Callable[[], dict[str, Any]],
        store_stats: Callable[[], dict[str, Any]] | None = None,
    ) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(StateCollector(stats))
        if store_stats is not None:
            self.registry.register(StoreCollector(store_stats))
        reg = self.registry
        self._by_event = {
            event_type: Counter(f"orchestrator_{name}", help_text, registry=reg)
            for event_type, (name, help_text) in EVENT_COUNTERS.items()
        }
        self.heartbeats = Counter(
            "orchestrator_heartbeats", "Heartbeats received from agents.", registry=reg
        )
        self.progress_reports = Counter(
            "orchestrator_task_progress_reports",
            "Progress reports kept with tasks (every one; the task.progress events are thinned).",
            registry=reg,
        )
        self.lock_refusals = Counter(
            "orchestrator_lock_refusals",
            "Lock requests refused (held, or the wait ran out).",
            registry=reg,
        )
        self.answers_withdrawn = Counter(
            "orchestrator_http_answers_withdrawn",
            "Answers made on the event loop whose store write then failed, sent as 503"
            " instead (orchestrator_http_requests still counts the app's status).",
            registry=reg,
        )
        self.idempotent_replays = Counter(
            "orchestrator_idempotent_replays",
            "Retries of a write with an Idempotency-Key answered with the stored first"
            " answer instead of being applied again.",
            registry=reg,
        )
        self.idempotent_unkept = Counter(
            "orchestrator_idempotent_answers_unkept",
            "First answers to keyed writes the store failed to keep (a retry of one is"
            " applied again).",
            registry=reg,
        )
        self.intake_polls = Counter(
            "orchestrator_intake_polls", "Polls of the TODO service.", registry=reg
        )
        self.intake_errors = Counter(
            "orchestrator_intake_errors",
            "TODO service calls that failed (unreachable, time-out, 5xx).",
            registry=reg,
        )
        self.queue_wait = Histogram(
            "orchestrator_task_queue_wait_seconds",
            "Time from queueing to assignment.",
            buckets=DURATION_BUCKETS_S,
            registry=reg,
        )
        self.run_time = Histogram(
            "orchestrator_task_run_seconds",
            "Time from assignment to completion.",
            buckets=DURATION_BUCKETS_S,
            registry=reg,
        )
        self.lock_wait = Histogram(
            "orchestrator_lock_wait_seconds",
            "Time an acquire call took until granted.",
            buckets=(*LATENCY_BUCKETS_S, 30),
            registry=reg,
        )
        self.http_latency = Histogram(
            "orchestrator_http_request_duration_seconds",
            "HTTP request latency by route template and method.",
            labelnames=["route", "method"],
            buckets=LATENCY_BUCKETS_S,
            registry=reg,
        )
        self.http_requests = Counter(
            "orchestrator_http_requests",
            "HTTP requests answered, by route template, method and status class.",
            labelnames=["route", "method", "status"],
            registry=reg,
        )
        # (route, method, status class) -> the two labelled children: ``labels()``
        # validates and takes a lock on every call, and under cProfile recording a
        # request took 23 us with it, 10 us without (a heartbeat's whole app part is
        # ~45 us). Routes are templates and methods a fixed set: this stays small.
        self._request_children: dict[tuple[str, str, int], tuple[Any, Any]] = {}
        events.subscribe(self.on_event)
        events.subscribe_signals(self.on_signal)

    def on_event(self, event: Event) -> None:
        """Count the event; observe the durations it carries."""
        counter = self._by_event.get(event.type)
        if counter is not None:
            counter.inc()
        if event.type == "task.assigned" and "queue_wait_s" in event.data:
            self.queue_wait.observe(event.data["queue_wait_s"])
        elif event.type == "task.completed" and event.data.get("run_s") is not None:
            self.run_time.observe(event.data["run_s"])

    def on_signal(self, signal_type: str, data: dict[str, Any]) -> None:
        """Count or observe one ``Events.signal``; an unknown type moves nothing."""
        if signal_type == "http.request":
            self.observe_request(data["route"], data["method"], data["status"], data["seconds"])
        elif signal_type == "heartbeat":
            self.heartbeats.inc()
        elif signal_type == "lock.waited":
            self.lock_wait.observe(data["seconds"])
        elif signal_type == "lock.refused":
            self.lock_refusals.inc()
        elif signal_type == "task.progress_reported":
            self.progress_reports.inc()
        elif signal_type == "http.answer_withdrawn":
            self.answers_withdrawn.inc()
        elif signal_type == "idempotency.replayed":
            self.idempotent_replays.inc()
        elif signal_type == "idempotency.unkept":
            self.idempotent_unkept.inc()
        elif signal_type == "intake.polled":
            self.intake_polls.inc()
        elif signal_type == "intake.error":
            self.intake_errors.inc()

    def observe_request(self, route: str, method: str, status: int, seconds: float) -> None:
        """One answered HTTP request; ``route`` is the template, never the raw path."""
        method = method if method in HTTP_METHODS else "OTHER"
        key = (route, method, status // 100)
        children = self._request_children.get(key)
        if children is None:
            children = (
                self.http_latency.labels(route, method),
                self.http_requests.labels(route, method, f"{status // 100}xx"),
            )
            self._request_children[key] = children
        children[0].observe(seconds)
        children[1].inc()
