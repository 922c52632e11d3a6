"""Blocking job for search on PostgreSQL (and on each shard database): a GIN index over
`to_tsvector('simple', text)`.

The 'simple' configuration lower-cases and stems nothing, and knows no stop words: chat is
multilingual, and a language's stemmer would mangle every other language's words. Accents are
kept (unaccent is an extension not every server has): on PostgreSQL "cafe" does not find "café",
unlike SQLite. The index is partial (schema migration 7; shard schema 4): messages (kind 0) not
deleted. It is an expression index, not a stored column, so an edit re-indexes the row in the
same transaction as the UPDATE of its text, a delete takes it out, and nothing else changes:
the copy and the migration write the same columns as before.
"""

from __future__ import annotations

from collections.abc import Sequence

from protocol import Message
from storage.entries import ENTRY_COLUMNS, message_from_row
from storage.postgres._connection import Connection

PG_ROOMS = "SELECT id, name FROM rooms WHERE name = ANY(%s)"
SHARD_ROOMS = "SELECT room_id, name FROM shard_rooms WHERE name = ANY(%s)"


def search_statement(table: str) -> str:
    """The page query on `table`; its WHERE implies the partial index's predicate."""
    return (
        f"SELECT room_id, {ENTRY_COLUMNS} FROM {table} WHERE room_id = ANY(%s) AND id < %s"
        " AND kind = 0 AND NOT deleted"
        " AND to_tsvector('simple', text) @@ to_tsquery('simple', %s)"
        " ORDER BY id DESC LIMIT %s"
    )


_SEARCH = search_statement("messages")


def tsquery(words: Sequence[str]) -> str:
    """A tsquery ANDing `words`, each a quoted lexeme (a `'` doubled, a backslash escaped: no
    word is ever tsquery syntax), the last one a prefix (`:*`)."""
    quoted = ["'" + w.replace("\\", "\\\\").replace("'", "''") + "'" for w in words]
    quoted[-1] += ":*"
    return " & ".join(quoted)


def search(
    conn: Connection,
    rooms: Sequence[str],
    words: Sequence[str],
    before_id: int,
    limit: int,
    *,
    rooms_query: str = PG_ROOMS,
    statement: str = _SEARCH,
) -> tuple[list[Message], bool]:
    names = {int(room_id): str(name) for room_id, name in conn.execute(rooms_query, (list(rooms),))}
    if not names or limit == 0:
        return [], False
    rows = conn.execute(statement, (list(names), before_id, tsquery(words), limit + 1)).fetchall()
    found = [message_from_row(names[int(row[0])], row[1:]) for row in rows[:limit]]
    return found, len(rows) > limit
