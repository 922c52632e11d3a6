"""`hibiki migrate` copies profiles and sessions (issue #15): display names, last_seen, each
token's session id, device, creation and last use; a later pass brings their changes, and the
verifier compares them."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import psycopg
import trio

from storage.migrate import migrate
from storage.passwords import token_hash
from tests.migrate.conftest import open_source, populate


def _pg(target: str, query: str) -> list[tuple[object, ...]]:
    with psycopg.connect(target, autocommit=True) as conn:
        return conn.execute(query).fetchall()


async def test_profiles_and_sessions_are_copied_then_kept_equal(
    sqlite_path: Path, pg_url: str
) -> None:
    run = partial(migrate, str(sqlite_path), pg_url)
    async with open_source(sqlite_path) as store:  # the old server stays live throughout
        chat = await populate(store, messages=10)
        alice = chat.users[0]
        await store.accounts.set_display_name(alice.id, "Alice L.")
        token = await store.accounts.create_token(alice.id, 3600, "phone")
        first = await trio.to_thread.run_sync(run)
        assert first.ok, first.verification.mismatches
        await store.accounts.set_display_name(alice.id, "Alice")
        later = 2_000_000_000_000
        await store.accounts.record_activity({token_hash(token): later}, {alice.id: later})
        second = await trio.to_thread.run_sync(run)
        sessions = await store.accounts.sessions(alice.id)
    assert second.ok, second.verification.mismatches
    assert second.copied is not None
    assert second.copied.catalog["users updated"] == 1
    assert second.copied.catalog["tokens updated"] == 1
    users = _pg(pg_url, f"SELECT display_name, last_seen FROM users WHERE id = {alice.id}")
    assert users == [("Alice", later)]
    (phone,) = [s for s in sessions if s.device == "phone"]
    copied = _pg(
        pg_url,
        "SELECT session_id, device, created_at, last_used_at FROM tokens"
        f" WHERE token_hash = '{token_hash(token)}'",
    )
    assert copied == [(phone.id, "phone", phone.created_at, later)]


async def test_the_verifier_sees_a_session_that_differs(sqlite_path: Path, pg_url: str) -> None:
    async with open_source(sqlite_path) as store:
        chat = await populate(store, messages=10)
        await store.accounts.create_token(chat.users[0].id, 3600, "phone")
    first = await trio.to_thread.run_sync(partial(migrate, str(sqlite_path), pg_url))
    assert first.ok
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("UPDATE tokens SET device = 'tampered' WHERE device = 'phone'")
    checked = await trio.to_thread.run_sync(
        partial(migrate, str(sqlite_path), pg_url, verify_only=True)
    )
    assert not checked.ok
    assert "tokens" in {m.what for m in checked.verification.mismatches}
