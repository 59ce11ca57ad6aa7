"""Every store implementation, described once, so that the contract suite runs on each.

A new store joins by adding one ``Backend`` to ``BACKENDS``: how to open it in a test's
directory, whether it persists, how to make its writes fail, and whether it backs up.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from orch.store import MemoryStore, SQLiteStore, Store
from orch.store.postgres import PostgresStore
from tests.store.faults import (
    POSTGRES_LOCK_TIMEOUT_S,
    SQLITE_BUSY_TIMEOUT_S,
    LockedElsewhere,
    PostgresLockedElsewhere,
)

Failure = Callable[[Any], AbstractContextManager[None]]


@dataclass(frozen=True)
class Backend:
    """What the contract tests need to know about one store implementation."""

    name: str
    #: Open the store kept under ``where`` (a fresh directory per test); called again
    #: on the same directory to reopen it, as a restart does.
    open: Callable[[Path], Store]
    #: True if what was stored is there again after close and reopen.
    persists: bool
    #: Ways to make every write fail while the context is held, the store left healthy
    #: after; a real failure (a lock held elsewhere, SQLITE_BUSY) where one exists.
    failures: tuple[Failure, ...]
    #: Opens a backup the store wrote to ``dest``, as a store; None if it refuses backups.
    open_backup: Callable[[str], Store] | None
    #: Fixtures the store needs beside its directory (a database server), by name.
    needs: tuple[str, ...] = ()


@contextlib.contextmanager
def fail_writes(store: Any) -> Iterator[None]:
    """The test hook of the memory and SQLite stores: refuse every write up front."""
    store.fail_writes = "disk full"
    try:
        yield
    finally:
        store.fail_writes = None


def sqlite_locked_elsewhere(store: SQLiteStore) -> LockedElsewhere:
    """Another connection holds the write lock: every commit fails with SQLITE_BUSY."""
    return LockedElsewhere(store.path)


def postgres_locked_elsewhere(store: PostgresStore) -> PostgresLockedElsewhere:
    """Another session holds every table locked: every commit fails with lock_not_available."""
    return PostgresLockedElsewhere(store.url)


#: The file in a test's store directory naming the PostgreSQL database made for it.
PG_URL_FILE = "postgresql.url"


def open_postgres(where: Path) -> PostgresStore:
    return PostgresStore(
        (where / PG_URL_FILE).read_text(),
        write_wait_s=5.0,
        lock_timeout_s=POSTGRES_LOCK_TIMEOUT_S,
    )


BACKENDS = [
    Backend(
        name="memory",
        open=lambda where: MemoryStore(),
        persists=False,
        failures=(fail_writes,),
        open_backup=None,
    ),
    Backend(
        name="sqlite",
        open=lambda where: SQLiteStore(
            str(where / "orch.db"), sync="normal", busy_timeout_s=SQLITE_BUSY_TIMEOUT_S
        ),
        persists=True,
        failures=(fail_writes, sqlite_locked_elsewhere),
        open_backup=SQLiteStore,
    ),
    Backend(
        name="postgresql",
        open=open_postgres,
        persists=True,
        failures=(fail_writes, postgres_locked_elsewhere),
        open_backup=None,  # pg_dump's job
        needs=("pg_url",),
    ),
]


@pytest.fixture(params=BACKENDS, ids=[backend.name for backend in BACKENDS])
def backend(request: pytest.FixtureRequest) -> Backend:
    return request.param


@pytest.fixture
def store_dir(backend: Backend, tmp_path: Path, request: pytest.FixtureRequest) -> Path:
    where = tmp_path / "store"
    where.mkdir()
    if "pg_url" in backend.needs:
        (where / PG_URL_FILE).write_text(request.getfixturevalue("pg_url"))
    return where


@pytest.fixture
def opened(backend: Backend, store_dir: Path) -> Iterator[list[Store]]:
    """Every store a test opened in ``store_dir``, closed when it ends."""
    stores: list[Store] = [backend.open(store_dir)]
    try:
        yield stores
    finally:
        for store in stores:
            store.close()


@pytest.fixture
def store(opened: list[Store]) -> Store:
    """The store under test, fresh and empty."""
    return opened[0]


@pytest.fixture
def reopen(backend: Backend, store_dir: Path, opened: list[Store]) -> Callable[[], Store]:
    """Close the latest store and open its data again, as a restart does.

    Only for a store that persists: tests ask ``backend.persists`` first, and what a
    non-persistent store must do instead is part of each test, never a skip.
    """

    def again() -> Store:
        assert backend.persists, f"the {backend.name} store keeps nothing across a reopen"
        opened[-1].close()
        opened.append(backend.open(store_dir))
        return opened[-1]

    return again
