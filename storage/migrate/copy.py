"""One copy pass: the catalog (users, rooms, memberships, tokens, bans), then messages in chunks.

The catalog is small and mutable, so each pass stages all of it with COPY into temporary
tables and merges it in one transaction: users and rooms are inserted when missing (a user's
password hash, display name and last_seen are updated; names and creation times never change),
memberships and tokens are made equal to the source's (a session's id, device, creation and last
use updated in place), deletions included: a token revoked (logout) or expired-and-pruned
in the source must not work again on the target, and a member who left must stay gone. A
room's settings (visibility, topic, slow mode, owner) and each member's role are updated in
place, and bans made equal (issue #15): a private room must never arrive public.
A target user or room the source lacks, or holds under other values, is not this source's data:
the pass is refused and rolled back.

Messages are immutable and their ids grow, so a pass copies only ids above the last one copied
(the marker's `messages_max_id`), in chunks, one transaction each: the chunk's rows by COPY, each
room's `last_seq` raised to the highest seq in the chunk, and the marker moved on. A pass cut off
anywhere leaves a target whose `last_seq`s match its messages, and the next pass resumes there.
A large copy runs in bulk mode (`_bulk`): secondary constraints rebuilt once at the end.

Last, the event stream's cursors (`events_cursor`, docs/events.md): ids are kept, so where the
source's appender got to is where the target's goes on from, and a migrated database does not
re-append its history. A cursor is only raised, never moved back.

So are the users' read cursors (`read_cursors`, issue #15): staged like the catalog, then each
target cursor raised to the source's, never lowered (a user reading on the target meanwhile keeps
the later position).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from storage.migrate import _bulk
from storage.migrate._errors import MigrationRefused
from storage.migrate._progress import ProgressFactory
from storage.migrate._source import (
    BANS,
    MEMBERSHIPS_COPIED,
    MESSAGE_COLUMNS,
    ROOMS_COPIED,
    TOKENS,
    USERS,
    SourceSnapshot,
)
from storage.migrate._target import Marker, PgConnection
from storage.postgres._schema import IDENTITY_TABLES

DEFAULT_CHUNK_ROWS = 20_000

# table -> (columns staged, the source query giving them)
_STAGED: dict[str, tuple[str, str]] = {
    "users": ("id, name, password_hash, created_at, display_name, last_seen", USERS),
    "rooms": (
        "id, name, created_by, created_at, last_seq, visibility, topic, slow_mode, owner_id",
        ROOMS_COPIED,
    ),
    "memberships": ("room_id, user_id, joined_at, role", MEMBERSHIPS_COPIED),
    "room_bans": ("room_id, user_id, banned_by, banned_at", BANS),
    "tokens": (
        "token_hash, user_id, expires_at, session_id, device, created_at, last_used_at",
        TOKENS,
    ),
}
# Target rows that are not the source's: (table, query listing a few).
_FOREIGN = (
    (
        "users",
        "SELECT t.id, t.name FROM users AS t LEFT JOIN m_users AS s USING (id)"
        " WHERE s.id IS NULL OR s.name <> t.name OR s.created_at <> t.created_at"
        " ORDER BY t.id LIMIT 3",
    ),
    (
        "rooms",
        "SELECT t.id, t.name FROM rooms AS t LEFT JOIN m_rooms AS s USING (id)"
        " WHERE s.id IS NULL OR s.name <> t.name OR s.created_by <> t.created_by"
        " OR s.created_at <> t.created_at ORDER BY t.id LIMIT 3",
    ),
)
# (what, SQL) in order; each statement's row count is what it did.
_MERGE = (
    (
        "users added",
        "INSERT INTO users (id, name, password_hash, created_at, display_name, last_seen)"
        " SELECT id, name, password_hash, created_at, display_name, last_seen FROM m_users"
        " ON CONFLICT (id) DO NOTHING",
    ),
    (
        "users updated",
        "UPDATE users AS t SET password_hash = s.password_hash, display_name = s.display_name,"
        " last_seen = s.last_seen FROM m_users AS s WHERE s.id = t.id"
        " AND (s.password_hash, s.display_name, s.last_seen)"
        " IS DISTINCT FROM (t.password_hash, t.display_name, t.last_seen)",
    ),
    (
        "rooms added",
        "INSERT INTO rooms (id, name, created_by, created_at, last_seq, visibility, topic,"
        " slow_mode, owner_id) SELECT id, name, created_by, created_at, 0, visibility, topic,"
        " slow_mode, owner_id FROM m_rooms ON CONFLICT (id) DO NOTHING",
    ),
    (
        "rooms updated",
        "UPDATE rooms AS t SET visibility = s.visibility, topic = s.topic,"
        " slow_mode = s.slow_mode, owner_id = s.owner_id FROM m_rooms AS s WHERE s.id = t.id"
        " AND (s.visibility, s.topic, s.slow_mode, s.owner_id)"
        " IS DISTINCT FROM (t.visibility, t.topic, t.slow_mode, t.owner_id)",
    ),
    (
        "memberships removed",
        "DELETE FROM memberships AS t WHERE NOT EXISTS (SELECT 1 FROM m_memberships AS s"
        " WHERE s.room_id = t.room_id AND s.user_id = t.user_id AND s.joined_at = t.joined_at)",
    ),
    (
        "memberships added",
        "INSERT INTO memberships (room_id, user_id, joined_at, role)"
        " SELECT room_id, user_id, joined_at, role FROM m_memberships ON CONFLICT DO NOTHING",
    ),
    (
        "roles updated",
        "UPDATE memberships AS t SET role = s.role FROM m_memberships AS s"
        " WHERE s.room_id = t.room_id AND s.user_id = t.user_id AND s.role <> t.role",
    ),
    (
        "bans removed",
        "DELETE FROM room_bans AS t WHERE NOT EXISTS (SELECT 1 FROM m_room_bans AS s"
        " WHERE s.room_id = t.room_id AND s.user_id = t.user_id)",
    ),
    (
        "bans added",
        "INSERT INTO room_bans (room_id, user_id, banned_by, banned_at)"
        " SELECT room_id, user_id, banned_by, banned_at FROM m_room_bans ON CONFLICT DO NOTHING",
    ),
    (
        "tokens removed",
        "DELETE FROM tokens AS t WHERE NOT EXISTS (SELECT 1 FROM m_tokens AS s"
        " WHERE s.token_hash = t.token_hash AND s.user_id = t.user_id"
        " AND s.expires_at = t.expires_at)",
    ),
    (
        "tokens updated",
        "UPDATE tokens AS t SET session_id = s.session_id, device = s.device,"
        " created_at = s.created_at, last_used_at = s.last_used_at FROM m_tokens AS s"
        " WHERE s.token_hash = t.token_hash"
        " AND (s.session_id, s.device, s.created_at, s.last_used_at)"
        " IS DISTINCT FROM (t.session_id, t.device, t.created_at, t.last_used_at)",
    ),
    (
        "tokens added",
        "INSERT INTO tokens (token_hash, user_id, expires_at, session_id, device, created_at,"
        " last_used_at) SELECT token_hash, user_id, expires_at, session_id, device, created_at,"
        " last_used_at FROM m_tokens ON CONFLICT DO NOTHING",
    ),
)
_EVENT_CURSORS = "SELECT partition, last_id FROM events_cursor ORDER BY partition"
_RAISE_EVENT_CURSOR = (
    "INSERT INTO events_cursor (partition, last_id) VALUES (%s, %s)"
    " ON CONFLICT (partition) DO UPDATE SET last_id = excluded.last_id"
    " WHERE events_cursor.last_id < excluded.last_id"
)
_READ_CURSORS = "SELECT user_id, room_id, seq FROM read_cursors ORDER BY user_id, room_id"
_RAISE_READ_CURSORS = (
    "INSERT INTO read_cursors (user_id, room_id, seq) SELECT user_id, room_id, seq"
    " FROM m_read_cursors ON CONFLICT (user_id, room_id) DO UPDATE SET seq = excluded.seq"
    " WHERE read_cursors.seq < excluded.seq"
)
_RAISE_LAST_SEQ = (
    "UPDATE rooms AS r SET last_seq = v.seq"
    " FROM unnest(%s::bigint[], %s::bigint[]) AS v(id, seq)"
    " WHERE r.id = v.id AND r.last_seq < v.seq"
)


@dataclass
class CopyStats:
    """What one pass changed on the target."""

    catalog: dict[str, int]
    messages: int
    seconds: float
    bulk: bool  # whether the messages' secondary constraints were rebuilt after the copy


def copy_pass(
    conn: PgConnection,
    source: SourceSnapshot,
    marker: Marker,
    *,
    chunk_rows: int = DEFAULT_CHUNK_ROWS,
    bulk_min_rows: int = _bulk.BULK_MIN_ROWS,
    progress: ProgressFactory,
) -> CopyStats:
    """Copy what `source` holds beyond the target (`marker` says how far it got): the catalog,
    then the messages after the last one copied, in bulk mode when there are many."""
    started = time.perf_counter()
    _bulk.restore(conn)  # what a cut-off bulk pass set aside
    catalog = copy_catalog(conn, source)
    set_identities(conn)
    after_id = marker.messages_max_id
    total = source.scalar("SELECT count(*) FROM messages WHERE id > ?", (after_id,))
    bulk = _bulk.wanted(total, marker.messages_copied, bulk_min_rows)
    if bulk:
        _bulk.set_aside(conn)
    messages = copy_messages(conn, source, after_id, total, chunk_rows, progress)
    if bulk:
        _bulk.restore(conn)
    set_identities(conn)
    catalog["event cursors raised"] = copy_event_cursors(conn, source)
    catalog["read cursors raised"] = copy_read_cursors(conn, source)
    return CopyStats(catalog, messages, time.perf_counter() - started, bulk)


def copy_catalog(conn: PgConnection, source: SourceSnapshot) -> dict[str, int]:
    """Stage and merge users, rooms, memberships and tokens in one transaction."""
    with conn.transaction():
        for table, (columns, query) in _STAGED.items():
            conn.execute(f"CREATE TEMP TABLE m_{table} (LIKE {table}) ON COMMIT DROP")
            with (
                conn.cursor() as cursor,
                cursor.copy(f"COPY m_{table} ({columns}) FROM STDIN") as copy,
            ):
                for row in source.rows(query):
                    copy.write_row(row)
            conn.execute(f"ANALYZE m_{table}")
        for table, query in _FOREIGN:
            foreign = conn.execute(query).fetchall()
            if foreign:
                listed = ", ".join(f"{name!r} (id {id_})" for id_, name in foreign)
                raise MigrationRefused(
                    f"the target has {table} the source does not ({listed}):"
                    " it holds data from elsewhere, or hibiki was started on it"
                )
        return {what: conn.execute(sql).rowcount for what, sql in _MERGE}


def copy_event_cursors(conn: PgConnection, source: SourceSnapshot) -> int:
    """Raise the target's event cursors to the source's, in one transaction: how many moved.
    The snapshot that copied the messages holds them, so no cursor passes an uncopied id."""
    moved = 0
    with conn.transaction():
        for partition, last_id in source.rows(_EVENT_CURSORS):
            moved += conn.execute(_RAISE_EVENT_CURSOR, (partition, last_id)).rowcount
    return moved


def copy_read_cursors(conn: PgConnection, source: SourceSnapshot) -> int:
    """Raise the target's read cursors to the source's, in one transaction: how many moved
    (added or raised). Their users and rooms are copied by then (`copy_catalog`)."""
    with conn.transaction():
        conn.execute("CREATE TEMP TABLE m_read_cursors (LIKE read_cursors) ON COMMIT DROP")
        with (
            conn.cursor() as cursor,
            cursor.copy("COPY m_read_cursors (user_id, room_id, seq) FROM STDIN") as copy,
        ):
            for row in source.rows(_READ_CURSORS):
                copy.write_row(row)
        return conn.execute(_RAISE_READ_CURSORS).rowcount


def copy_messages(
    conn: PgConnection,
    source: SourceSnapshot,
    after_id: int,
    total: int,
    chunk_rows: int,
    progress: ProgressFactory,
) -> int:
    """The `total` messages with id > `after_id`, one transaction per chunk; returns how many."""
    bar = progress("copy", total)
    copied = 0
    try:
        for chunk in source.messages_after(after_id, chunk_rows):
            last_seqs: dict[int, int] = {}
            with conn.transaction():
                with (
                    conn.cursor() as cursor,
                    cursor.copy(f"COPY messages ({MESSAGE_COLUMNS}) FROM STDIN") as copy,
                ):
                    write = copy.write_row
                    for row in chunk:
                        write(row)
                        if row[2] > last_seqs.get(row[1], 0):
                            last_seqs[row[1]] = row[2]
                conn.execute(_RAISE_LAST_SEQ, (list(last_seqs), list(last_seqs.values())))
                conn.execute(
                    "UPDATE hibiki_migration SET messages_max_id = %s,"
                    " messages_copied = messages_copied + %s",
                    (chunk[-1][0], len(chunk)),
                )
            copied += len(chunk)
            bar.update(len(chunk))
    finally:
        bar.close()
    return copied


def set_identities(conn: PgConnection) -> None:
    """Move each identity past the largest id copied, so new rows on the target never collide."""
    for table in IDENTITY_TABLES:
        conn.execute(
            f"SELECT setval(pg_get_serial_sequence('{table}', 'id'),"
            f" coalesce(max(id), 0) + 1, false) FROM {table}"
        )
