"""The two schemas sharding adds, each versioned on its own (not in `hibiki_schema`).

The catalog (the primary database, beside PostgresStore's tables) gets the directory: which
database serves each logical shard, rooms pinned elsewhere, a version bumped by every switch,
and the sequence message ids come from (ids are global and rise in commit order across shards;
a sequence may leave holes, which ids, unlike seqs, are allowed to have).

A shard database gets its own small schema rather than PostgresStore's: its rooms are a copy
of the catalog's ids and names with the seq counter (`shard_rooms.last_seq`, the one counter a
room's seqs come from), its messages have no foreign key to users (they live on the primary;
the sharded store checks user ids there), and `shard_owned` lists the units (logical shards,
pinned rooms) this database serves, each with the rooms pinned away from it: every write and
read checks it, which is the fence a move relies on.
Every table is prefixed `shard_`, so a shard may live in the primary database itself.
"""

from __future__ import annotations

from storage.postgres._connection import Connection
from storage.protocols import StorageError

CATALOG_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE shard_directory (
        logical INTEGER PRIMARY KEY,
        target  TEXT NOT NULL
    );
    CREATE TABLE shard_pins (
        room   TEXT PRIMARY KEY,
        target TEXT NOT NULL
    );
    CREATE TABLE shard_directory_version (version BIGINT NOT NULL);
    INSERT INTO shard_directory_version (version) VALUES (0);
    CREATE SEQUENCE shard_message_ids;
    SELECT setval('shard_message_ids', COALESCE((SELECT max(id) FROM messages), 0) + 1, false);
    """,
)

SHARD_MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE shard_owned (
        unit TEXT PRIMARY KEY,
        away TEXT[] NOT NULL DEFAULT '{}'
    );
    CREATE TABLE shard_rooms (
        room_id  BIGINT PRIMARY KEY,
        name     TEXT NOT NULL UNIQUE,
        logical  INTEGER NOT NULL,
        last_seq BIGINT NOT NULL DEFAULT 0
    );
    CREATE INDEX shard_rooms_by_logical ON shard_rooms(logical);
    CREATE TABLE shard_messages (
        id        BIGINT PRIMARY KEY,
        room_id   BIGINT NOT NULL REFERENCES shard_rooms(room_id),
        seq       BIGINT NOT NULL,
        user_id   BIGINT NOT NULL,
        user_name TEXT NOT NULL,
        text      TEXT NOT NULL,
        ts        BIGINT NOT NULL,
        client_id TEXT,
        UNIQUE (room_id, seq)
    );
    CREATE UNIQUE INDEX shard_messages_by_client_id ON shard_messages(client_id, room_id, user_id)
        WHERE client_id IS NOT NULL;
    """,
    # 2: the event stream's outbox on each shard (storage/routing/shard_events.py). Positions
    # come from this database's own sequence, taken inside the batch's transaction after it
    # holds a transaction id, so the appender's watermark holds here as on one database; the
    # catalog's ids do not (taken in another database, before this transaction began). Rows
    # from before this version, and rows a move copied in that the source had appended, have
    # no position: they are not this database's to append.
    """
    CREATE SEQUENCE shard_stream_positions;
    ALTER TABLE shard_messages ADD COLUMN stream_pos BIGINT;
    CREATE UNIQUE INDEX shard_messages_by_stream_pos ON shard_messages(stream_pos)
        WHERE stream_pos IS NOT NULL;
    CREATE TABLE shard_events_cursor (
        partition INTEGER PRIMARY KEY,
        last_pos  BIGINT NOT NULL
    );
    """,
    # 3 (issue #15): edits and deletes, as in the PostgreSQL backend's migration 5.
    """
    ALTER TABLE shard_messages
        ADD COLUMN kind SMALLINT NOT NULL DEFAULT 0,
        ADD COLUMN target BIGINT,
        ADD COLUMN edited_at BIGINT,
        ADD COLUMN deleted BOOLEAN NOT NULL DEFAULT false;
    CREATE INDEX shard_messages_by_target ON shard_messages(target) WHERE target IS NOT NULL;
    """,
    # 4 (issue #15): full-text search, as in the PostgreSQL backend's migration 7.
    """
    CREATE INDEX shard_messages_search ON shard_messages
        USING GIN (to_tsvector('simple', text)) WHERE kind = 0 AND NOT deleted;
    """,
)

CATALOG_VERSION_TABLE = "hibiki_shard_catalog"
SHARD_VERSION_TABLE = "hibiki_shard_schema"
CATALOG_LOCK_KEY = 0x68696269_6B690013
SHARD_LOCK_KEY = 0x68696269_6B690014


def apply(conn: Connection, table: str, migrations: tuple[str, ...], lock_key: int) -> int:
    """Apply `migrations` not yet recorded in `table`, each in its own transaction under an
    advisory lock (several nodes may start at once); the version reached."""
    while True:
        with conn.transaction():
            conn.execute("SELECT pg_advisory_xact_lock(%s)", (lock_key,))
            conn.execute(f"CREATE TABLE IF NOT EXISTS {table} (version INTEGER NOT NULL)")
            row = conn.execute(f"SELECT max(version) FROM {table}").fetchone()
            version = int(row[0]) if row and row[0] is not None else 0
            if version > len(migrations):
                raise StorageError(
                    f"{table} is at version {version}, newer than this hibiki's"
                    f" {len(migrations)}: upgrade hibiki"
                )
            if version == len(migrations):
                return version
            conn.execute(migrations[version])  # a literal, not input
            conn.execute(f"DELETE FROM {table}")
            conn.execute(f"INSERT INTO {table} (version) VALUES (%s)", (version + 1,))
