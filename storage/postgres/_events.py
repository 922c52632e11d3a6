"""Blocking jobs for the event stream's outbox: committed messages by id, and the cursor of the
last id appended per stream partition (see storage.protocols.EventOutbox)."""

from __future__ import annotations

from collections.abc import Mapping

from protocol import Message
from storage.postgres._connection import Connection

_SINCE_ID = (
    "SELECT r.name, m.id, m.seq, m.user_name, m.text, m.ts, m.client_id"
    " FROM messages AS m JOIN rooms AS r ON r.id = m.room_id"
    " WHERE m.id > %s AND m.kind = 0 ORDER BY m.id LIMIT %s"  # edits: not in the stream yet
)
_ADVANCE = (
    "INSERT INTO events_cursor (partition, last_id) VALUES (%s, %s)"
    " ON CONFLICT (partition) DO UPDATE"
    " SET last_id = greatest(events_cursor.last_id, excluded.last_id)"
)


def messages_since_id(conn: Connection, after_id: int, limit: int) -> list[Message]:
    rows = conn.execute(_SINCE_ID, (after_id, limit))
    return [
        Message(name, int(i), int(seq), user, text, int(ts), cid)
        for name, i, seq, user, text, ts, cid in rows
    ]


def last_message_id(conn: Connection) -> int:
    row = conn.execute("SELECT coalesce(max(id), 0) FROM messages").fetchone()
    return int(row[0]) if row is not None else 0


def event_cursors(conn: Connection) -> dict[int, int]:
    rows = conn.execute("SELECT partition, last_id FROM events_cursor")
    return {int(partition): int(last_id) for partition, last_id in rows}


def advance_event_cursors(conn: Connection, cursors: Mapping[int, int]) -> None:
    with conn.transaction():
        for partition, last_id in sorted(cursors.items()):
            conn.execute(_ADVANCE, (partition, last_id))
