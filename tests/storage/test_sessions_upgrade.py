"""The issue #15 schema upgrade on a database that already holds a user and a token: SQLite v2
-> v3 and PostgreSQL v3 -> v4 keep the token valid and make it a session (an id of its own;
no device, no creation or last use recorded), and the user gets an empty profile."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import psycopg

from storage import open_store
from storage.passwords import token_hash
from storage.postgres import MIGRATIONS as PG_MIGRATIONS
from storage.sqlite import MIGRATIONS as SQLITE_MIGRATIONS
from storage.sqlite._schema import _statements

from ..postgres import PostgresUrl

TOKEN = "t" * 43
FAR = 4_000_000_000_000  # ms: an expiry far ahead


async def _assert_upgraded(url: str) -> None:
    async with open_store(url, scrypt_n=2**10) as store:
        user = await store.user_for_token(TOKEN)
        assert user is not None and user.name == "old"
        (session,) = await store.sessions(user.id)
        assert (session.device, session.created_at, session.last_used_at) == ("", None, None)
        assert len(session.id) == 16 and session.token_hash == token_hash(TOKEN)
        profile = await store.profile("old")
        assert profile is not None and (profile.display_name, profile.last_seen) == (None, None)
        # A session made before the upgrade is revoked like any other.
        assert await store.revoke_session(user.id, session.id) == token_hash(TOKEN)
        assert await store.user_for_token(TOKEN) is None


async def test_sqlite_v2_database_upgrades_its_tokens_to_sessions(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        for script in SQLITE_MIGRATIONS[:2]:
            for statement in _statements(script):
                conn.execute(statement)
        conn.execute("PRAGMA user_version = 2")
        conn.execute("INSERT INTO users VALUES (1, 'old', 'x', 0)")
        conn.execute("INSERT INTO tokens VALUES (?, 1, ?)", (token_hash(TOKEN), FAR))
    finally:
        conn.close()
    await _assert_upgraded(f"sqlite:///{path}")


async def test_postgres_v3_database_upgrades_its_tokens_to_sessions(
    postgres_url: PostgresUrl,
) -> None:
    url = postgres_url("upgrade")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("CREATE TABLE hibiki_schema (version INTEGER NOT NULL)")
        for script in PG_MIGRATIONS[:3]:
            conn.execute(script)  # type: ignore[arg-type]
        conn.execute("INSERT INTO hibiki_schema VALUES (3)")
        conn.execute("INSERT INTO users VALUES (1, 'old', 'x', 0)")
        conn.execute("INSERT INTO tokens VALUES (%s, 1, %s)", (token_hash(TOKEN), FAR))
    await _assert_upgraded(url)
