"""Prometheus collectors, one registry per Orchestrator (never the process default).

Gauges by state are computed at scrape time from the facade's counts, so nothing on
the hot paths updates a gauge; no label ever takes an agent or task id.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector

if TYPE_CHECKING:
    from orch.system import Orchestrator


class StateCollector(Collector):
    """Agents, tasks and locks as they are at the moment of the scrape."""

    def __init__(self, orch: Orchestrator) -> None:
        self._orch = orch

    def collect(self) -> Iterator[Metric]:
        stats = self._orch.stats()
        agents = GaugeMetricFamily(
            "orchestrator_agents", "Registered agents by lifecycle state.", labels=["state"]
        )
        for state, count in stats["agents_by_state"].items():
            agents.add_metric([state], count)
        yield agents
        task_stats = stats["tasks"]
        tasks = GaugeMetricFamily("orchestrator_tasks", "Tasks by state.", labels=["state"])
        for state, count in task_stats["tasks_by_state"].items():
            tasks.add_metric([state], count)
        yield tasks
        outcomes = CounterMetricFamily(
            "orchestrator_tasks_outcomes",
            "Task transitions since start, by outcome.",
            labels=["outcome"],
        )
        for outcome in (
            "submitted",
            "assigned",
            "completed",
            "failed",
            "retried",
            "dead",
            "cancelled",
            "timed_out",
        ):
            outcomes.add_metric([outcome], task_stats[f"total_tasks_{outcome}"])
        yield outcomes
        locks = stats["locks"]
        yield GaugeMetricFamily(
            "orchestrator_locks_held", "Lock leases currently held.", value=locks["locks_held"]
        )
        yield GaugeMetricFamily(
            "orchestrator_lock_waiters", "Acquire calls waiting in line.", value=locks["waiters"]
        )
        yield CounterMetricFamily(
            "orchestrator_lock_grants",
            "Lock leases granted since start.",
            value=locks["granted_total"],
        )
        yield CounterMetricFamily(
            "orchestrator_lock_expiries",
            "Lock leases that ran out without renewal.",
            value=locks["expired_total"],
        )
        yield CounterMetricFamily(
            "orchestrator_agent_restarts",
            "Agent actor restarts by the supervisor (current agents).",
            value=stats["restarts"],
        )
        yield GaugeMetricFamily(
            "orchestrator_uptime_seconds", "Seconds since start.", value=stats["uptime_s"]
        )


def build_registry(orch: Orchestrator) -> CollectorRegistry:
    """A fresh registry holding this orchestrator's collectors."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(StateCollector(orch))
    return registry
