"""The SQLite backend: one writer thread (group commit), reader threads, WAL.

`SQLiteStore` is the backend (`storage.open_store` wraps it); the rest is what benchmarks and
tests of this backend legitimately build on: its connection settings, its schema, its threads.
"""

from storage.sqlite._connection import connect
from storage.sqlite._schema import MIGRATIONS, current_version, migrate
from storage.sqlite._threads import ConnectionThread
from storage.sqlite.store import SQLiteStore

__all__ = ["MIGRATIONS", "ConnectionThread", "SQLiteStore", "connect", "current_version", "migrate"]
