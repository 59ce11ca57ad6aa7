"""Persistence behind one protocol: in process memory, or in a SQLite file."""

from orch.config import Settings
from orch.store.backup import BackupSummary, backup_database
from orch.store.base import Store
from orch.store.memory import MemoryStore
from orch.store.sqlite import SQLiteStore

__all__ = [
    "BackupSummary",
    "MemoryStore",
    "SQLiteStore",
    "Store",
    "backup_database",
    "open_store",
]


def open_store(settings: Settings) -> Store:
    """The store ``settings.db`` names: ``:memory:`` keeps nothing, a path is SQLite."""
    if settings.db == ":memory:":
        return MemoryStore()
    return SQLiteStore(settings.db, sync=settings.db_sync)
