"""The SQLite backend: one writer thread (group commit), reader threads, WAL."""

from storage.sqlite.store import SQLiteStore

__all__ = ["SQLiteStore"]
