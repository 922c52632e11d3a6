"""Versioned SQLite schema: migrations applied in order, tracked in `PRAGMA user_version`.

A migration is never edited once released; change the schema by appending a new one. Each runs in
its own `BEGIN IMMEDIATE` transaction, and the version is re-read inside it, so two processes
opening the same file cannot both apply it.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator

from storage.protocols import StorageError

# Times are integer milliseconds since the Unix epoch. messages.user_name is denormalised from
# users.name (names are immutable) so a history page is one index range scan with no join.
#
# Migration 1 was rewritten before any release (no database carries it yet): the client_id index
# now leads with client_id. Each batch inserts one key per message into it, and each insert
# dirties the leaf it lands on. Led by (room_id, user_id), a batch from 500 senders lands on ~500
# leaves, one per sender's range, whatever the ids look like (measured: about half the messages/s
# of group commit at 100 rooms). Led by client_id, time-ordered ids (a ms-timestamp prefix, like
# UUIDv7: what clients should send) from all senders land together near the right edge, like an
# append; random ids cost about the same in either order. Lookups give all three columns, so
# the order does not change them.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE users (
        id            INTEGER PRIMARY KEY,
        name          TEXT NOT NULL UNIQUE,
        password_hash TEXT NOT NULL,
        created_at    INTEGER NOT NULL
    );
    CREATE TABLE tokens (
        token_hash TEXT PRIMARY KEY,
        user_id    INTEGER NOT NULL REFERENCES users(id) ON DELETE CASCADE,
        expires_at INTEGER NOT NULL
    ) WITHOUT ROWID;
    CREATE INDEX tokens_by_user ON tokens(user_id, expires_at);
    CREATE TABLE rooms (
        id         INTEGER PRIMARY KEY,
        name       TEXT NOT NULL UNIQUE,
        created_by INTEGER NOT NULL REFERENCES users(id),
        created_at INTEGER NOT NULL,
        last_seq   INTEGER NOT NULL DEFAULT 0
    );
    CREATE TABLE memberships (
        room_id   INTEGER NOT NULL REFERENCES rooms(id),
        user_id   INTEGER NOT NULL REFERENCES users(id),
        joined_at INTEGER NOT NULL,
        PRIMARY KEY (room_id, user_id)
    ) WITHOUT ROWID;
    CREATE INDEX memberships_by_user ON memberships(user_id, room_id);
    CREATE TABLE messages (
        id        INTEGER PRIMARY KEY,
        room_id   INTEGER NOT NULL REFERENCES rooms(id),
        seq       INTEGER NOT NULL,
        user_id   INTEGER NOT NULL REFERENCES users(id),
        user_name TEXT NOT NULL,
        text      TEXT NOT NULL,
        ts        INTEGER NOT NULL,
        client_id TEXT,
        UNIQUE (room_id, seq)
    );
    CREATE UNIQUE INDEX messages_by_client_id ON messages(client_id, room_id, user_id)
        WHERE client_id IS NOT NULL;
    """,
    # 2: the event stream's cursor: per stream partition, the last message id appended to it.
    """
    CREATE TABLE events_cursor (
        partition INTEGER PRIMARY KEY,
        last_id   INTEGER NOT NULL
    );
    """,
    # 3: profiles and sessions (issue #15). A user's display name (NULL: none set) and when a
    # connection or request of theirs was last recorded; each token is a session with an opaque
    # id, a device label, when it was created and last used (NULL for tokens older than this
    # migration, whose ids are made here).
    """
    ALTER TABLE users ADD COLUMN display_name TEXT;
    ALTER TABLE users ADD COLUMN last_seen INTEGER;
    ALTER TABLE tokens ADD COLUMN session_id TEXT NOT NULL DEFAULT '';
    ALTER TABLE tokens ADD COLUMN device TEXT NOT NULL DEFAULT '';
    ALTER TABLE tokens ADD COLUMN created_at INTEGER;
    ALTER TABLE tokens ADD COLUMN last_used_at INTEGER;
    UPDATE tokens SET session_id = lower(hex(randomblob(8)));
    CREATE UNIQUE INDEX tokens_by_session ON tokens(session_id);
    """,
    # 4 (issue #15): edits and deletes are room entries of their own (kind 1 and 2, with the
    # message they change as `target`); the message row holds its current text, when it was last
    # edited, and whether it was deleted (then its text, and its edits' texts, are "").
    """
    ALTER TABLE messages ADD COLUMN kind INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE messages ADD COLUMN target INTEGER;
    ALTER TABLE messages ADD COLUMN edited_at INTEGER;
    ALTER TABLE messages ADD COLUMN deleted INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX messages_by_target ON messages(target) WHERE target IS NOT NULL;
    """,
    # 5: read state: per user and room, the last seq the user has read (issue #15). On the
    # catalog: a cursor is the user's, not the shard's, so it never moves with a room's shard.
    """
    CREATE TABLE read_cursors (
        user_id INTEGER NOT NULL REFERENCES users(id),
        room_id INTEGER NOT NULL REFERENCES rooms(id),
        seq     INTEGER NOT NULL,
        PRIMARY KEY (user_id, room_id)
    ) WITHOUT ROWID;
    """,
    # 6: full-text search (issue #15, storage/sqlite/_search.py): an FTS5 index of each
    # message's current text (rowid = message id), and how far through `messages` (by id) it
    # is. Backfilled here; then brought up to date by batches off the commit path (an FTS5 write
    # per one-message transaction added ~20% to the light-load cost of a message). FTS5 keeps
    # its own copy of the text: a re-index after an edit deletes by rowid, whatever the old text.
    """
    CREATE VIRTUAL TABLE message_search USING fts5(
        text, tokenize='unicode61 remove_diacritics 2'
    );
    INSERT INTO message_search (rowid, text)
        SELECT id, text FROM messages WHERE kind = 0 AND deleted = 0;
    CREATE TABLE search_cursor (last_id INTEGER NOT NULL);
    INSERT INTO search_cursor (last_id) SELECT coalesce(max(id), 0) FROM messages;
    """,
    # 7: rooms with roles and settings (issue #15; storage/room_admin.py). Existing rooms become
    # public; their owner is the creator if still a member, else none (NULL: nobody holds the
    # owner's rights until a new schema says how to pick one). Bans are catalog rows.
    """
    ALTER TABLE rooms ADD COLUMN visibility TEXT NOT NULL DEFAULT 'public';
    ALTER TABLE rooms ADD COLUMN topic TEXT NOT NULL DEFAULT '';
    ALTER TABLE rooms ADD COLUMN slow_mode INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE rooms ADD COLUMN owner_id INTEGER REFERENCES users(id);
    ALTER TABLE memberships ADD COLUMN role TEXT NOT NULL DEFAULT 'member';
    UPDATE rooms SET owner_id = created_by WHERE EXISTS (SELECT 1 FROM memberships AS m
        WHERE m.room_id = rooms.id AND m.user_id = rooms.created_by);
    UPDATE memberships SET role = 'owner' WHERE EXISTS (SELECT 1 FROM rooms AS r
        WHERE r.id = memberships.room_id AND r.owner_id = memberships.user_id);
    CREATE TABLE room_bans (
        room_id   INTEGER NOT NULL REFERENCES rooms(id),
        user_id   INTEGER NOT NULL REFERENCES users(id),
        banned_by INTEGER NOT NULL REFERENCES users(id),
        banned_at INTEGER NOT NULL,
        PRIMARY KEY (room_id, user_id)
    ) WITHOUT ROWID;
    """,
)


def current_version(conn: sqlite3.Connection) -> int:
    """The schema version stored in the database file (0 for a new file)."""
    version: int = conn.execute("PRAGMA user_version").fetchone()[0]
    return version


def migrate(conn: sqlite3.Connection) -> int:
    """Apply pending migrations in order; return how many were applied (0 if up to date).

    `conn` must be in autocommit mode (isolation_level=None) so transactions are ours alone.
    """
    if current_version(conn) > len(MIGRATIONS):
        raise StorageError(
            f"database schema v{current_version(conn)} is newer than this code (v{len(MIGRATIONS)})"
        )
    applied = 0
    for version, script in enumerate(MIGRATIONS, start=1):
        if current_version(conn) >= version:
            continue
        conn.execute("BEGIN IMMEDIATE")
        try:
            if current_version(conn) < version:  # another process may have won the race
                for statement in _statements(script):
                    conn.execute(statement)
                conn.execute(f"PRAGMA user_version = {version:d}")
                applied += 1
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
    return applied


def _statements(script: str) -> Iterator[str]:
    """Split a script into statements without executescript(), which would COMMIT our BEGIN."""
    pending = ""
    for chunk in script.split(";"):
        pending += chunk + ";"
        if sqlite3.complete_statement(pending):
            if pending.strip(" \t\n;"):
                yield pending
            pending = ""
    if pending.strip(" \t\n;"):
        raise ValueError(f"incomplete SQL statement in migration: {pending!r}")
