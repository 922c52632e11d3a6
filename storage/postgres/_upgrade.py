"""Applying `_schema.MIGRATIONS`: the version table, one transaction per migration, under an
advisory transaction lock, so several nodes starting at once apply each migration once."""

from __future__ import annotations

from storage.postgres._connection import Connection
from storage.postgres._schema import MIGRATION_LOCK_KEY, MIGRATIONS, VERSION_TABLE
from storage.protocols import StorageError


def current_version(conn: Connection) -> int:
    """The schema version the database holds (0: none, or no version table yet)."""
    exists = conn.execute("SELECT to_regclass('hibiki_schema') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return 0
    row = conn.execute("SELECT max(version) FROM hibiki_schema").fetchone()
    return int(row[0]) if row and row[0] is not None else 0


def migrate(conn: Connection) -> int:
    """Apply every pending migration; the version reached. `StorageError` if the database
    holds a newer schema than this code knows (a newer hibiki migrated it: do not touch it)."""
    target = len(MIGRATIONS)
    while True:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_KEY,))
            conn.execute(VERSION_TABLE)
            version = current_version(conn)
            if version > target:
                raise StorageError(
                    f"the database schema is version {version}, newer than this hibiki's"
                    f" {target}: upgrade hibiki"
                )
            if version == target:
                return version
            conn.execute(MIGRATIONS[version])  # a literal, not input
            if version == 0:
                conn.execute("DELETE FROM hibiki_schema")
                conn.execute("INSERT INTO hibiki_schema (version) VALUES (1)")
            else:
                conn.execute("UPDATE hibiki_schema SET version = %s", (version + 1,))
