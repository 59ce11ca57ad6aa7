"""A consistent copy of a live SQLite store, taken without stopping the server.

An operator who cannot afford to lose a task needs copies kept elsewhere, and copying
``orchestrator.db`` with ``cp`` while the server runs is not one: the latest commits
live in ``orchestrator.db-wal`` until a checkpoint, and a file copied mid-write can be
torn. SQLite's online backup reads the database inside one read transaction, which in
WAL mode neither blocks the server's writer nor sees half a commit, so the copy holds
exactly the commits made before it started.

The copy is checked (``PRAGMA integrity_check``), made a single self-contained file
(rollback journal, no ``-wal`` beside it), synced, and only then given its name, so a
file at ``dest`` is always a complete backup. ``dest`` is never overwritten.

``SQLiteStore.backup`` (the ``Store`` protocol's) and ``june-orchestrator backup``
(which works on the file, from another process) both come here.

Restoring is a file operation with the server stopped: put the backup where
``ORCH_DB`` points and remove that file's old ``-wal`` and ``-shm`` (README,
"Backups").
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
from pathlib import Path

from orch.errors import BackupError, StoreError
from orch.model import TERMINAL_TASK_STATES
from orch.store.base import POSTGRES_SCHEMES, BackupSummary
from orch.store.sqlite_file import refuse_newer

__all__ = ["BackupSummary", "backup_connection", "backup_database"]


def backup_database(source: str, dest: str) -> BackupSummary:
    """Copy the store at ``source`` to a new file ``dest``; ``BackupError`` says why not.

    ``source`` is opened read-only, so a wrong path never creates an empty database,
    and may be in use by a running server. Nothing is left at ``dest`` (or beside it)
    if the backup fails.
    """
    if source == ":memory:":
        raise BackupError("ORCH_DB is ':memory:': that store keeps nothing to back up")
    if source.startswith(POSTGRES_SCHEMES):
        raise BackupError(
            "ORCH_DB names a PostgreSQL database: back it up with pg_dump"
            " (README, 'PostgreSQL store'), not june-orchestrator backup"
        )
    target = _target(dest)
    src = _open_source(source)
    try:
        return _backup(src, source, dest, target)
    finally:
        src.close()


def backup_connection(src: sqlite3.Connection, source: str, dest: str) -> BackupSummary:
    """``backup_database`` through an open connection, for a database only it can see
    (SQLite's ``:memory:``); the caller keeps other users of ``src`` out meanwhile."""
    return _backup(src, source, dest, _target(dest))


def _target(dest: str) -> Path:
    target = Path(dest)
    if target.exists():
        raise _taken(target)
    if not target.parent.is_dir():
        raise BackupError(f"the directory of {dest!r} does not exist")
    return target


def _backup(src: sqlite3.Connection, source: str, dest: str, target: Path) -> BackupSummary:
    schema = _check_source(src, source)
    try:
        fd, partial = tempfile.mkstemp(
            dir=target.parent, prefix=f".{target.name}.", suffix=".partial"
        )
    except OSError as exc:
        raise BackupError(f"cannot write in the directory of {dest!r}: {exc}") from exc
    os.close(fd)
    try:
        summary = _copy(src, partial, source, dest, schema)
        _sync_file(partial)
        _publish(partial, target)
    except (sqlite3.Error, OSError) as exc:  # disk full, I/O error
        _discard(partial)
        raise BackupError(f"the backup of {source!r} to {dest!r} failed: {exc}") from exc
    except BaseException:
        _discard(partial)
        raise
    _sync_dir(target.parent)
    return summary


def _discard(partial: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(partial)


def _open_source(source: str) -> sqlite3.Connection:
    path = Path(source)
    if not path.is_file():
        raise BackupError(f"there is no database at {source!r} (ORCH_DB)")
    try:
        return sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    except sqlite3.Error as exc:
        raise BackupError(f"cannot open {source!r} to back it up: {exc}") from exc


def _check_source(src: sqlite3.Connection, source: str) -> int:
    """The source's schema version, once it is known to be an orchestrator store we can read."""
    try:
        version: int = src.execute("PRAGMA user_version").fetchone()[0]
        has_tasks = src.execute(
            "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'tasks'"
        ).fetchone()
    except sqlite3.Error as exc:  # "file is not a database", a locked or unreadable file
        raise BackupError(f"cannot read {source!r}: {exc}") from exc
    if version == 0 or has_tasks is None:
        raise BackupError(f"{source!r} is not an orchestrator database")
    try:
        return refuse_newer(src, source)  # the server's own refusal, word for word
    except StoreError as exc:
        raise BackupError(str(exc)) from None


def _copy(
    src: sqlite3.Connection, partial: str, source: str, dest: str, schema: int
) -> BackupSummary:
    dst = sqlite3.connect(partial, isolation_level=None)
    try:
        src.backup(dst)  # every page in one step: one read transaction, one snapshot
        # The copy's header says WAL, as the source's does; a backup is one file.
        dst.execute("PRAGMA journal_mode = DELETE")
        problems = _integrity_problems(dst)
        if problems:
            raise BackupError(
                f"the copy of {source!r} failed its integrity check: {'; '.join(problems[:5])}"
            )
        terminal = sorted(state.value for state in TERMINAL_TASK_STATES)
        marks = ", ".join("?" * len(terminal))

        def count(sql: str, *params: str) -> int:
            return int(dst.execute(sql, params).fetchone()[0])

        return BackupSummary(
            source=source,
            dest=dest,
            schema_version=schema,
            agents=count("SELECT count(*) FROM agents"),
            tasks=count("SELECT count(*) FROM tasks"),
            unfinished_tasks=count(
                f"SELECT count(*) FROM tasks WHERE state NOT IN ({marks})", *terminal
            ),
            lock_grants=count("SELECT count(*) FROM grants"),
            bytes=os.path.getsize(partial),
        )
    finally:
        dst.close()


def _integrity_problems(conn: sqlite3.Connection) -> list[str]:
    """What ``PRAGMA integrity_check`` found wrong (empty if the file is sound)."""
    verdict = [str(row[0]) for row in conn.execute("PRAGMA integrity_check")]
    return [] if verdict == ["ok"] else verdict


def _publish(partial: str, target: Path) -> None:
    """Give the finished copy its name, refusing to replace a file that appeared meanwhile."""
    try:
        os.link(partial, target)  # fails if ``target`` exists, unlike a rename
    except FileExistsError:
        raise _taken(target) from None
    except OSError:
        # A filesystem without hard links: rename, after checking once more.
        if target.exists():
            raise _taken(target) from None
        os.rename(partial, target)
        return
    os.unlink(partial)


def _taken(target: Path) -> BackupError:
    return BackupError(f"{str(target)!r} already exists; a backup never overwrites a file")


def _sync_file(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _sync_dir(path: Path) -> None:
    """Make the new name durable too (a no-op where directories cannot be opened)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
