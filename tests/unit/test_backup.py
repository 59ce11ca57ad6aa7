"""Online backups of the SQLite store: consistent while in use, checked, never partial."""

from __future__ import annotations

import errno
import json
import os
import shutil
import sqlite3
import threading
from pathlib import Path

import pytest

from orch import NotFound, Orchestrator, Settings
from orch.__main__ import main
from orch.errors import BackupError
from orch.store import SQLiteStore, backup_database
from orch.store.sqlite import SCHEMA_VERSION
from tests.conftest import wait_until
from tests.store.records import make_task


def open_orch(path: Path) -> Orchestrator:
    return Orchestrator(Settings(), store=SQLiteStore(str(path))).start()


def test_a_backup_of_a_running_store_opens_with_everything_acknowledged(tmp_path):
    live = open_orch(tmp_path / "live.db")
    try:
        token = live.register_agent("a1", "implementation", ["code"], max_concurrent_tasks=2)[
            "token"
        ]
        live.start_agent("a1")
        live.assign_task({"n": 1}, task_id="running", agent_id="a1")
        live.assign_task({"n": 2}, task_id="queued", capabilities=["nobody-has-this"])
        live.assign_task({"n": 3}, task_id="done", agent_id="a1")
        live.complete_task("a1", "done", {"ok": True})
        grant = live.acquire_lock("a1", "repo:june", ttl_s=600)

        summary = backup_database(str(tmp_path / "live.db"), str(tmp_path / "copy.db"))
        live.assign_task({"n": 4}, task_id="after", capabilities=["nobody-has-this"])
    finally:
        live.stop()

    assert (summary.agents, summary.tasks, summary.unfinished_tasks) == (1, 3, 2)
    assert (summary.lock_grants, summary.schema_version) == (1, SCHEMA_VERSION)
    assert summary.bytes == (tmp_path / "copy.db").stat().st_size
    # One self-contained file: nothing of the copy lives in a -wal beside it.
    copy = sqlite3.connect(tmp_path / "copy.db")
    assert copy.execute("PRAGMA journal_mode").fetchone() == ("delete",)
    copy.close()
    assert not (tmp_path / "copy.db-wal").exists()

    restored = open_orch(tmp_path / "copy.db")
    try:
        restored.authenticate("a1", token)
        assert restored.task("done")["result"] == {"ok": True}
        assert restored.task("queued")["payload"] == {"n": 2}
        assert restored.task("running")["agent_id"] == "a1"
        with pytest.raises(NotFound, match="after"):
            restored.task("after")  # written after the backup began
        [lock] = restored.locks()
        assert lock["resource"] == "repo:june"
        restored.register_agent("other", "implementation")
        restored.release_lock("a1", "repo:june", grant["fencing_token"])
        later = restored.acquire_lock("other", "repo:june")
        assert later["fencing_token"] > grant["fencing_token"]
    finally:
        restored.stop()


def test_a_backup_under_write_load_holds_everything_acknowledged_before_it(tmp_path):
    live = open_orch(tmp_path / "live.db")
    acknowledged: list[str] = []
    refused: list[BaseException] = []
    stop = threading.Event()

    def submit(k: int) -> None:
        n = 0
        while not stop.is_set():
            task_id = f"w{k}-{n}"
            try:
                live.assign_task({"n": n}, task_id=task_id, capabilities=["nobody-has-this"])
            except Exception as exc:  # reported below, on the test's thread
                refused.append(exc)
                return
            acknowledged.append(task_id)
            n += 1

    writers = [threading.Thread(target=submit, args=(k,)) for k in range(4)]
    try:
        for writer in writers:
            writer.start()
        wait_until(lambda: len(acknowledged) >= 200)
        before = set(acknowledged)
        summary = backup_database(str(tmp_path / "live.db"), str(tmp_path / "copy.db"))
        during = len(acknowledged)
        wait_until(lambda: len(acknowledged) >= during + 50)  # the server kept writing
    finally:
        stop.set()
        for writer in writers:
            writer.join()
        live.stop()

    assert refused == []
    store = SQLiteStore(str(tmp_path / "copy.db"))
    try:
        stored = {task.spec.task_id for task in store.load_tasks()}
    finally:
        store.close()
    assert before <= stored
    assert len(stored) == summary.tasks


def test_refusals_name_the_problem_and_leave_nothing_behind(tmp_path):
    live = SQLiteStore(str(tmp_path / "live.db"))
    live.close()
    existing = tmp_path / "existing.db"
    existing.write_text("keep me")

    cases = {
        ":memory:": (":memory:", str(tmp_path / "a.db")),
        "pg_dump": ("postgresql://orch@db.example/orch", str(tmp_path / "g.db")),
        "no database at": (str(tmp_path / "missing.db"), str(tmp_path / "b.db")),
        "already exists": (str(tmp_path / "live.db"), str(existing)),
        "directory of": (str(tmp_path / "live.db"), str(tmp_path / "no-such-dir" / "c.db")),
    }
    for expected, (source, dest) in cases.items():
        with pytest.raises(BackupError, match=expected):
            backup_database(source, dest)
    assert existing.read_text() == "keep me"
    assert not (tmp_path / "missing.db").exists()  # read-only: a wrong path creates nothing

    (tmp_path / "junk.db").write_text("not a database, just text" * 100)
    with pytest.raises(BackupError, match="not a database"):
        backup_database(str(tmp_path / "junk.db"), str(tmp_path / "d.db"))
    sqlite3.connect(tmp_path / "foreign.db").execute("CREATE TABLE t (x)").connection.close()
    with pytest.raises(BackupError, match="not an orchestrator database"):
        backup_database(str(tmp_path / "foreign.db"), str(tmp_path / "e.db"))
    shutil.copy(tmp_path / "live.db", tmp_path / "newer.db")
    newer = sqlite3.connect(tmp_path / "newer.db")
    newer.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    newer.close()
    with pytest.raises(BackupError, match="newer version"):
        backup_database(str(tmp_path / "newer.db"), str(tmp_path / "f.db"))

    # Only the sources (and the -wal/-shm SQLite keeps beside a WAL database) are there.
    left = {p.name.removesuffix("-wal").removesuffix("-shm") for p in tmp_path.iterdir()}
    assert left == {"live.db", "existing.db", "junk.db", "foreign.db", "newer.db"}


def test_a_copy_that_fails_its_integrity_check_is_not_published(tmp_path):
    live = SQLiteStore(str(tmp_path / "live.db"))
    for n in range(3):
        live.put_task(make_task(f"t{n}", seq=n))
    live.close()
    # Damage the source as a bad disk might: its index no longer matches its table.
    # Pages are copied as they are, so the copy is damaged alike and must be refused.
    raw = sqlite3.connect(tmp_path / "live.db", isolation_level=None)
    raw.execute("PRAGMA writable_schema = ON")
    raw.execute(
        "UPDATE sqlite_master SET sql = 'CREATE INDEX tasks_by_state_and_age"
        " ON tasks (updated_at, state)' WHERE name = 'tasks_by_state_and_age'"
    )
    raw.close()
    with pytest.raises(BackupError, match=r"copy of .* integrity check: row 1 missing from index"):
        backup_database(str(tmp_path / "live.db"), str(tmp_path / "copy.db"))
    assert {p.name for p in tmp_path.iterdir()} <= {"live.db", "live.db-wal", "live.db-shm"}


def test_a_disk_that_fills_during_the_backup_fails_it_and_leaves_nothing(tmp_path, monkeypatch):
    live = SQLiteStore(str(tmp_path / "live.db"))
    live.close()

    def full(fd: int) -> None:
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", full)  # the copy is written, its sync fails
    with pytest.raises(BackupError, match=r"copy\.db' failed: .*No space left on device"):
        backup_database(str(tmp_path / "live.db"), str(tmp_path / "copy.db"))
    assert {p.name for p in tmp_path.iterdir()} <= {"live.db", "live.db-wal", "live.db-shm"}


def test_the_backup_command(tmp_path, monkeypatch, capsys):
    live = SQLiteStore(str(tmp_path / "live.db"))
    live.close()
    monkeypatch.setenv("ORCH_DB", str(tmp_path / "live.db"))

    assert main(["backup", str(tmp_path / "copy.db")]) == 0
    out = capsys.readouterr().out
    assert out.startswith(f"backed up {tmp_path / 'live.db'} to {tmp_path / 'copy.db'}: schema")
    assert (tmp_path / "copy.db").is_file()

    assert main(["backup", str(tmp_path / "copy.db")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("june-orchestrator: ") and "already exists" in err
    assert err.count("\n") == 1

    for n, argv in enumerate((["--json", "backup"], ["backup", "--json"])):
        assert main([*argv, str(tmp_path / f"again{n}.db")]) == 0
        assert json.loads(capsys.readouterr().out)["tasks"] == 0

    monkeypatch.setenv("ORCH_DB_SYNC", "sometimes")
    assert main(["backup", str(tmp_path / "third.db")]) == 2
    assert "ORCH_DB_SYNC" in capsys.readouterr().err
    assert not os.path.exists(tmp_path / "third.db")
