"""kill -9 in the middle of concurrent work: nothing acknowledged is lost.

Several threads register agents, submit tasks, complete them and take locks against
the real server on a SQLite file (and on PostgreSQL), recording every answer the
server acknowledged. The server is killed with SIGKILL at a random moment, started
again on the same store,
and every acknowledged change must be there; fencing tokens must keep increasing.
"""

from __future__ import annotations

import random
import threading
import time
from collections import defaultdict
from collections.abc import Callable

import psycopg
import requests

from tests.conftest import wait_until
from tests.e2e.conftest import start_server
from tests.pg.server import Databases, PrivateServer

WORKERS = 4


class Ledger:
    """What the server acknowledged, per kind of change (thread-safe appends)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.agents: set[str] = set()
        self.tasks: set[str] = set()
        self.completed: set[str] = set()
        self.held: dict[str, tuple[str, int]] = {}  # resource -> (agent, token) last granted
        self.released: set[tuple[str, int]] = set()
        # Releases sent: one whose answer never came may or may not have happened.
        self.release_sent: set[tuple[str, int]] = set()
        self.max_token: dict[str, int] = defaultdict(int)


def drive(url: str, ledger: Ledger, stop: threading.Event, tokens: dict[str, str]) -> list:
    errors: list[BaseException] = []

    def guarded(fn):
        def run(*args):
            try:
                fn(*args)
            except (requests.ConnectionError, requests.exceptions.ChunkedEncodingError):
                return  # the server died: answers from here on were never acknowledged
            except BaseException as exc:
                errors.append(exc)

        return run

    @guarded
    def register(n: int) -> None:
        i = 0
        while not stop.is_set():
            agent_id = f"r{n}-{i}"
            i += 1
            answer = requests.post(
                f"{url}/agents/register",
                json={"agent_id": agent_id, "agent_type": "idle"},
                timeout=10,
            )
            if answer.status_code == 200:
                with ledger.lock:
                    ledger.agents.add(agent_id)

    @guarded
    def submit(n: int) -> None:
        i = 0
        while not stop.is_set():
            task_id = f"t{n}-{i}"
            i += 1
            answer = requests.post(
                f"{url}/tasks/assign",
                json={"task_id": task_id, "capabilities": ["work"], "payload": {"i": i}},
                timeout=10,
            )
            if answer.status_code in (200, 202):
                with ledger.lock:
                    ledger.tasks.add(task_id)

    @guarded
    def work(agent_id: str) -> None:
        auth = {"Authorization": f"Bearer {tokens[agent_id]}"}
        while not stop.is_set():
            beat = requests.post(f"{url}/agents/{agent_id}/heartbeat", headers=auth, timeout=10)
            for assignment in beat.json()["assignments"]:
                task_id = assignment["task_id"]
                done = requests.post(
                    f"{url}/tasks/{task_id}/complete", json={}, headers=auth, timeout=10
                )
                if done.status_code == 200:
                    with ledger.lock:
                        ledger.completed.add(task_id)

    @guarded
    def lock(agent_id: str) -> None:
        auth = {"Authorization": f"Bearer {tokens[agent_id]}"}
        rng = random.Random(agent_id)
        while not stop.is_set():
            resource = f"res-{rng.randrange(3)}"
            grant = requests.post(
                f"{url}/locks/{resource}/acquire",
                json={"ttl_s": 600, "wait_s": 0.2},
                headers=auth,
                timeout=10,
            )
            if grant.status_code != 200:
                continue
            token = grant.json()["fencing_token"]
            with ledger.lock:
                ledger.held[resource] = (agent_id, token)
                ledger.max_token[resource] = max(ledger.max_token[resource], token)
            # Hold the lease a while, so the kill may land while it is held: without
            # this the release follows at once and no acknowledged grant is ever checked.
            time.sleep(rng.uniform(0.02, 0.1))
            if stop.is_set():
                return  # killed while held: this grant must be there after the restart
            with ledger.lock:
                ledger.release_sent.add((resource, token))
            released = requests.post(
                f"{url}/locks/{resource}/release",
                json={"fencing_token": token},
                headers=auth,
                timeout=10,
            )
            if released.status_code == 200:
                with ledger.lock:
                    ledger.released.add((resource, token))

    threads = [threading.Thread(target=register, args=(n,)) for n in range(2)]
    threads += [threading.Thread(target=submit, args=(n,)) for n in range(2)]
    threads += [threading.Thread(target=work, args=(f"w{n}",)) for n in range(WORKERS)]
    threads += [threading.Thread(target=lock, args=(f"l{n}",)) for n in range(2)]
    for thread in threads:
        thread.start()
    return threads, errors


def test_nothing_acknowledged_is_lost_after_sigkill(tmp_path):
    crash_and_check({"ORCH_DB": str(tmp_path / "crash.db"), "ORCH_DB_SYNC": "full"})


def test_nothing_acknowledged_is_lost_after_sigkill_on_postgresql(pg_url):
    crash_and_check({"ORCH_DB": pg_url})
    with psycopg.connect(pg_url) as conn:  # the server kept them there, not elsewhere
        assert conn.execute("SELECT count(*) FROM tasks").fetchone()[0] > 0


def test_nothing_acknowledged_is_lost_when_postgresql_restarts_under_load(
    restartable_pg: PrivateServer,
):
    databases = Databases(restartable_pg.url())
    db_url = databases.url_of(databases.create())
    # Writes wait through the restart: none is refused, and none acknowledged is lost.
    env = {"ORCH_DB": db_url, "ORCH_DB_WRITE_WAIT_S": "60"}
    restarts: list[float] = []

    def restart_database(ledger: Ledger) -> None:
        restartable_pg.stop()  # fast: every session cut, mid-commit or not
        restarts.append(time.monotonic())
        restartable_pg.start()
        before = len(ledger.tasks) + len(ledger.completed)
        wait_until(
            lambda: len(ledger.tasks) + len(ledger.completed) > before + 20,
            timeout_s=60,
            message="the server acknowledges work again once PostgreSQL is back",
        )

    crash_and_check(env, before_crash=restart_database)
    assert restarts


def crash_and_check(
    env: dict[str, str], before_crash: Callable[[Ledger], None] | None = None
) -> None:
    """Drive the server on ``env``'s store, kill -9 it, start it again, check the ledger.

    ``before_crash`` (if given) runs under the load first, then the kill follows.
    """
    server = start_server(env)
    url = server.url
    tokens = {}
    for agent_id in [f"w{n}" for n in range(WORKERS)] + ["l0", "l1"]:
        registered = requests.post(
            f"{url}/agents/register",
            json={"agent_id": agent_id, "agent_type": "worker", "capabilities": ["work"]},
            timeout=10,
        ).json()
        tokens[agent_id] = registered["token"]
        requests.post(f"{url}/agents/{agent_id}/start", timeout=10).raise_for_status()

    ledger = Ledger()
    stop = threading.Event()
    threads, errors = drive(url, ledger, stop, tokens)
    time.sleep(random.uniform(0.8, 1.6))  # the random moment of the crash, not a timing wait
    if before_crash is not None:
        before_crash(ledger)
        time.sleep(random.uniform(0.2, 0.6))  # the random moment of the crash, as above
    server.process.kill()
    server.process.wait(10)
    stop.set()
    for thread in threads:
        thread.join(20)
    assert not errors, errors
    assert ledger.tasks and ledger.agents and ledger.completed and ledger.max_token

    restarted = start_server(env)
    try:
        url = restarted.url
        agents = {a["agent_id"] for a in requests.get(f"{url}/agents", timeout=10).json()["agents"]}
        assert ledger.agents <= agents
        tasks = requests.get(f"{url}/tasks", params={"limit": 100_000}, timeout=10).json()
        by_id = {t["task_id"]: t for t in tasks["tasks"]}
        assert ledger.tasks <= set(by_id)
        assert all(by_id[t]["status"] == "completed" for t in ledger.completed)
        holders = {
            (row["resource"], h["fencing_token"]): h["agent_id"]
            for row in requests.get(f"{url}/locks", timeout=10).json()["locks"]
            for h in row["holders"]
        }
        held = set(holders)
        for resource, (_agent_id, token) in ledger.held.items():
            if (resource, token) not in ledger.release_sent:
                assert (resource, token) in held, f"acknowledged grant {resource}#{token} lost"
        assert not {(r, t) for r, t in held} & ledger.released
        # Tokens issued before the crash still work, and fencing keeps increasing.
        auth = {"Authorization": f"Bearer {tokens['l0']}"}
        # Every lease still held is released first, including grants the server
        # committed whose answer the kill cut off (stored, never acknowledged).
        for (resource, token), agent_id in holders.items():
            requests.post(
                f"{url}/locks/{resource}/release",
                json={"fencing_token": token},
                headers={"Authorization": f"Bearer {tokens[agent_id]}"},
                timeout=10,
            ).raise_for_status()
        for resource in ledger.held:
            grant = requests.post(
                f"{url}/locks/{resource}/acquire", json={}, headers=auth, timeout=10
            )
            assert grant.status_code == 200, grant.text
            assert grant.json()["fencing_token"] > ledger.max_token[resource]
    finally:
        assert restarted.stop() == 0
