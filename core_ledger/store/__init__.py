"""Storage backends behind one interface (`Store`)."""

from core_ledger.store.base import Head, JournalRow, StorageError, Store
from core_ledger.store.memory import MemoryStore
from core_ledger.store.sqlite import SqliteStore

__all__ = ["Head", "JournalRow", "MemoryStore", "SqliteStore", "StorageError", "Store"]
