"""The PostgreSQL backend: psycopg 3 on worker threads behind the storage protocols.

`PostgresStore` is the backend (`storage.open_store("postgresql://...")` wraps it); the schema
(`MIGRATIONS`, ...) and `migrate`/`current_version` are what `hibiki migrate` builds on;
`Connection` and `target_of` (a database's name without credentials) are what tests and
benchmarks of the shards build on.
"""

from storage.postgres._connection import Connection, target_of
from storage.postgres._schema import (
    IDENTITY_TABLES,
    MIGRATION_LOCK_KEY,
    MIGRATIONS,
    VERSION_TABLE,
)
from storage.postgres._upgrade import current_version, migrate
from storage.postgres.store import PostgresStore

__all__ = [
    "IDENTITY_TABLES",
    "MIGRATIONS",
    "MIGRATION_LOCK_KEY",
    "VERSION_TABLE",
    "Connection",
    "PostgresStore",
    "current_version",
    "migrate",
    "target_of",
]
