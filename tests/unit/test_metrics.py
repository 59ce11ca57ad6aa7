"""orch/metrics.py: exact values after a scripted scenario, and no id ever in a label."""

from __future__ import annotations

import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from orch import Agent, Conflict, Orchestrator, Settings, TaskFailed
from orch.errors import StoreError
from orch.store import SQLiteStore
from tests.conftest import wait_until
from tests.store.faults import SQLITE_BUSY_TIMEOUT_S, LockedElsewhere


def scrape(orch: Orchestrator) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    text = generate_latest(orch.metrics.registry).decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def value(samples, name: str, **labels: str) -> float:
    return samples[(name, tuple(sorted(labels.items())))]


def test_a_scripted_scenario_gives_exact_values(orch, clock):
    for agent_id in ("a1", "a2"):
        orch.register_agent(agent_id, "implementation", ["code"])
    orch.start_agent("a1")
    orch.assign_task({}, task_id=1, agent_id="a1")
    orch.assign_task({}, task_id=2, priority=7, capabilities=["code"])  # a1 is busy: queued
    orch.heartbeat("a1")
    clock.advance(3)
    orch.complete_task("a1", 1, {"ok": True})
    wait_until(lambda: orch.task(2)["status"] == "assigned")
    orch.fail_task("a1", 2, "flaky", retryable=False)
    grant = orch.acquire_lock("a2", "repo")
    with pytest.raises(Conflict):
        orch.acquire_lock("a1", "repo")
    orch.release_lock("a2", "repo", grant["fencing_token"])
    orch.stop_agent("a2")

    samples = scrape(orch)
    assert value(samples, "orchestrator_agent_registrations_total") == 2
    assert value(samples, "orchestrator_agent_starts_total") == 1
    assert value(samples, "orchestrator_agent_stops_total") == 1
    assert value(samples, "orchestrator_heartbeats_total") == 1
    assert value(samples, "orchestrator_task_submissions_total") == 2
    assert value(samples, "orchestrator_task_assignments_total") == 2
    assert value(samples, "orchestrator_task_completions_total") == 1
    assert value(samples, "orchestrator_tasks_dead_total") == 1
    assert value(samples, "orchestrator_lock_grants_total") == 1
    assert value(samples, "orchestrator_lock_refusals_total") == 1
    assert value(samples, "orchestrator_lock_releases_total") == 1
    assert value(samples, "orchestrator_agents", state="idle") == 1
    assert value(samples, "orchestrator_agents", state="stopped") == 1
    assert value(samples, "orchestrator_active_agents") == 1
    assert value(samples, "orchestrator_tasks", state="completed") == 1
    assert value(samples, "orchestrator_tasks", state="dead") == 1
    assert value(samples, "orchestrator_pending_tasks") == 0
    assert value(samples, "orchestrator_task_queue_wait_seconds_count") == 2
    assert value(samples, "orchestrator_task_run_seconds_count") == 1
    assert value(samples, "orchestrator_task_run_seconds_sum") == pytest.approx(3.0)
    assert value(samples, "orchestrator_lock_wait_seconds_count") == 1


class Crashy(Agent):
    agent_type = "implementation"
    capabilities = frozenset({"crashy"})

    def handle(self, task):
        raise RuntimeError("boom")


def test_failures_retries_expiries_losses_and_restarts_are_counted(orch, clock):
    orch.register_agent("a1", "implementation", ["code"])
    orch.start_agent("a1")
    orch.assign_task({}, task_id="t", agent_id="a1", max_attempts=3)
    orch.heartbeat("a1")
    orch.fail_task("a1", "t", "flaky", retryable=True)
    clock.advance(1.1)  # past the 1 s retry backoff
    orch.tick()
    wait_until(lambda: orch.task("t")["status"] in {"assigned", "running"})
    orch.acquire_lock("a1", "repo", ttl_s=0.5)
    clock.advance(0.6)
    orch.tick()
    clock.advance(10.1)  # ten missed 1 s heartbeat intervals
    orch.tick()
    wait_until(lambda: orch.agent("a1")["status"] == "lost")
    orch.cancel_task("t")  # requeued by the loss; keep it away from the crashing agent
    orch.attach(Crashy("c1"))
    with pytest.raises(TaskFailed):
        orch.submit({}, capabilities={"crashy"}, max_attempts=1).result(timeout=5)
    wait_until(lambda: orch.directory.get("c1").actor is None)  # restart due in 0.1 s
    clock.advance(0.2)
    orch.tick()
    wait_until(lambda: orch.agent("c1")["restarts"] == 1)

    samples = scrape(orch)
    assert value(samples, "orchestrator_task_failures_total") == 1
    assert value(samples, "orchestrator_task_retries_total") == 1
    assert value(samples, "orchestrator_lock_expiries_total") == 1
    assert value(samples, "orchestrator_agents_lost_total") == 1
    assert value(samples, "orchestrator_agent_crashes_total") == 1
    assert value(samples, "orchestrator_agent_restarts_total") == 1
    assert value(samples, "orchestrator_tasks_cancelled_total") == 1
    assert value(samples, "orchestrator_tasks_dead_total") == 1
    assert value(samples, "orchestrator_agents", state="lost") == 1


def test_many_orchestrators_keep_separate_registries():
    with Orchestrator(Settings()) as first, Orchestrator(Settings()) as second:
        first.register_agent("only-in-first", "implementation")
        assert value(scrape(first), "orchestrator_agent_registrations_total") == 1
        assert value(scrape(second), "orchestrator_agent_registrations_total") == 0


def test_no_label_value_is_an_id(orch):
    ids = {"agent-with-a-long-id", "task-with-a-long-id", "resource-with-a-long-id"}
    orch.register_agent("agent-with-a-long-id", "implementation", ["x"])
    orch.start_agent("agent-with-a-long-id")
    orch.assign_task({}, task_id="task-with-a-long-id", agent_id="agent-with-a-long-id")
    orch.acquire_lock("agent-with-a-long-id", "resource-with-a-long-id")
    orch.metrics.observe_request("/agents/{agent_id}", "BREW", 418, 0.01)
    labels = {v for (_, pairs) in scrape(orch) for _, v in pairs}
    assert not labels & ids
    assert "OTHER" in labels and "BREW" not in labels


def test_http_requests_are_counted_by_route_template(orch):
    from falcon import testing

    from orch.http.app import create_app

    client = testing.TestClient(create_app(orch))
    client.simulate_post(
        "/agents/register", json={"agent_id": "via-http", "agent_type": "implementation"}
    )
    client.simulate_get("/agents/via-http")
    client.simulate_get("/agents/nobody")
    text = client.simulate_get("/metrics").text
    samples = {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }
    route = "/agents/{agent_id}"
    assert (
        value(samples, "orchestrator_http_requests_total", route=route, method="GET", status="2xx")
        == 1
    )
    assert (
        value(samples, "orchestrator_http_requests_total", route=route, method="GET", status="4xx")
        == 1
    )
    assert value(samples, "orchestrator_agent_registrations_total") == 1
    assert not any("via-http" in v or "nobody" in v for (_, pairs) in samples for _, v in pairs)


def test_repeated_requests_add_up_in_their_own_series(orch):
    # observe_request keeps each series' children; each must still count its own.
    for status in (200, 201, 404, 200):
        orch.metrics.observe_request("/tasks/{task_id}", "GET", status, 0.002)
    orch.metrics.observe_request("/tasks/{task_id}", "POST", 200, 0.002)
    samples = scrape(orch)
    route = "/tasks/{task_id}"
    counted = "orchestrator_http_requests_total"
    assert value(samples, counted, route=route, method="GET", status="2xx") == 3
    assert value(samples, counted, route=route, method="GET", status="4xx") == 1
    assert value(samples, counted, route=route, method="POST", status="2xx") == 1
    latency = "orchestrator_http_request_duration_seconds_count"
    assert value(samples, latency, route=route, method="GET") == 4


def test_the_sqlite_store_reports_writes_commits_failures_and_size(tmp_path):
    store = SQLiteStore(str(tmp_path / "orch.db"), busy_timeout_s=SQLITE_BUSY_TIMEOUT_S)
    with Orchestrator(Settings(), store=store) as orch:
        orch.register_agent("a1", "implementation")  # one write: record and credential
        for n in range(5):
            orch.assign_task({}, task_id=n, capabilities=["nobody-has-this"])
        on_disk = sum(p.stat().st_size for p in tmp_path.iterdir() if not p.name.endswith("shm"))

        def settled() -> dict | None:
            # The health check's probe may be mid-commit: counted once it has finished.
            samples = scrape(orch)
            commits = value(samples, "orchestrator_store_commits_total")
            timed = value(samples, "orchestrator_store_commit_seconds_count")
            return samples if commits == timed else None

        samples = wait_until(settled)
        commits = value(samples, "orchestrator_store_commits_total")
        assert value(samples, "orchestrator_store_writes_total") == 6
        assert value(samples, "orchestrator_store_write_failures_total") == 0
        assert value(samples, "orchestrator_store_queued_writes") == 0
        assert commits >= 1
        assert value(samples, "orchestrator_store_commit_seconds_bucket", le="+Inf") == commits
        assert value(samples, "orchestrator_store_commit_seconds_sum") > 0
        assert value(samples, "orchestrator_store_bytes") >= on_disk > 0  # files only grow

        with LockedElsewhere(store.path), pytest.raises(StoreError, match="database is locked"):
            orch.assign_task({}, task_id="lost", capabilities=["nobody-has-this"])
        store.fail_writes = "disk full"
        with pytest.raises(StoreError, match="disk full"):
            orch.assign_task({}, task_id="refused", capabilities=["nobody-has-this"])
        store.fail_writes = None
        samples = scrape(orch)
        assert value(samples, "orchestrator_store_write_failures_total") == 2
        assert value(samples, "orchestrator_store_writes_total") == 6


def test_the_memory_store_reports_writes_and_failures_only(orch):
    orch.register_agent("a1", "implementation")
    orch.store.fail_writes = "disk full"
    with pytest.raises(StoreError):
        orch.assign_task({}, task_id=1)
    orch.store.fail_writes = None
    samples = scrape(orch)
    assert value(samples, "orchestrator_store_writes_total") == orch.store.writes > 0
    assert value(samples, "orchestrator_store_write_failures_total") == 1
    names = {name for name, _ in samples}
    assert "orchestrator_store_commits_total" not in names
    assert "orchestrator_store_bytes" not in names


#: Each signal, its data, and the sample that must move by exactly one.
SIGNALS = [
    ("heartbeat", {}, "orchestrator_heartbeats_total", {}),
    ("lock.refused", {}, "orchestrator_lock_refusals_total", {}),
    ("lock.waited", {"seconds": 0.25}, "orchestrator_lock_wait_seconds_count", {}),
    ("http.answer_withdrawn", {}, "orchestrator_http_answers_withdrawn_total", {}),
    ("intake.polled", {}, "orchestrator_intake_polls_total", {}),
    ("intake.error", {}, "orchestrator_intake_errors_total", {}),
    (
        "http.request",
        {"route": "/tasks/{task_id}", "method": "GET", "status": 404, "seconds": 0.01},
        "orchestrator_http_requests_total",
        {"route": "/tasks/{task_id}", "method": "GET", "status": "4xx"},
    ),
]


@pytest.mark.parametrize(
    ("signal_type", "data", "sample", "labels"), SIGNALS, ids=[s[0] for s in SIGNALS]
)
def test_each_signal_moves_its_own_metric_and_no_other(orch, signal_type, data, sample, labels):
    before = scrape(orch)
    orch.events_log.signal(signal_type, **data)
    after = scrape(orch)
    key = (sample, tuple(sorted(labels.items())))
    assert after[key] - before.get(key, 0.0) == 1
    moved = {
        name
        for (name, sample_labels), count in after.items()
        if count != before.get((name, sample_labels), 0.0) and not name.endswith("_created")
    }
    # Only the signal's own family moved (a histogram moves its count, sum and buckets).
    family = sample.removesuffix("_total").removesuffix("_count")
    if signal_type == "http.request":
        family = "orchestrator_http_request"
    assert all(name.startswith(family) for name in moved), moved


def test_the_durations_signals_carry_are_observed(orch):
    orch.events_log.signal("lock.waited", seconds=0.25)
    orch.events_log.signal("http.request", route="/health", method="GET", status=200, seconds=0.125)
    samples = scrape(orch)
    assert value(samples, "orchestrator_lock_wait_seconds_sum") == 0.25
    assert value(samples, "orchestrator_lock_wait_seconds_bucket", le="0.25") == 1
    latency = "orchestrator_http_request_duration_seconds_sum"
    assert value(samples, latency, route="/health", method="GET") == 0.125


def test_an_unknown_signal_moves_nothing(orch):
    before = scrape(orch)
    orch.events_log.signal("something.new", n=1)
    assert scrape(orch) == before


def test_no_signal_becomes_an_event(orch):
    seq = orch.events_log.last_seq
    for signal_type, data, _, _ in SIGNALS:
        orch.events_log.signal(signal_type, **data)
    assert orch.events_log.last_seq == seq  # signals are neither numbered nor kept
    assert orch.events(seq)["events"] == []
