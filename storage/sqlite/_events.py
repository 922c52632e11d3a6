"""Blocking jobs for the event stream's outbox: committed messages by id, and the cursor of the
last id appended per stream partition (see storage.protocols.EventOutbox)."""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping

from protocol import Message
from storage.sqlite._connection import transaction

_SINCE_ID = (
    "SELECT r.name, m.id, m.seq, m.user_name, m.text, m.ts, m.client_id"
    " FROM messages AS m JOIN rooms AS r ON r.id = m.room_id"
    " WHERE m.id > ? AND m.kind = 0 ORDER BY m.id LIMIT ?"  # edits: not in the stream yet
)
_ADVANCE = (
    "INSERT INTO events_cursor (partition, last_id) VALUES (?, ?)"
    " ON CONFLICT (partition) DO UPDATE SET last_id = max(last_id, excluded.last_id)"
)


def messages_since_id(conn: sqlite3.Connection, after_id: int, limit: int) -> list[Message]:
    return [Message(*row) for row in conn.execute(_SINCE_ID, (after_id, limit))]


def last_message_id(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT coalesce(max(id), 0) FROM messages").fetchone()
    return int(row[0]) if row is not None else 0


def event_cursors(conn: sqlite3.Connection) -> dict[int, int]:
    return dict(conn.execute("SELECT partition, last_id FROM events_cursor"))


def advance_event_cursors(conn: sqlite3.Connection, cursors: Mapping[int, int]) -> None:
    with transaction(conn):
        conn.executemany(_ADVANCE, sorted(cursors.items()))
