"""Blocking jobs for search on SQLite: an FTS5 index over the messages' current text, kept up
to date off the commit path.

`message_search` (schema migration 6) is an FTS5 table whose rowids are message ids (tokenizer
unicode61, remove_diacritics 2: case and accents ignored); `search_cursor.last_id` is the
largest message id the index has taken in. An FTS5 write inside each one-message transaction
cost ~20% of a message's whole light-load cost (a new index segment per commit), so
`index_pending` takes committed rows in id order in batches instead: a message is indexed, an
edit or delete re-indexes its target (deleted: left out). SQLite numbers ids under the write
lock, so ids commit in order and a cursor never skips a row that commits later.

Search never shows what the index does not know yet: a message past the cursor is not found,
nor is one with a change past the cursor (by neither its old text nor its new one), and a
deleted message is filtered by its row. `SQLiteStore.search` first indexes what is pending, so
it reads its own writes; the server's indexer task bounds the backlog (`server/persist`).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

import msgspec

from protocol import Message
from storage.entries import ENTRY_COLUMNS, message_from_row
from storage.sqlite._connection import transaction

INDEX_BATCH = 2000
"""Rows of `messages` one indexing transaction takes in at most: a bounded write-lock hold."""

_COLUMNS = ", ".join(f"m.{column}" for column in ENTRY_COLUMNS.split(", "))
_ROOM_IDS = "SELECT id, name FROM rooms WHERE name IN (SELECT value FROM json_each(?))"
_SEARCH = (
    f"SELECT m.room_id, {_COLUMNS} FROM message_search AS f JOIN messages AS m ON m.id = f.rowid"
    " WHERE message_search MATCH ? AND f.rowid < ?"
    " AND m.room_id IN (SELECT value FROM json_each(?)) AND m.kind = 0 AND m.deleted = 0"
    " AND NOT EXISTS (SELECT 1 FROM messages AS c WHERE c.target = m.id"
    " AND c.id > (SELECT last_id FROM search_cursor))"
    " ORDER BY f.rowid DESC LIMIT ?"
)
_BEHIND = "SELECT coalesce((SELECT max(id) FROM messages), 0) > (SELECT last_id FROM search_cursor)"
_UPPER = "SELECT max(id) FROM (SELECT id FROM messages WHERE id > ? ORDER BY id LIMIT ?)"
_INDEX_NEW = (
    "INSERT INTO message_search (rowid, text) SELECT id, text FROM messages"
    " WHERE id > ? AND id <= ? AND kind = 0 AND deleted = 0"
)
_CHANGED = "SELECT target FROM messages WHERE id > ? AND id <= ? AND kind <> 0"
_UNINDEX = "DELETE FROM message_search WHERE rowid IN (SELECT value FROM json_each(?))"
_REINDEX = (
    "INSERT INTO message_search (rowid, text) SELECT id, text FROM messages"
    " WHERE id IN (SELECT value FROM json_each(?)) AND kind = 0 AND deleted = 0"
)


def match_expression(words: Sequence[str]) -> str:
    """An FTS5 query ANDing `words`, each a quoted string (so no word is ever FTS5 syntax:
    a `"` inside is doubled), the last one a prefix."""
    quoted = ['"' + word.replace('"', '""') + '"' for word in words]
    quoted[-1] += "*"
    return " ".join(quoted)


def search(
    conn: sqlite3.Connection, rooms: Sequence[str], words: Sequence[str], before_id: int, limit: int
) -> tuple[list[Message], bool]:
    names = {
        room_id: name
        for room_id, name in conn.execute(_ROOM_IDS, (msgspec.json.encode(list(rooms)).decode(),))
    }
    if not names or limit == 0:
        return [], False
    rows = conn.execute(
        _SEARCH,
        (match_expression(words), before_id, msgspec.json.encode(list(names)).decode(), limit + 1),
    ).fetchall()
    found = [message_from_row(names[row[0]], row[1:]) for row in rows[:limit]]
    return found, len(rows) > limit


def behind(conn: sqlite3.Connection) -> bool:
    """Whether committed messages wait to be indexed (a read: no write lock taken)."""
    return bool(conn.execute(_BEHIND).fetchone()[0])


def index_pending(conn: sqlite3.Connection, limit: int = INDEX_BATCH) -> int:
    """Index up to `limit` committed rows past the cursor in one write transaction, and move
    the cursor past them; how many ids it moved (0: the index was up to date)."""
    with transaction(conn):
        (low,) = conn.execute("SELECT last_id FROM search_cursor").fetchone()
        (high,) = conn.execute(_UPPER, (low, limit)).fetchone()
        if high is None:
            return 0
        conn.execute(_INDEX_NEW, (low, high))
        targets = {target for (target,) in conn.execute(_CHANGED, (low, high))}
        if targets:
            changed = msgspec.json.encode(sorted(targets)).decode()
            conn.execute(_UNINDEX, (changed,))
            conn.execute(_REINDEX, (changed,))
        conn.execute("UPDATE search_cursor SET last_id = ?", (high,))
    return int(high) - int(low)
