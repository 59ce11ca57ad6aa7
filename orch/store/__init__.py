"""Persistence behind one protocol; the memory store now, SQLite next."""

from orch.store.base import Store
from orch.store.memory import MemoryStore

__all__ = ["MemoryStore", "Store"]
