"""Persistence behind one protocol: in process memory, or in a SQLite file."""

from orch.config import Settings
from orch.store.backup import backup_database
from orch.store.base import BackupSummary, PendingWrite, Store, StoreStats
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
    """The store ``settings.db`` names: ``:memory:`` keeps nothing, a path is SQLite."""
    if settings.db == ":memory:":
        return MemoryStore()
    return SQLiteStore(settings.db, sync=settings.db_sync)
