"""Locks over HTTP: leases with fencing tokens, renew/release, multi-resource, waiting."""

import threading

from tests.api.conftest import assert_problem, bearer, register
from tests.conftest import wait_until

GRANT_KEYS = {"resource", "mode", "agent_id", "fencing_token", "expires_at"}


def acquire(client, token, resource, **body):
    return client.simulate_post(f"/locks/{resource}/acquire", json=body, headers=bearer(token))


def test_acquire_answers_a_grant(client, clock):
    token = register(client, "a1")
    granted = acquire(client, token, "repo", ttl_s=10)
    assert granted.status_code == 200
    grant = granted.json
    assert grant.keys() >= GRANT_KEYS
    assert grant["resource"] == "repo" and grant["mode"] == "exclusive"
    assert grant["agent_id"] == "a1" and grant["fencing_token"] == 1
    assert grant["expires_at"] == clock.time() + 10


def test_a_held_lock_is_refused_with_409_naming_the_holder(client):
    first = register(client, "a1")
    second = register(client, "a2")
    acquire(client, first, "repo")
    refused = acquire(client, second, "repo")
    body = assert_problem(refused, 409, "conflict")
    assert "a1" in body["detail"]
    assert [h["agent_id"] for h in body["holders"]] == ["a1"]
    assert body["holders"][0]["fencing_token"] == 1
    [lock] = client.simulate_get("/locks").json["locks"]
    assert [h["agent_id"] for h in lock["holders"]] == ["a1"]


def test_shared_holders_coexist_and_block_an_exclusive_one(client):
    tokens = {name: register(client, name) for name in ("r1", "r2", "w1")}
    one = acquire(client, tokens["r1"], "docs", mode="shared")
    two = acquire(client, tokens["r2"], "docs", mode="shared")
    assert one.status_code == 200 and two.status_code == 200
    assert two.json["fencing_token"] > one.json["fencing_token"]
    body = assert_problem(acquire(client, tokens["w1"], "docs"), 409, "conflict")
    assert sorted(h["agent_id"] for h in body["holders"]) == ["r1", "r2"]
    listing = client.simulate_get("/locks").json
    assert listing["count"] == 1
    assert listing["locks"][0]["mode"] == "shared"
    assert len(listing["locks"][0]["holders"]) == 2


def test_renew_and_release_need_the_current_fencing_token(client, clock):
    token = register(client, "a1")
    grant = acquire(client, token, "repo", ttl_s=10).json
    fencing = grant["fencing_token"]
    clock.advance(5)
    renewed = client.simulate_post(
        "/locks/repo/renew", json={"fencing_token": fencing, "ttl_s": 20}, headers=bearer(token)
    )
    assert renewed.status_code == 200
    assert renewed.json["fencing_token"] == fencing
    assert renewed.json["expires_at"] == clock.time() + 20
    stale = client.simulate_post(
        "/locks/repo/renew", json={"fencing_token": fencing + 1}, headers=bearer(token)
    )
    assert_problem(stale, 409, "conflict")
    wrong_release = client.simulate_post(
        "/locks/repo/release", json={"fencing_token": fencing + 1}, headers=bearer(token)
    )
    assert_problem(wrong_release, 409, "conflict")
    released = client.simulate_post(
        "/locks/repo/release", json={"fencing_token": fencing}, headers=bearer(token)
    )
    assert released.status_code == 200
    assert released.json == {"resource": "repo", "status": "released"}
    assert client.simulate_get("/locks").json == {"locks": [], "count": 0}
    again = client.simulate_post(
        "/locks/repo/release", json={"fencing_token": fencing}, headers=bearer(token)
    )
    assert_problem(again, 404, "not_found")
    late_renew = client.simulate_post(
        "/locks/repo/renew", json={"fencing_token": fencing}, headers=bearer(token)
    )
    assert_problem(late_renew, 404, "not_found")


def test_fencing_tokens_increase_per_resource(client):
    first = register(client, "a1")
    second = register(client, "a2")
    tokens = []
    for token in (first, second, first):
        grant = acquire(client, token, "repo").json
        tokens.append(grant["fencing_token"])
        client.simulate_post(
            "/locks/repo/release",
            json={"fencing_token": grant["fencing_token"]},
            headers=bearer(token),
        )
    assert tokens == [1, 2, 3]
    assert acquire(client, first, "other").json["fencing_token"] == 1
    assert [lock["fencing_token"] for lock in client.simulate_get("/locks").json["locks"]] == [1]


def test_an_expired_lease_is_gone(client, clock, orch):
    first = register(client, "a1")
    second = register(client, "a2")
    fencing = acquire(client, first, "repo", ttl_s=5).json["fencing_token"]
    clock.advance(4)
    orch.tick()
    assert_problem(acquire(client, second, "repo"), 409)
    clock.advance(2)
    orch.tick()
    assert client.simulate_get("/locks").json["locks"] == []
    renew = client.simulate_post(
        "/locks/repo/renew", json={"fencing_token": fencing}, headers=bearer(first)
    )
    assert_problem(renew, 404, "not_found")
    assert acquire(client, second, "repo").json["fencing_token"] == fencing + 1


def test_multi_resource_acquire_is_all_or_nothing(client):
    first = register(client, "a1")
    second = register(client, "a2")
    both = client.simulate_post(
        "/locks/acquire",
        json={"resources": [{"resource": "a"}, {"resource": "b", "mode": "shared"}], "ttl_s": 60},
        headers=bearer(first),
    )
    assert both.status_code == 200
    grants = both.json["grants"]
    assert [(g["resource"], g["mode"], g["agent_id"]) for g in grants] == [
        ("a", "exclusive", "a1"),
        ("b", "shared", "a1"),
    ]
    refused = client.simulate_post(
        "/locks/acquire",
        json={"resources": [{"resource": "c"}, {"resource": "a"}]},
        headers=bearer(second),
    )
    body = assert_problem(refused, 409, "conflict")
    assert [h["agent_id"] for h in body["holders"]] == ["a1"]
    held = {lock["resource"] for lock in client.simulate_get("/locks").json["locks"]}
    assert held == {"a", "b"}  # "c" was not taken alone
    shared_too = client.simulate_post(
        "/locks/acquire",
        json={"resources": [{"resource": "b", "mode": "shared"}, {"resource": "c"}]},
        headers=bearer(second),
    )
    assert shared_too.status_code == 200


def test_multi_resource_acquire_refuses_bad_requests(client):
    token = register(client, "a1")
    for body, field in [
        ({}, "resources"),
        ({"resources": []}, "resources"),
        ({"resources": [{"resource": "x"}, {"resource": "x"}]}, "resources"),
        ({"resources": [{"mode": "shared"}]}, "resources[0].resource"),
        ({"resources": [{"resource": "x", "mode": "sideways"}]}, "resources[0].mode"),
        ({"resources": [{"resource": "x y"}]}, "resources[0].resource"),
        ({"resources": [{"resource": f"r{i}"} for i in range(33)]}, "resources"),
    ]:
        answer = client.simulate_post("/locks/acquire", json=body, headers=bearer(token))
        assert_problem(answer, 400, "invalid", field)
    assert client.simulate_get("/locks").json["locks"] == []


def test_acquire_refuses_bad_bodies_and_names(client):
    token = register(client, "a1")
    for body, field in [
        ({"mode": "sideways"}, "mode"),
        ({"ttl_s": 0}, "ttl_s"),
        ({"ttl_s": "long"}, "ttl_s"),
        ({"ttl_s": 10_000}, "ttl_s"),
        ({"wait_s": -1}, "wait_s"),
        ({"wait_s": 31}, "wait_s"),
        ({"agent_id": "a b"}, "agent_id"),
    ]:
        assert_problem(acquire(client, token, "repo", **body), 400, "invalid", field)
    assert_problem(acquire(client, token, "a%20b"), 400, "invalid", "resource")
    assert_problem(acquire(client, token, "r" * 129), 400, "invalid", "resource")
    for path, body, field in [
        ("/locks/repo/renew", {}, "fencing_token"),
        ("/locks/repo/renew", {"fencing_token": 0}, "fencing_token"),
        ("/locks/repo/renew", {"fencing_token": 1, "ttl_s": -1}, "ttl_s"),
        ("/locks/repo/release", {}, "fencing_token"),
        ("/locks/repo/release", {"fencing_token": "1"}, "fencing_token"),
    ]:
        answer = client.simulate_post(path, json=body, headers=bearer(token))
        assert_problem(answer, 400, "invalid", field)
    assert client.simulate_get("/locks").json["locks"] == []


def test_a_waiting_acquire_is_served_when_the_holder_releases(client):
    first = register(client, "a1")
    second = register(client, "a2")
    fencing = acquire(client, first, "repo").json["fencing_token"]
    answers = []
    waiter = threading.Thread(
        target=lambda: answers.append(acquire(client, second, "repo", wait_s=10)), daemon=True
    )
    waiter.start()
    wait_until(lambda: client.simulate_get("/locks").json["locks"][0]["waiters"])
    [lock] = client.simulate_get("/locks").json["locks"]
    assert lock["waiters"] == [{"agent_id": "a2", "mode": "exclusive"}]
    client.simulate_post(
        "/locks/repo/release", json={"fencing_token": fencing}, headers=bearer(first)
    )
    waiter.join(10)
    [answer] = answers
    assert answer.status_code == 200
    assert answer.json["agent_id"] == "a2" and answer.json["fencing_token"] == fencing + 1


def test_a_wait_that_runs_out_is_409(client, clock, orch):
    first = register(client, "a1")
    second = register(client, "a2")
    acquire(client, first, "repo")
    answers = []
    waiter = threading.Thread(
        target=lambda: answers.append(acquire(client, second, "repo", wait_s=2)), daemon=True
    )
    waiter.start()
    wait_until(lambda: client.simulate_get("/locks").json["locks"][0]["waiters"])
    clock.advance(2.5)
    orch.tick()
    waiter.join(10)
    [answer] = answers
    assert [h["agent_id"] for h in assert_problem(answer, 409, "conflict")["holders"]] == ["a1"]
    assert client.simulate_get("/locks").json["locks"][0]["waiters"] == []


def test_locks_of_a_deregistered_agent_are_released(client):
    token = register(client, "a1")
    acquire(client, token, "repo")
    acquire(client, token, "docs", mode="shared")
    assert client.simulate_get("/locks").json["count"] == 2
    client.simulate_delete("/agents/a1")
    wait_until(lambda: client.simulate_get("/locks").json["count"] == 0)


def test_locks_of_a_stopped_agent_are_released(client):
    token = register(client, "a1", start=True)
    acquire(client, token, "repo")
    client.simulate_post("/agents/a1/stop")
    wait_until(lambda: client.simulate_get("/locks").json["count"] == 0)


def test_list_locks_shows_holders_waiters_and_counter(client):
    assert client.simulate_get("/locks").json == {"locks": [], "count": 0}
    token = register(client, "a1")
    acquire(client, token, "b-res")
    acquire(client, token, "a-res", mode="shared")
    listing = client.simulate_get("/locks").json
    assert listing["count"] == 2
    assert [lock["resource"] for lock in listing["locks"]] == ["a-res", "b-res"]
    first = listing["locks"][0]
    assert first["mode"] == "shared" and first["waiters"] == [] and first["fencing_token"] == 1
    assert first["holders"][0].keys() >= GRANT_KEYS
