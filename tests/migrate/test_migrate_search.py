"""`hibiki migrate` and search (issue #15): the copy from SQLite still verifies with the FTS5
index and its cursor in the source (they are not copied: the target's GIN index is built from
the rows it receives), and a search on the target finds what one on the source found, edits
and deletes applied."""

from __future__ import annotations

from pathlib import Path

import pytest

from protocol import query_words
from storage import KIND_DELETE, KIND_EDIT, NewMessage, open_store
from storage.search import NO_CURSOR
from tests.migrate.conftest import open_source, populate
from tests.migrate.test_migrate import cli


async def test_a_migrated_database_searches_as_its_source_did(
    sqlite_path: Path, pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    async with open_source(sqlite_path) as store:
        chat = await populate(store, rooms=2, messages=4)
        user = chat.users[0]
        rooms = ["room0", "room1"]
        for room in rooms:
            await store.join_room(room, user.id)
        sent = await store.messages.append_batch(
            [NewMessage(room, user.id, user.name, f"needle in {room}", None) for room in rooms]
            + [NewMessage("room0", user.id, user.name, "needle typo", None)]
        )
        edited, deleted = sent[0].message.id, sent[1].message.id
        await store.messages.append_batch(
            [
                NewMessage("room0", user.id, user.name, "needle fixed", None, KIND_EDIT, edited),
                NewMessage("room1", user.id, user.name, "", None, KIND_DELETE, deleted),
            ]
        )
        before = await store.search(rooms, query_words("needle"), NO_CURSOR, 50)
    assert [m.text for m in before[0]] == ["needle typo", "needle fixed"]
    assert await cli(sqlite_path, pg_url) == 0
    assert "OK: the target matches the source" in capsys.readouterr().out
    async with open_store(pg_url, pool_size=1) as target:
        assert await target.search(rooms, query_words("needle"), NO_CURSOR, 50) == before
        assert await target.search(rooms, query_words("typo"), NO_CURSOR, 50) == (
            before[0][:1],
            False,
        )
