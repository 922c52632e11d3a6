"""Blocking jobs for read state: each user's read cursor per room, and unread counts.

A cursor only moves forward (`mark_read` keeps the larger seq), so two connections of one user
marking at once, in either order, leave the later position. Cursors are catalog rows; the unread
count reads the room's messages (on this backend, the same database).
"""

from __future__ import annotations

import sqlite3

from storage.protocols import NotFound
from storage.read_state import UNREAD_WINDOW
from storage.sqlite._connection import constraint_error


def mark_read(conn: sqlite3.Connection, room: str, user_id: int, seq: int) -> int:
    row = conn.execute("SELECT id FROM rooms WHERE name = ?", (room,)).fetchone()
    if row is None:
        raise NotFound(f"no room named {room!r}")
    try:
        stored = conn.execute(
            "INSERT INTO read_cursors (user_id, room_id, seq) VALUES (?, ?, ?)"
            " ON CONFLICT (user_id, room_id) DO UPDATE SET seq = max(seq, excluded.seq)"
            " RETURNING seq",
            (user_id, row[0], seq),
        ).fetchone()
    except sqlite3.IntegrityError as exc:
        raise constraint_error(exc, "read cursor") from exc
    cursor: int = stored[0]
    return cursor


def read_cursors(conn: sqlite3.Connection, user_id: int) -> dict[str, int]:
    rows = conn.execute(
        "SELECT r.name, c.seq FROM read_cursors AS c JOIN rooms AS r ON r.id = c.room_id"
        " WHERE c.user_id = ?",
        (user_id,),
    )
    return {str(name): int(seq) for name, seq in rows}


def unread_count(
    conn: sqlite3.Connection, room: str, read_seq: int, last_seq: int, user_id: int
) -> int:
    row = conn.execute(
        "SELECT count(*) FROM messages WHERE room_id = (SELECT id FROM rooms WHERE name = ?)"
        " AND seq > ? AND seq <= ? AND user_id <> ? AND kind = 0 AND NOT deleted",
        (room, read_seq, min(read_seq + UNREAD_WINDOW, last_seq), user_id),
    ).fetchone()
    count: int = row[0]
    return count
