"""``OrchestratorClient`` (orch/client/endpoint.py) against the real server: every endpoint."""

from __future__ import annotations

import socket
from collections.abc import Callable

import pytest

from orch.client import (
    Heartbeat,
    LockGrant,
    OrchestratorClient,
    Registration,
    Unreachable,
)
from orch.client.endpoint import parse_urls
from orch.errors import (
    Conflict,
    Forbidden,
    Invalid,
    NotFound,
    Timeout,
    Unauthorized,
    Unavailable,
    VersionMismatch,
)
from tests.sdk.conftest import ADMIN_TOKEN


def _register(admin: OrchestratorClient, agent_id: str, *capabilities: str) -> Registration:
    registration = admin.register_agent(agent_id, "implementation", capabilities=capabilities)
    admin.start_agent(agent_id)
    return registration


def test_agent_and_task_endpoints_round_trip(admin: OrchestratorClient, name: Callable):
    agent_id, capability = name("rt-agent"), name("rt-cap")
    registration = admin.register_agent(
        agent_id,
        "implementation",
        capabilities=[capability],
        metadata={"host": "a"},
        project_id="p1",
        max_concurrent_tasks=2,
    )
    assert registration.status == "registered" and registration.token
    assert registration.token not in repr(registration)
    assert admin.start_agent(agent_id)["status"] == "started"
    assert admin.start_agent(agent_id)["status"] == "already_active"
    shown = admin.agent(agent_id)
    assert shown["metadata"] == {"host": "a"} and shown["config"]["max_concurrent_tasks"] == 2
    listed = admin.agents(capability=capability)
    assert [a["agent_id"] for a in listed["agents"]] == [agent_id]

    first = admin.assign_task({"n": 1}, task_id=name("t"), capabilities=[capability])
    assert first["status"] == "assigned" and first["agent_id"] == agent_id
    second = admin.assign_task({"n": 2}, capabilities=[capability], priority=5)
    third = admin.assign_task({"n": 3}, capabilities=[capability])
    assert third["status"] == "queued"
    pending = admin.pending_tasks()
    assert third["task_id"] in [t["task_id"] for t in pending["pending_tasks"]]

    beat = admin.heartbeat(agent_id, token=registration.token)
    assert isinstance(beat, Heartbeat) and beat.heartbeat_interval_s == 0.2
    assert {a.task_id for a in beat.assignments} == {first["task_id"], second["task_id"]}
    assert {a.attempt for a in beat.assignments} == {1}
    own = admin.agent_tasks(agent_id, token=registration.token)
    assert len(own["tasks"]) == 2

    token = registration.token
    done = admin.complete_task(agent_id, first["task_id"], {"ok": True}, token=token)
    assert done == {"task_id": first["task_id"], "status": "completed"}
    failed = admin.fail_task(agent_id, second["task_id"], "broken", retryable=False, token=token)
    assert failed["status"] in ("failed", "dead")
    assert admin.task(first["task_id"])["result"] == {"ok": True}
    assert admin.wait_for_task(second["task_id"], timeout_s=5)["status"] == "dead"
    assert admin.cancel_task(third["task_id"])["status"] == "cancelled"
    mine = admin.tasks(agent_id=agent_id)
    assert {t["task_id"] for t in mine} >= {first["task_id"], second["task_id"]}

    assert admin.stop_agent(agent_id, drain=False)["status"] == "stopped"
    assert admin.deregister_agent(agent_id)["status"] == "deregistered"
    with pytest.raises(NotFound):
        admin.agent(agent_id)


def test_config_with_versions_and_defaults(admin: OrchestratorClient, name: Callable):
    agent_id = name("cfg-agent")
    admin.register_agent(agent_id, "implementation")
    config = admin.agent_config(agent_id)
    assert config["version"] == 1
    patched = admin.update_agent_config(agent_id, {"settings": {"model": "x"}}, expected_version=1)
    assert patched["version"] == 2 and patched["settings"] == {"model": "x"}
    with pytest.raises(VersionMismatch) as stale:
        admin.update_agent_config(agent_id, {"max_concurrent_tasks": 3}, expected_version=1)
    assert stale.value.status == 412 and stale.value.details["version"] == 2
    replaced = admin.update_agent_config(agent_id, {"max_concurrent_tasks": 3}, replace_all=True)
    assert replaced["max_concurrent_tasks"] == 3 and replaced["settings"] == {}
    with pytest.raises(Invalid) as unknown:
        admin.update_agent_config(agent_id, {"colour": "red"})
    assert unknown.value.field == "colour"
    defaults = admin.config_defaults()
    assert defaults["heartbeat_interval_s"] == 0.2
    assert admin.set_config_defaults({"task_timeout_s": 600})["task_timeout_s"] == 600
    admin.set_config_defaults({"task_timeout_s": defaults["task_timeout_s"]})


def test_locks_grant_renew_release_and_refuse_with_holders(
    admin: OrchestratorClient, name: Callable
):
    one, two = name("lock-a"), name("lock-b")
    token_one = _register(admin, one).token
    token_two = _register(admin, two).token
    resource = name("res")
    grant = admin.acquire_lock(one, resource, token=token_one, ttl_s=5)
    assert isinstance(grant, LockGrant) and grant.agent_id == one and grant.fencing_token >= 1
    with pytest.raises(Conflict) as refused:
        admin.acquire_lock(two, resource, token=token_two)
    assert [h["agent_id"] for h in refused.value.details["holders"]] == [one]
    renewed = admin.renew_lock(one, resource, grant.fencing_token, 10, token=token_one)
    assert renewed.expires_at > grant.expires_at
    listed = [lock for lock in admin.locks() if lock["resource"] == resource]
    assert listed[0]["holders"][0]["fencing_token"] == grant.fencing_token
    answer = admin.release_lock(one, resource, grant.fencing_token, token=token_one)
    assert answer["status"] == "released"
    grants = admin.acquire_locks(
        two, [resource, (name("shared"), "shared")], token=token_two, ttl_s=5
    )
    assert [g.mode for g in grants] == ["exclusive", "shared"]
    assert grants[0].fencing_token > grant.fencing_token


def test_monitoring_endpoints(admin: OrchestratorClient, name: Callable):
    agent_id = name("mon")
    admin.register_agent(agent_id, "implementation")
    assert admin.health()["status"] in ("healthy", "degraded")
    assert admin.stats()["total_agents"] >= 1
    assert "orchestrator_active_agents" in admin.metrics()
    assert admin.metrics(openmetrics=True).rstrip().endswith("# EOF")
    assert "/agents/register" in admin.openapi()["paths"]
    feed = admin.events(0, limit=1000)
    assert any(e.get("agent_id") == agent_id for e in feed["events"])
    # A long-poll answers as soon as the next event exists.
    after = admin.events(feed["next"])["next"]
    admin.start_agent(agent_id)
    waited = admin.events(after, wait_s=5)
    assert waited["events"] and waited["next"] > after


def test_server_errors_come_back_as_domain_errors(
    url: str, admin: OrchestratorClient, name: Callable
):
    with pytest.raises(NotFound) as missing:
        admin.task(name("no-such-task"))
    assert missing.value.status == 404 and "no task" in missing.value.message

    with pytest.raises(Invalid) as invalid:
        admin.assign_task(priority=11)
    assert invalid.value.field == "priority"
    assert invalid.value.message == "priority: Expected `int` <= 10"

    agent_id = name("dup")
    registration = _register(admin, agent_id)
    with pytest.raises(Conflict) as duplicate:
        admin.register_agent(agent_id, "implementation")
    assert "already registered" in duplicate.value.message

    with OrchestratorClient(url) as anonymous, pytest.raises(Unauthorized):
        anonymous.stats()
    with OrchestratorClient(url, token=registration.token) as as_agent, pytest.raises(Forbidden):
        as_agent.stats()
    other = _register(admin, name("other"))
    with pytest.raises(Forbidden):
        admin.heartbeat(agent_id, token=other.token)

    huge = {"blob": "x" * (1024 * 1024 + 1)}
    with pytest.raises(Invalid) as too_large:
        admin.assign_task(huge)
    assert "1 MiB" in too_large.value.message or "limit" in too_large.value.message

    with pytest.raises(Timeout) as slow:
        admin.wait_for_task(admin.assign_task(capabilities=[name("nobody")])["task_id"], 0.2)
    assert slow.value.details["status"] == "pending"


def test_unreachable_server_is_one_clear_error():
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # nothing listens on it once closed
    dead_url = f"http://127.0.0.1:{port}"
    with (
        OrchestratorClient(dead_url, timeout_s=2, failover_wait_s=0) as client,
        pytest.raises(Unreachable) as unreachable,
    ):
        client.health()
    assert isinstance(unreachable.value, Unavailable)
    assert unreachable.value.message == f"cannot connect to {dead_url} (connection refused)"


def test_client_is_not_confused_by_the_admin_token_on_public_routes(url: str):
    with OrchestratorClient(url, token=ADMIN_TOKEN) as client:
        assert client.health()["status"] in ("healthy", "degraded")


@pytest.mark.parametrize("url", ["localhost:8005", "127.0.0.1:8005", "ftp://host", "http:/host"])
def test_a_url_the_client_cannot_use_is_refused_naming_it(url: str):
    # Not requests' "No connection adapters were found" at the first call.
    with pytest.raises(Invalid) as info:
        OrchestratorClient(url)
    assert info.value.field == "url"
    assert info.value.message == (
        f"url: {url!r} is not an orchestrator URL; give http:// or https:// and a host,"
        " like http://127.0.0.1:8005"
    )


def test_a_usable_url_loses_only_its_trailing_slash():
    assert OrchestratorClient(" http://orch.internal:8005/ ").url == "http://orch.internal:8005"


def test_urls_are_listed_with_commas_and_checked():
    assert parse_urls("http://a:1/, https://b:2 ,") == ("http://a:1", "https://b:2")
    assert parse_urls(["http://a:1"]) == ("http://a:1",)
    with pytest.raises(Invalid) as no_url:
        OrchestratorClient(" , ")
    assert no_url.value.field == "url"
    with pytest.raises(Invalid, match="'a:1' is not an orchestrator URL"):
        OrchestratorClient("a:1")
    with pytest.raises(Invalid) as negative:
        OrchestratorClient("http://a:1", failover_wait_s=-1)
    assert negative.value.field == "failover_wait_s"
    client = OrchestratorClient("http://a:1,http://b:2")
    assert (client.url, client.urls) == ("http://a:1", ("http://a:1", "http://b:2"))
    assert repr(client) == "OrchestratorClient('http://a:1,http://b:2')"


@pytest.mark.parametrize("resource", ["..", ".", ""])
def test_an_id_of_dots_only_is_refused_before_it_can_name_another_endpoint(
    admin: OrchestratorClient, resource: str
):
    # requests would turn /locks/../acquire into /acquire, another endpoint.
    with pytest.raises(Invalid, match="cannot be an id"):
        admin.acquire_lock("nobody", resource, token="t")
    with pytest.raises(Invalid, match="cannot be an id"):
        admin.agent(resource)
