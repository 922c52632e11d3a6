"""Blocking job for search on SQLite: an FTS5 index over the messages' current text.

`message_search` (schema migration 6) is a contentless FTS5 table whose rowids are message ids
(tokenizer unicode61, remove_diacritics 2: case and accents ignored), kept in step by triggers
in the writing transaction: a message is indexed when inserted, re-indexed when an edit changes
its text, and dropped when deleted (its row's text becomes ""). Edit and delete entries (kind
1, 2) are never indexed. FTS5 hands back rowids (message ids) in descending order natively, so
a page is the first `limit` + 1 matches at or under the cursor, filtered to the rooms asked.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

import msgspec

from protocol import Message
from storage.entries import ENTRY_COLUMNS, message_from_row

_COLUMNS = ", ".join(f"m.{column}" for column in ENTRY_COLUMNS.split(", "))
_ROOM_IDS = "SELECT id, name FROM rooms WHERE name IN (SELECT value FROM json_each(?))"
_SEARCH = (
    f"SELECT m.room_id, {_COLUMNS} FROM message_search AS f JOIN messages AS m ON m.id = f.rowid"
    " WHERE message_search MATCH ? AND f.rowid < ?"
    " AND m.room_id IN (SELECT value FROM json_each(?)) AND m.kind = 0 AND m.deleted = 0"
    " ORDER BY f.rowid DESC LIMIT ?"
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
