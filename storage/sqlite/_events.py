"""Blocking jobs for the event stream's outbox: committed messages by id, and the cursor of the
last id appended per stream partition (see storage.protocols.EventOutbox); and the appender's
lease, an exclusive `flock` on a file beside the database.

One writer at a time (`BEGIN IMMEDIATE`) numbers ids inside its transaction, so ids become
visible in id order: an id missing below one read is never committed later (`StreamRead`'s
horizon is None).
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import sqlite3
from collections.abc import Mapping, Sequence

from protocol import Message
from storage.protocols import StreamRead
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


def messages_for_stream(
    conn: sqlite3.Connection, gaps: Sequence[tuple[int, int]], after_id: int, limit: int
) -> StreamRead:
    del gaps  # never any: with no horizon, an id missing once is missing for good
    return StreamRead(messages_since_id(conn, after_id, limit), None)


def last_message_id(conn: sqlite3.Connection) -> int:
    row = conn.execute("SELECT coalesce(max(id), 0) FROM messages").fetchone()
    return int(row[0]) if row is not None else 0


def event_cursors(conn: sqlite3.Connection) -> dict[int, int]:
    return dict(conn.execute("SELECT partition, last_id FROM events_cursor"))


def advance_event_cursors(conn: sqlite3.Connection, cursors: Mapping[int, int]) -> None:
    with transaction(conn):
        conn.executemany(_ADVANCE, sorted(cursors.items()))


class FileLease:
    """`AppenderLease` as an exclusive, non-blocking `flock` on `<database>-appender.lock`.

    Chosen over a lease row: the kernel drops the lock the moment its holder dies (kill -9
    included), so a follower takes over at its next attempt with no expiry to wait out or clock
    to trust, and holding it writes nothing to the database (a lease row would renew through the
    one write lock the writer needs). flock locks belong to an open file, so two leases in one
    process exclude each other as two processes do. SQLite files are shared by processes on one
    host only, which is where flock holds. An in-memory database is one process's: its lease
    is always free."""

    def __init__(self, database: str) -> None:
        self.path = None if database in ("", ":memory:") else f"{database}-appender.lock"
        self._fd: int | None = None
        self._memory_held = False

    def acquire(self) -> bool:
        if self.path is None:
            self._memory_held = True
            return True
        if self._fd is not None:
            return self.held()
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        except OSError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def held(self) -> bool:
        if self.path is None:
            return self._memory_held
        if self._fd is None:
            return False
        try:  # the file we lock must still be the one at the path, or another could lock that
            same = os.fstat(self._fd).st_ino == os.stat(self.path).st_ino
        except OSError:
            same = False
        if not same:
            self.release()
        return same

    def release(self) -> None:
        self._memory_held = False
        fd, self._fd = self._fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)  # closing the file drops the lock
