"""The store contract for profiles and sessions (issue #15), on every backend of the contract
suite (test_storage.py's fixtures: sqlite, postgresql, sharded): real databases, no mocks."""

from __future__ import annotations

import pytest

from storage import Store, User
from storage.accounts import MAX_DISPLAY_NAME, check_display_name
from storage.passwords import token_hash

from .test_storage import alice, bob, database_url, make_store, store

__all__ = ["alice", "bob", "database_url", "make_store", "store"]  # the fixtures, re-used


async def test_each_token_is_a_session_listed_with_its_device_and_never_the_token(
    store: Store, alice: User, bob: User
) -> None:
    first = await store.create_token(alice.id, 60, "Firefox on Linux")
    second = await store.create_token(alice.id, 60, "phone")
    await store.create_token(bob.id, 60, "bob's")
    sessions = await store.sessions(alice.id)
    assert {s.device for s in sessions} == {"Firefox on Linux", "phone"}
    assert {s.token_hash for s in sessions} == {token_hash(first), token_hash(second)}
    for session in sessions:
        assert session.id not in (first, second, session.token_hash)
        assert len(session.id) == 16
        assert session.created_at is not None and session.last_used_at == session.created_at
        assert session.expires_at > session.created_at
    assert len({s.id for s in sessions}) == 2


async def test_revoke_session_deletes_only_the_owners_session(
    store: Store, alice: User, bob: User
) -> None:
    token = await store.create_token(alice.id, 60, "a")
    kept = await store.create_token(alice.id, 60, "b")
    (session,) = [s for s in await store.sessions(alice.id) if s.device == "a"]
    assert await store.revoke_session(bob.id, session.id) is None  # not bob's: not found
    assert await store.user_for_token(token) == alice
    assert await store.revoke_session(alice.id, session.id) == token_hash(token)
    assert await store.user_for_token(token) is None
    assert await store.user_for_token(kept) == alice
    assert await store.revoke_session(alice.id, session.id) is None  # gone already


async def test_revoke_sessions_keeps_the_current_one_or_none(
    store: Store, alice: User, bob: User
) -> None:
    tokens = [await store.create_token(alice.id, 60, f"d{i}") for i in range(3)]
    bobs = await store.create_token(bob.id, 60)
    revoked = await store.revoke_sessions(alice.id, tokens[0])
    assert sorted(revoked) == sorted(token_hash(t) for t in tokens[1:])
    assert [s.token_hash for s in await store.sessions(alice.id)] == [token_hash(tokens[0])]
    assert await store.revoke_sessions(alice.id, None) == [token_hash(tokens[0])]
    assert await store.sessions(alice.id) == []
    assert await store.user_for_token(bobs) == bob


async def test_change_password_checks_the_old_and_revokes_the_other_sessions(
    store: Store, alice: User
) -> None:
    current = await store.create_token(alice.id, 60)
    other = await store.create_token(alice.id, 60)
    assert await store.change_password(alice, "wrong", "new-password", current) is None
    assert await store.check_password("alice", "alice-pw") == alice
    assert await store.user_for_token(other) == alice
    revoked = await store.change_password(alice, "alice-pw", "new-password", current)
    assert revoked == [token_hash(other)]
    assert await store.check_password("alice", "alice-pw") is None
    assert await store.check_password("alice", "new-password") == alice
    assert await store.user_for_token(current) == alice
    assert await store.user_for_token(other) is None


async def test_display_name_is_set_normalised_cleared_and_shown_in_the_profile(
    store: Store, alice: User
) -> None:
    profile = await store.profile("alice")
    assert profile is not None
    assert (profile.user, profile.display_name, profile.last_seen) == (alice, None, None)
    assert await store.set_display_name(alice.id, "  Alice Liddell  ") == "Alice Liddell"
    assert (await store.profile("alice")).display_name == "Alice Liddell"  # type: ignore[union-attr]
    assert await store.set_display_name(alice.id, "アリス") == "アリス"
    assert (await store.profile("alice")).display_name == "アリス"  # type: ignore[union-attr]
    assert await store.set_display_name(alice.id, "   ") is None
    assert (await store.profile("alice")).display_name is None  # type: ignore[union-attr]
    with pytest.raises(ValueError, match="over 64"):
        await store.set_display_name(alice.id, "x" * (MAX_DISPLAY_NAME + 1))
    assert await store.profile("nobody") is None


@pytest.mark.parametrize("bad", ["a\nb", "tab\there", "nul\x00", "bidi\u202e", "\ud800"])
def test_display_names_with_control_characters_or_line_breaks_are_refused(bad: str) -> None:
    with pytest.raises(ValueError, match="display_name contains"):
        check_display_name(bad)


async def test_record_activity_raises_last_use_and_last_seen_and_never_lowers_them(
    store: Store, alice: User, bob: User
) -> None:
    token = await store.create_token(alice.id, 60)
    (before,) = await store.sessions(alice.id)
    assert before.last_used_at is not None
    later = before.last_used_at + 5_000
    await store.record_activity({token_hash(token): later, "unknown-hash": 1}, {alice.id: later})
    await store.record_activity({token_hash(token): later - 1}, {alice.id: 10, 999_999: 5})
    (after,) = await store.sessions(alice.id)
    assert after.last_used_at == later
    assert after.created_at == before.created_at
    profile = await store.profile("alice")
    assert profile is not None and profile.last_seen == later
    assert (await store.profile("bob")).last_seen is None  # type: ignore[union-attr]
    await store.record_activity({}, {})  # nothing to write is not an error


async def test_expired_sessions_are_not_listed(store: Store, alice: User) -> None:
    await store.create_token(alice.id, -1, "expired")
    await store.create_token(alice.id, 60, "live")
    assert [s.device for s in await store.sessions(alice.id)] == ["live"]


async def test_device_labels_are_cleaned_and_cut(store: Store, alice: User) -> None:
    await store.create_token(alice.id, 60, "  Mozilla/5.0\x00 (X11;\n Linux)  " + "x" * 200)
    (session,) = await store.sessions(alice.id)
    assert session.device.startswith("Mozilla/5.0 (X11; Linux) xxx")
    assert len(session.device) == 100
