"""What only the SQLite backend's search does (issue #15): indexing off the commit path, in
batches (a commit never writes the FTS5 index; a search indexes what is pending first), an
edit past the index's cursor hiding its message from both texts, accents ignored, and schema
v6 backfilling the messages a v5 database already holds."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from protocol import query_words
from storage import KIND_DELETE, KIND_EDIT, NewMessage, open_store
from storage.search import NO_CURSOR
from storage.sqlite import MIGRATIONS
from storage.sqlite._schema import _statements
from storage.sqlite._search import index_pending, search


def _cursor(path: Path) -> int:
    with sqlite3.connect(path) as conn:
        return int(conn.execute("SELECT last_id FROM search_cursor").fetchone()[0])


async def test_a_commit_does_not_index_and_a_search_indexes_what_is_pending(
    tmp_path: Path,
) -> None:
    path = tmp_path / "s.db"
    async with open_store(path, scrypt_n=2**10) as store:
        user = await store.create_user("alice", "pw")
        await store.create_room("r", user.id)
        await store.append_batch([NewMessage("r", user.id, "alice", "Déploiement réussi", None)])
        assert _cursor(path) == 0  # the commit wrote no index
        found, _ = await store.search(["r"], query_words("deploiement"), NO_CURSOR, 5)
        assert [m.text for m in found] == ["Déploiement réussi"]  # accents ignored
        assert _cursor(path) == 1
        await store.append_batch([NewMessage("r", user.id, "alice", "two", None)] * 3)
        assert await store.index_search() == 3
        assert await store.index_search() == 0


async def test_an_edit_past_the_cursor_hides_its_message_until_indexed(tmp_path: Path) -> None:
    path = tmp_path / "s.db"
    async with open_store(path, scrypt_n=2**10) as store:
        user = await store.create_user("alice", "pw")
        await store.create_room("r", user.id)
        [sent] = await store.append_batch([NewMessage("r", user.id, "alice", "old words", None)])
        await store.index_search()
        edit = NewMessage("r", user.id, "alice", "new words", None, KIND_EDIT, sent.message.id)
        await store.append_batch([edit])
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        for text in ("old", "new", "words"):  # what the index says is stale: not shown
            assert search(conn, ["r"], (text,), NO_CURSOR, 5) == ([], False)
        assert index_pending(conn) == 1
        assert search(conn, ["r"], ("old",), NO_CURSOR, 5) == ([], False)
        [found], _ = search(conn, ["r"], ("new",), NO_CURSOR, 5)
        assert found.text == "new words" and found.edited_at is not None
    finally:
        conn.close()


async def test_schema_v6_backfills_the_messages_a_v5_database_holds(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        for script in MIGRATIONS[:5]:
            for statement in _statements(script):
                conn.execute(statement)
        conn.execute("PRAGMA user_version = 5")
        conn.execute(
            "INSERT INTO users (id, name, password_hash, created_at) VALUES (1, 'a', 'x', 0)"
        )
        conn.execute(
            "INSERT INTO rooms (id, name, created_by, created_at, last_seq)"
            " VALUES (1, 'r', 1, 0, 4)"
        )
        rows = [
            (1, 1, "kept message", 0, None, 0),
            (2, 2, "", 0, None, 1),  # deleted
            (3, 3, "", KIND_DELETE, 2, 0),
            (4, 4, "kept message edited", KIND_EDIT, 1, 0),
        ]
        for id_, seq, text, kind, target, deleted in rows:
            conn.execute(
                "INSERT INTO messages (id, room_id, seq, user_id, user_name, text, ts, kind,"
                " target, deleted) VALUES (?, 1, ?, 1, 'a', ?, 0, ?, ?, ?)",
                (id_, seq, text, kind, target, deleted),
            )
        conn.execute("UPDATE messages SET text = 'kept message edited', edited_at = 1 WHERE id = 1")
    finally:
        conn.close()
    async with open_store(path, scrypt_n=2**10) as store:
        found, more = await store.search(["r"], ("kept",), NO_CURSOR, 5)
        assert [(m.id, m.text) for m in found] == [(1, "kept message edited")] and not more
        assert await store.index_search() == 0  # the backfill moved the cursor past all four
