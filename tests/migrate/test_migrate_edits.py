"""`hibiki migrate` copies edits and deletes (issue #15): the entries' kind and target, and each
message's current text, edit time and tombstone, verified on both sides."""

from __future__ import annotations

from pathlib import Path

import pytest

from storage import KIND_DELETE, KIND_EDIT, NewMessage, open_store
from tests.migrate.conftest import open_source, populate
from tests.migrate.test_migrate import cli, pg


async def test_edits_and_deletes_are_copied_and_verified(
    sqlite_path: Path, pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    async with open_source(sqlite_path) as store:
        chat = await populate(store, rooms=1, messages=5)
        page, _ = await store.messages.history("room0", None, 2)
        first, second = page
        for m, kind, text in ((first, KIND_EDIT, "edited ✓"), (second, KIND_DELETE, "")):
            user = next(u for u in chat.users if u.name == m.user)
            await store.messages.append_batch(
                [NewMessage("room0", user.id, user.name, text, None, kind, m.id)]
            )
        before, _ = await store.messages.history("room0", None, 10)
        replay = await store.messages.messages_after("room0", 0, 100)
    assert await cli(sqlite_path, pg_url) == 0
    assert "OK: the target matches the source" in capsys.readouterr().out
    kinds = pg(pg_url, "SELECT kind, count(*) FROM messages GROUP BY kind ORDER BY kind")
    assert kinds == [(0, 5), (1, 1), (2, 1)]
    async with open_store(pg_url, pool_size=1) as target:
        after, _ = await target.history("room0", None, 10)
        assert after == before
        assert await target.messages_after("room0", 0, 100) == replay
    edited = next(m for m in after if m.id == first.id)
    deleted = next(m for m in after if m.id == second.id)
    assert (edited.text, edited.edited_at is not None) == ("edited ✓", True)
    assert (deleted.text, deleted.deleted) == ("", True)
