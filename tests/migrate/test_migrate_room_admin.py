"""`hibiki migrate` copies rooms' settings, roles and bans (issue #15): a private room arrives
private, with its topic, slow mode, owner and admins; a ban arrives and a lifted ban is lifted
by the next pass."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import psycopg
import trio

from storage import ROLE_ADMIN
from storage.migrate import migrate
from tests.migrate.conftest import open_source, populate


def _pg(target: str, query: str) -> list[tuple[object, ...]]:
    with psycopg.connect(target, autocommit=True) as conn:
        return conn.execute(query).fetchall()


async def test_settings_roles_and_bans_are_copied_then_kept_equal(
    sqlite_path: Path, pg_url: str
) -> None:
    run = partial(migrate, str(sqlite_path), pg_url)
    async with open_source(sqlite_path) as store:
        chat = await populate(store, messages=10)
        alice, bob, carol = chat.users
        await store.create_room("team", alice.id, private=True, topic="plans")
        await store.add_member("team", bob.id)
        await store.set_role("team", bob.id, ROLE_ADMIN)
        await store.update_room("team", None, 30)
        await store.ban("team", carol.id, alice.id)
        first = await trio.to_thread.run_sync(run)
        assert first.ok, first.verification.mismatches
        copied = _pg(
            pg_url,
            "SELECT visibility, topic, slow_mode, owner_id FROM rooms WHERE name = 'team'",
        )
        assert copied == [("private", "plans", 30, alice.id)]
        roles = "SELECT m.user_id, m.role FROM memberships AS m JOIN rooms AS r"
        roles += " ON r.id = m.room_id WHERE r.name = 'team' ORDER BY m.user_id"
        assert _pg(pg_url, roles) == [(alice.id, "owner"), (bob.id, "admin")]
        assert _pg(pg_url, "SELECT user_id FROM room_bans") == [(carol.id,)]
        await store.unban("team", carol.id)
        await store.transfer_owner("team", alice.id, bob.id)
        second = await trio.to_thread.run_sync(run)
    assert second.ok and second.copied is not None
    assert second.copied.catalog["bans removed"] == 1
    assert _pg(pg_url, "SELECT user_id FROM room_bans") == []
    assert _pg(pg_url, roles) == [(alice.id, "admin"), (bob.id, "owner")]
    assert _pg(pg_url, "SELECT owner_id FROM rooms WHERE name = 'team'") == [(bob.id,)]
