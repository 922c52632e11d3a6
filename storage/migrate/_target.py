"""The PostgreSQL side of a migration: connecting, creating the schema, and the marker.

The marker (`hibiki_migration`, one row) names the source a target is being filled from and how
far its messages got. It is what lets a rerun continue the same migration, and what makes the
tool refuse a target that holds anything else: hibiki data with no marker, a marker of another
source, or messages the migration did not write (a server started on the target too early).
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Iterator
from dataclasses import dataclass

import psycopg
from psycopg.conninfo import conninfo_to_dict
from psycopg.rows import TupleRow

from storage.migrate._errors import MigrationRefused
from storage.migrate._source import SourceSnapshot
from storage.postgres._schema import MIGRATION_LOCK_KEY
from storage.postgres._upgrade import current_version as schema_version
from storage.postgres._upgrade import migrate as apply_schema
from storage.protocols import StorageError

PgConnection = psycopg.Connection[TupleRow]

MARKER_TABLE = """
CREATE TABLE IF NOT EXISTS hibiki_migration (
    source_fingerprint TEXT,
    source_path        TEXT NOT NULL,
    started_at         BIGINT NOT NULL,
    last_pass_at       BIGINT,
    passes             INTEGER NOT NULL DEFAULT 0,
    messages_max_id    BIGINT NOT NULL DEFAULT 0,
    messages_copied    BIGINT NOT NULL DEFAULT 0,
    set_aside          TEXT  -- JSON: the DDL bulk mode must re-create (storage/migrate/_bulk.py)
)
"""
# Held for a whole run, so two `hibiki migrate` into one target cannot interleave.
RUN_LOCK_KEY = MIGRATION_LOCK_KEY + 1
_DATA_TABLES = ("users", "rooms", "memberships", "tokens", "messages")


@dataclass(frozen=True, slots=True)
class Marker:
    fingerprint: str | None
    source_path: str
    passes: int
    messages_max_id: int
    messages_copied: int


def describe(url: str) -> str:
    """The target for humans, without its password: `database 'x' on host:port`."""
    try:
        info = conninfo_to_dict(url)
    except psycopg.ProgrammingError:
        return "the PostgreSQL target"
    host, port = info.get("host", "localhost"), info.get("port", 5432)
    return f"PostgreSQL database {info.get('dbname', '?')!r} on {host}:{port}"


@contextlib.contextmanager
def connect(url: str) -> Iterator[PgConnection]:
    """An autocommit connection (transactions are explicit) holding the run lock."""
    try:
        conn = psycopg.connect(url, autocommit=True)
    except psycopg.Error as exc:
        raise StorageError(f"cannot connect to {describe(url)}: {exc}") from exc
    with conn:
        row = conn.execute("SELECT pg_try_advisory_lock(%s)", (RUN_LOCK_KEY,)).fetchone()
        if row is None or not row[0]:
            raise MigrationRefused(f"another hibiki migrate is running into {describe(url)}")
        try:
            yield conn
        except psycopg.Error as exc:
            raise StorageError(f"{describe(url)}: {type(exc).__name__}: {exc}") from exc


def has_schema(conn: PgConnection) -> bool:
    return schema_version(conn) > 0


def prepare(conn: PgConnection, source: SourceSnapshot) -> Marker:
    """Create the schema if the target has none, then claim it for `source` or recognise it
    as this source's; `MigrationRefused` (before any write to the data) otherwise."""
    if schema_version(conn) == 0 and _exists(conn, "users"):
        raise MigrationRefused("the target has a users table but no hibiki schema")
    apply_schema(conn)
    conn.execute(MARKER_TABLE)
    marker = read_marker(conn)
    fingerprint = source.fingerprint()
    if marker is None:
        counts = {table: _count(conn, table) for table in _DATA_TABLES}
        if any(counts.values()):
            held = ", ".join(f"{n} {table}" for table, n in counts.items() if n)
            raise MigrationRefused(
                f"the target holds hibiki data no migration wrote ({held}):"
                " migrate into an empty database"
            )
        conn.execute(
            "INSERT INTO hibiki_migration (source_fingerprint, source_path, started_at)"
            " VALUES (%s, %s, %s)",
            (fingerprint, source.path, _now_ms()),
        )
        return Marker(fingerprint, source.path, 0, 0, 0)
    _recognise(conn, marker, source, fingerprint)
    return marker


def _recognise(
    conn: PgConnection, marker: Marker, source: SourceSnapshot, fingerprint: str | None
) -> None:
    if marker.fingerprint is None and fingerprint is not None and _count(conn, "users") == 0:
        conn.execute("UPDATE hibiki_migration SET source_fingerprint = %s", (fingerprint,))
    elif marker.fingerprint != fingerprint:
        raise MigrationRefused(
            f"the target is being migrated from another database ({marker.source_path});"
            " migrate into an empty database"
        )
    row = conn.execute("SELECT coalesce(max(id), 0), count(*) FROM messages").fetchone()
    assert row is not None
    if (row[0], row[1]) != (marker.messages_max_id, marker.messages_copied):
        raise MigrationRefused(
            f"the target holds messages this migration did not copy ({row[1]} messages up to id"
            f" {row[0]}; it copied {marker.messages_copied} up to id {marker.messages_max_id}):"
            " was hibiki started on it?"
        )
    source_max = source.scalar("SELECT max(id) FROM messages")
    if source_max < marker.messages_max_id:
        raise MigrationRefused(
            f"the source's last message id ({source_max}) is below what was already copied"
            f" ({marker.messages_max_id}): was it restored from an older backup?"
        )


def read_marker(conn: PgConnection) -> Marker | None:
    if not _exists(conn, "hibiki_migration"):
        return None
    row = conn.execute(
        "SELECT source_fingerprint, source_path, passes, messages_max_id, messages_copied"
        " FROM hibiki_migration"
    ).fetchone()
    return None if row is None else Marker(*row)


def finish_pass(conn: PgConnection) -> None:
    conn.execute("UPDATE hibiki_migration SET passes = passes + 1, last_pass_at = %s", (_now_ms(),))


def _exists(conn: PgConnection, table: str) -> bool:
    row = conn.execute("SELECT to_regclass(%s) IS NOT NULL", (table,)).fetchone()
    return bool(row and row[0])


def _count(conn: PgConnection, table: str) -> int:
    row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    return 0 if row is None else int(row[0])


def _now_ms() -> int:
    return time.time_ns() // 1_000_000
