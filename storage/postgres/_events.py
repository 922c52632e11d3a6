"""Blocking jobs for the event stream's outbox: committed messages by id, and the cursor of the
last id appended per stream partition (see storage.protocols.EventOutbox); and the appender's
lease, a session-level advisory lock.

Several hosts commit concurrently here, so ids do not become visible in id order: a batch takes
its ids (identity) after locking its rooms, and may commit after a batch that took larger ones.
`messages_for_stream` therefore reports the transaction horizon around its read
(`pg_current_snapshot()`), which tells the appender when an id it saw missing can no longer
appear. That relies on a batch holding a transaction id before it takes message ids: its first
statement locks its rooms' rows (`FOR UPDATE`), which assigns one.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import psycopg

from protocol import Message
from storage.postgres._connection import Connection, Settings
from storage.protocols import StreamRead

_log = logging.getLogger(__name__)

_COLUMNS = "r.name, m.id, m.seq, m.user_name, m.text, m.ts, m.client_id"
_SINCE_ID = (
    f"SELECT {_COLUMNS} FROM messages AS m JOIN rooms AS r ON r.id = m.room_id"
    " WHERE m.id > %s AND m.kind = 0 ORDER BY m.id LIMIT %s"  # edits: not in the stream yet
)
_ADVANCE = (
    "INSERT INTO events_cursor (partition, last_id) VALUES (%s, %s)"
    " ON CONFLICT (partition) DO UPDATE"
    " SET last_id = greatest(events_cursor.last_id, excluded.last_id)"
)


def messages_since_id(conn: Connection, after_id: int, limit: int) -> list[Message]:
    return _messages(conn.execute(_SINCE_ID, (after_id, limit)))


_IN_GAPS = (
    f"SELECT {_COLUMNS} FROM unnest(%s::int8[], %s::int8[]) AS g(lo, hi)"
    " JOIN messages AS m ON m.id BETWEEN g.lo AND g.hi JOIN rooms AS r ON r.id = m.room_id"
    " WHERE m.kind = 0"  # an edit's or delete's id is a hole to the stream, like a resend's
)
_XMIN = "SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint"
_XMAX = "SELECT pg_snapshot_xmax(pg_current_snapshot())::text::bigint"


def messages_for_stream(
    conn: Connection, gaps: Sequence[tuple[int, int]], after_id: int, limit: int
) -> StreamRead:
    # Autocommit: each statement has a snapshot of its own, each later than the one before.
    xmin = _scalar(conn, _XMIN)
    found: list[Message] = []
    if gaps:
        rows = conn.execute(_IN_GAPS, ([lo for lo, _ in gaps], [hi for _, hi in gaps]))
        found = _messages(rows)
    found += messages_since_id(conn, after_id, limit)
    found.sort(key=lambda m: m.id)
    return StreamRead(found, (xmin, _scalar(conn, _XMAX)))


def _scalar(conn: Connection, sql: str) -> int:
    row = conn.execute(sql).fetchone()
    assert row is not None
    return int(row[0])


def _messages(rows: Iterable[tuple[Any, ...]]) -> list[Message]:
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


# Any fixed 64-bit key, not the schema migration's (storage.postgres._schema): the appender's.
APPENDER_LOCK_KEY = 0x68696269_6B690002


class AdvisoryLease:
    """`AppenderLease` as a session-level advisory lock (`pg_try_advisory_lock`) on a connection
    of its own, outside the pool: the lock lives exactly as long as that session, so a dead
    process, host or network link releases it once PostgreSQL sees the session end, and a
    lost connection is lost leadership."""

    def __init__(self, settings: Settings, key: int = APPENDER_LOCK_KEY) -> None:
        self._settings = settings
        self._key = key  # a shard database's appender has its own (storage/routing)
        self._conn: Connection | None = None

    def acquire(self) -> bool:
        if self._conn is None:
            try:
                conn = self._settings.connect()
            except psycopg.Error as exc:
                _log.debug("appender lease: cannot connect: %s", type(exc).__name__)
                return False
            self._conn = conn
        try:
            row = self._conn.execute("SELECT pg_try_advisory_lock(%s)", (self._key,))
            got = row.fetchone()
        except psycopg.Error:
            self.release()
            return False
        if got is None or not got[0]:
            self.release()  # a follower keeps no connection open between attempts
            return False
        return True

    def held(self) -> bool:
        if self._conn is None:
            return False
        try:
            self._conn.execute("SELECT 1").fetchone()
        except psycopg.Error:
            self.release()
            return False
        return True

    def release(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.close()  # ends the session, and the lock with it
