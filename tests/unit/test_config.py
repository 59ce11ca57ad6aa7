"""orch/config.py: settings read once from the environment; a bad value is one clear line."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from orch.config import (
    ENVIRONMENT_VARIABLES,
    SERVICE_DB,
    SERVICE_GC_THRESHOLDS,
    ConfigError,
    Settings,
)

README = Path(__file__).resolve().parents[2] / "README.md"


def test_the_embedded_defaults_differ_from_the_services_only_in_file_and_collector():
    embedded, service = Settings(), Settings.from_env({})
    assert (embedded.db, embedded.gc_thresholds) == (":memory:", None)
    assert (service.db, service.gc_thresholds) == (SERVICE_DB, SERVICE_GC_THRESHOLDS)
    assert dataclasses.replace(service, db=":memory:", gc_thresholds=None) == embedded


def test_settings_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        Settings().port = 1  # type: ignore[misc]


@pytest.mark.parametrize(
    ("variable", "raw", "attr", "parsed"),
    [
        ("ORCHESTRATOR_PORT", "0", "port", 0),
        ("ORCHESTRATOR_HOST", " 0.0.0.0 ", "host", "0.0.0.0"),
        ("TODO_SERVICE_URL", "http://todo:8004/", "todo_service_url", "http://todo:8004"),
        ("TODO_SERVICE_URL", "", "todo_service_url", ""),  # empty turns intake off
        ("LOG_LEVEL", "debug", "log_level", "DEBUG"),
        ("ORCH_LOG_FORMAT", "JSON", "log_format", "json"),
        ("ORCH_ACCESS_LOG", "yes", "access_log", True),
        ("ORCH_HTTP_INLINE", "off", "http_inline", False),
        ("ORCH_DB_SYNC", "Normal", "db_sync", "normal"),
        ("ORCH_GC_THRESHOLDS", "off", "gc_thresholds", None),
        ("ORCH_GC_THRESHOLDS", "1000,20,20", "gc_thresholds", (1000, 20, 20)),
        ("ORCH_ADMIN_TOKEN", "", "admin_token", None),  # empty means no token, not ""
        ("ORCH_HEARTBEAT_INTERVAL_S", "0.5", "heartbeat_interval_s", 0.5),
        ("ORCH_HTTP_THREADS", "16", "http_threads", 16),
        ("ORCH_TODO_DEAD_TASKS", " Cooldown ", "todo_dead_tasks", "cooldown"),
        ("ORCH_TODO_COOLDOWN_S", "60", "todo_cooldown_s", 60.0),
        ("ORCH_TODO_OUTCOME_MAX_FAILURES", "3", "todo_outcome_max_failures", 3),
    ],
)
def test_each_kind_of_value_is_parsed(variable, raw, attr, parsed):
    assert getattr(Settings.from_env({variable: raw}), attr) == parsed


@pytest.mark.parametrize(
    ("variable", "raw", "reason"),
    [
        ("ORCHESTRATOR_PORT", "70000", "out of range; give a port number from 0 to 65535"),
        ("ORCHESTRATOR_PORT", "abc", "not a whole number; give a port number from 0 to 65535"),
        ("ORCHESTRATOR_HOST", "  ", "must not be empty"),
        ("TODO_SERVICE_URL", "todo:8004", "http:// or https://"),
        ("LOG_LEVEL", "loud", "one of DEBUG"),
        ("ORCH_LOG_FORMAT", "xml", "'text' or 'json'"),
        ("ORCH_ACCESS_LOG", "maybe", "true or false"),
        ("ORCH_DB_SYNC", "off", "'full' or 'normal'"),
        ("ORCH_GC_THRESHOLDS", "700,10", "three positive integers"),
        ("ORCH_GC_THRESHOLDS", "700,0,10", "three positive integers"),
        ("ORCH_HTTP_THREADS", "0", "too small; give a whole number of at least 1"),
        ("ORCH_HTTP_THREADS", "2.5", "not a whole number; give a whole number of at least 1"),
        ("ORCH_TASK_TIMEOUT_S", "-1", "not above 0; give a number above 0"),
        ("ORCH_TASK_TIMEOUT_S", "soon", "not a number; give a number above 0"),
        ("ORCH_TASK_TIMEOUT_S", "nan", "not above 0"),
        ("ORCH_TASK_TIMEOUT_S", "inf", "not above 0"),
        ("ORCH_TODO_DEAD_TASKS", "retry", "'block' (mark it blocked) or 'cooldown'"),
        ("ORCH_TODO_OUTCOME_MAX_FAILURES", "0", "at least 1"),
    ],
)
def test_a_bad_value_fails_with_one_line_naming_the_variable(variable, raw, reason):
    with pytest.raises(ConfigError) as info:
        Settings.from_env({variable: raw})
    message = str(info.value)
    assert message.startswith(f"{variable}={raw!r}: ") and reason in message
    assert "\n" not in message
    # Python's own wording names neither the value's fault nor what is allowed.
    assert "invalid literal" not in message and "could not convert" not in message


@pytest.mark.parametrize(
    ("environ", "named"),
    [
        (
            {"ORCH_UNHEALTHY_AFTER_MISSED": "5", "ORCH_LOST_AFTER_MISSED": "5"},
            "ORCH_LOST_AFTER_MISSED",
        ),
        ({"ORCH_HEARTBEAT_INTERVAL_S": "0.05"}, "ORCH_HEARTBEAT_INTERVAL_S"),
        ({"ORCH_HTTP_MAX_HEADER_BYTES": "512"}, "ORCH_HTTP_MAX_HEADER_BYTES"),
        ({"ORCH_HTTP_MAX_BODY_BYTES": "512"}, "ORCH_HTTP_MAX_BODY_BYTES"),
        (
            {"ORCH_TODO_COOLDOWN_S": "600", "ORCH_TODO_COOLDOWN_MAX_S": "60"},
            "ORCH_TODO_COOLDOWN_MAX_S",
        ),
        ({"ORCH_LEADER_LEASE_S": "0.1"}, "ORCH_LEADER_LEASE_S"),
        ({"ORCH_LEADER_LEASE_S": "301"}, "ORCH_LEADER_LEASE_S"),
    ],
)
def test_combinations_no_single_parser_sees_are_refused(environ, named):
    with pytest.raises(ConfigError, match=named):
        Settings.from_env(environ)


def test_the_embedded_api_gets_the_same_checks_when_it_asks():
    with pytest.raises(ConfigError, match=r"at least 0\.1"):
        Settings(heartbeat_interval_s=0.01).validate()
    Settings().validate()


def test_the_admin_token_is_never_shown():
    settings = Settings.from_env({"ORCH_ADMIN_TOKEN": "s3cret-admin-token"})
    assert settings.admin_token == "s3cret-admin-token"
    assert "s3cret" not in repr(settings)
    described = settings.describe()
    assert described["admin_token"] == "***" and "s3cret" not in str(described)
    assert Settings().describe()["admin_token"] is None
    assert set(described) == {f.name for f in dataclasses.fields(Settings)}


def test_the_process_environment_is_read_when_none_is_given(monkeypatch):
    monkeypatch.setenv("ORCHESTRATOR_PORT", "9123")
    assert Settings.from_env().port == 9123


def test_every_variable_read_is_documented_in_the_readme():
    readme = README.read_text()
    assert [name for name in ENVIRONMENT_VARIABLES if name not in readme] == []


def test_a_cluster_node_reads_its_lease_and_advertised_url():
    settings = Settings.from_env(
        {"ORCH_LEADER_LEASE_S": "2.5", "ORCH_ADVERTISE_URL": "http://node1:8005"}
    )
    assert (settings.leader_lease_s, settings.advertise_url) == (2.5, "http://node1:8005")
    with pytest.raises(ConfigError, match="ORCH_ADVERTISE_URL"):
        Settings.from_env({"ORCH_ADVERTISE_URL": "node1:8005"})
