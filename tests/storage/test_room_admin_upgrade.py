"""The rooms-with-roles upgrade (issue #15, the last migration of each backend) on a database
that already holds rooms: they become public, with no topic and no slow mode; a room is owned by
its creator while the creator is still a member, and has no owner once the creator left."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import psycopg

from storage import PUBLIC, ROLE_MEMBER, ROLE_OWNER, Member, open_store
from storage.postgres import MIGRATIONS as PG_MIGRATIONS
from storage.sqlite import MIGRATIONS as SQLITE_MIGRATIONS
from storage.sqlite._schema import _statements

from ..postgres import PostgresUrl

_ROWS = (
    "INSERT INTO users (id, name, password_hash, created_at) VALUES (1, 'ann', 'x', 0),"
    " (2, 'ben', 'x', 0)",
    "INSERT INTO rooms (id, name, created_by, created_at) VALUES (1, 'kept', 1, 0),"
    " (2, 'left', 1, 0)",
    "INSERT INTO memberships (room_id, user_id, joined_at) VALUES (1, 1, 0), (1, 2, 0), (2, 2, 0)",
)


async def _assert_upgraded(url: str) -> None:
    async with open_store(url, scrypt_n=2**10) as store:
        kept, left = await store.get_room("kept"), await store.get_room("left")
        assert kept is not None and left is not None
        assert (kept.visibility, kept.topic, kept.slow_mode, kept.owner) == (PUBLIC, "", 0, "ann")
        assert left.owner is None
        assert await store.member_roles("kept") == [
            Member("ann", ROLE_OWNER),
            Member("ben", ROLE_MEMBER),
        ]
        assert await store.member_roles("left") == [Member("ben", ROLE_MEMBER)]


async def test_sqlite_rooms_get_owners_and_settings_on_upgrade(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    before = len(SQLITE_MIGRATIONS) - 1
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        for script in SQLITE_MIGRATIONS[:before]:
            for statement in _statements(script):
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {before:d}")
        for statement in _ROWS:
            conn.execute(statement)
    finally:
        conn.close()
    await _assert_upgraded(f"sqlite:///{path}")


async def test_postgres_rooms_get_owners_and_settings_on_upgrade(
    postgres_url: PostgresUrl,
) -> None:
    url = postgres_url("upgrade")
    before = len(PG_MIGRATIONS) - 1
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE hibiki_schema (version INTEGER NOT NULL)")
        for script in PG_MIGRATIONS[:before]:
            conn.execute(script)  # type: ignore[arg-type]
        conn.execute("INSERT INTO hibiki_schema VALUES (%s)", (before,))
        for statement in _ROWS:
            conn.execute(statement)  # type: ignore[arg-type]
    await _assert_upgraded(url)
