"""Persistence behind one protocol: in process memory, a SQLite file, or PostgreSQL."""

from orch.config import Settings
from orch.errors import StoreError
from orch.store.backup import backup_database
from orch.store.base import POSTGRES_SCHEMES, BackupSummary, PendingWrite, Store, StoreStats
from orch.store.memory import MemoryStore
from orch.store.sqlite import SQLiteStore

__all__ = [
    "BackupSummary",
    "MemoryStore",
    "PendingWrite",
    "SQLiteStore",
    "Store",
    "StoreStats",
    "backup_database",
    "open_store",
]


def open_store(settings: Settings) -> Store:
    """The store ``settings.db`` names: ``:memory:`` keeps nothing, a
    ``postgresql://`` URI is PostgreSQL, anything else is a SQLite file's path."""
    if settings.db == ":memory:":
        return MemoryStore()
    if settings.db.startswith(POSTGRES_SCHEMES):
        # Imported here: psycopg is needed only by those who choose PostgreSQL.
        try:
            from orch.store.postgres import PostgresStore
        except ImportError as exc:
            raise StoreError(
                "ORCH_DB names a PostgreSQL database but psycopg is not installed:"
                f" pip install 'june-orchestrator[postgres]' ({exc})"
            ) from exc

        return PostgresStore(settings.db, write_wait_s=settings.db_write_wait_s)
    return SQLiteStore(settings.db, sync=settings.db_sync)
