"""Applying the PostgreSQL schema (`_schema.MIGRATIONS`) to a database, blocking.

Written for `hibiki migrate`, which must create the schema exactly as `PostgresStore` will, so
that a store opened later finds it current. Each migration runs in its own transaction holding
the advisory transaction lock `MIGRATION_LOCK_KEY`, and the version is re-read under the lock:
several processes applying at once apply each migration once. `hibiki_schema` holds one row.
"""

from __future__ import annotations

import psycopg
from psycopg.rows import TupleRow

from storage.postgres._schema import MIGRATION_LOCK_KEY, MIGRATIONS, VERSION_TABLE
from storage.protocols import StorageError


def schema_version(conn: psycopg.Connection[TupleRow]) -> int:
    """The version recorded in `hibiki_schema` (0 when the table is missing or empty)."""
    exists = conn.execute("SELECT to_regclass('hibiki_schema') IS NOT NULL").fetchone()
    if exists is None or not exists[0]:
        return 0
    row = conn.execute("SELECT coalesce(max(version), 0) FROM hibiki_schema").fetchone()
    return 0 if row is None else int(row[0])


def apply_schema(conn: psycopg.Connection[TupleRow]) -> int:
    """Apply the pending migrations in order; return how many were applied (0: up to date).

    `StorageError` if the database's schema is newer than this code knows.
    """
    applied = 0
    for version, script in enumerate(MIGRATIONS, start=1):
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_KEY,))
            conn.execute(VERSION_TABLE)
            current = schema_version(conn)
            if current > len(MIGRATIONS):
                raise StorageError(
                    f"database schema v{current} is newer than this code (v{len(MIGRATIONS)})"
                )
            if current >= version:
                continue
            conn.execute(script.encode())
            if current == 0:
                conn.execute("INSERT INTO hibiki_schema (version) VALUES (%s)", (version,))
            else:
                conn.execute("UPDATE hibiki_schema SET version = %s", (version,))
            applied += 1
    return applied
