"""Persistence behind one protocol: in process memory, or in a SQLite file."""

from orch.store.base import Store
from orch.store.memory import MemoryStore
from orch.store.sqlite import SQLiteStore

__all__ = ["MemoryStore", "SQLiteStore", "Store"]
