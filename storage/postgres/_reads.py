"""Blocking jobs for read state: each user's read cursor per room, and unread counts.

A cursor only moves forward (`mark_read` keeps the larger seq, in one upsert), so two
connections of one user marking at once, on any hosts, leave the later position. Cursors are
catalog rows (with `[storage] shards`, on the primary); the unread count reads the room's
messages, on this database when it holds them.
"""

from __future__ import annotations

import psycopg.errors

from storage.postgres._connection import Connection, constraint_error
from storage.protocols import NotFound
from storage.read_state import UNREAD_WINDOW


def mark_read(conn: Connection, room: str, user_id: int, seq: int) -> int:
    row = conn.execute("SELECT id FROM rooms WHERE name = %s", (room,)).fetchone()
    if row is None:
        raise NotFound(f"no room named {room!r}")
    try:
        stored = conn.execute(
            "INSERT INTO read_cursors (user_id, room_id, seq) VALUES (%s, %s, %s)"
            " ON CONFLICT (user_id, room_id)"
            " DO UPDATE SET seq = GREATEST(read_cursors.seq, excluded.seq) RETURNING seq",
            (user_id, row[0], seq),
        ).fetchone()
    except psycopg.errors.IntegrityError as exc:
        raise constraint_error(exc, "read cursor") from exc
    assert stored is not None
    return int(stored[0])


def read_cursors(conn: Connection, user_id: int) -> dict[str, int]:
    rows = conn.execute(
        "SELECT r.name, c.seq FROM read_cursors AS c JOIN rooms AS r ON r.id = c.room_id"
        " WHERE c.user_id = %s",
        (user_id,),
    )
    return {str(name): int(seq) for name, seq in rows}


def unread_count(conn: Connection, room: str, read_seq: int, last_seq: int, user_id: int) -> int:
    row = conn.execute(
        "SELECT count(*) FROM messages WHERE room_id = (SELECT id FROM rooms WHERE name = %s)"
        " AND seq > %s AND seq <= %s AND user_id <> %s AND kind = 0 AND NOT deleted",
        (room, read_seq, min(read_seq + UNREAD_WINDOW, last_seq), user_id),
    ).fetchone()
    assert row is not None
    return int(row[0])
