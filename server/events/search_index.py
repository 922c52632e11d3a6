"""The consumer shipped with hibiki: a full-text search index of messages (SQLite FTS5).

Chosen because it needs nothing the events do not carry (an unread count would also need each
user's read position, which no event says yet) and because it shows the dedupe rule at work:
a message is indexed once per (room, seq), its primary key, however often it is delivered.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

import trio

from server.events.stream import StreamEvent

_SCHEMA = (
    "CREATE TABLE IF NOT EXISTS indexed (room TEXT NOT NULL, seq INTEGER NOT NULL,"
    " PRIMARY KEY (room, seq)) WITHOUT ROWID",
    "CREATE VIRTUAL TABLE IF NOT EXISTS message_text USING fts5("
    "text, room UNINDEXED, seq UNINDEXED, user UNINDEXED, id UNINDEXED)",
)


@dataclass(frozen=True, slots=True)
class Hit:
    room: str
    seq: int
    user: str
    text: str


class SearchIndex:
    """An index in a SQLite file; `add` is an `EventConsumer` handler. Its blocking work runs
    on a worker thread, one call at a time (one connection, not shared between threads)."""

    def __init__(self, path: str) -> None:
        self._conn = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        for statement in _SCHEMA:
            self._conn.execute(statement)
        self._lock = trio.Lock()
        self.indexed = 0  # messages added (repeats not counted)

    async def add(self, events: Sequence[StreamEvent]) -> None:
        async with self._lock:
            self.indexed += await trio.to_thread.run_sync(self._add, events)

    def _add(self, events: Sequence[StreamEvent]) -> int:
        added = 0
        with self._conn:
            self._conn.execute("BEGIN")
            for item in events:
                e = item.event
                fresh = self._conn.execute(
                    "INSERT OR IGNORE INTO indexed (room, seq) VALUES (?, ?)", (e.room, e.seq)
                ).rowcount
                if fresh:
                    self._conn.execute(
                        "INSERT INTO message_text (text, room, seq, user, id) VALUES (?,?,?,?,?)",
                        (e.text, e.room, e.seq, e.user, e.id),
                    )
                    added += 1
        return added

    async def search(self, query: str, limit: int = 20) -> list[Hit]:
        async with self._lock:
            return await trio.to_thread.run_sync(self._search, query, limit)

    def _search(self, query: str, limit: int) -> list[Hit]:
        rows = self._conn.execute(
            "SELECT room, seq, user, text FROM message_text WHERE message_text MATCH ?"
            " ORDER BY rank LIMIT ?",
            (query, limit),
        )
        return [Hit(room, int(seq), user, text) for room, seq, user, text in rows]

    def count(self) -> int:
        return int(self._conn.execute("SELECT count(*) FROM indexed").fetchone()[0])

    def close(self) -> None:
        self._conn.close()
