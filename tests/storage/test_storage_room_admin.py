"""The store contract for rooms with roles and settings (issue #15), on every backend of the
contract suite: visibility, topic and slow mode on the room's row, one owner who is a member,
roles, bans that keep a user out, and private rooms that `join_room` treats as unknown."""

from __future__ import annotations

import pytest

from storage import (
    PRIVATE,
    PUBLIC,
    ROLE_ADMIN,
    ROLE_MEMBER,
    ROLE_OWNER,
    Banned,
    Member,
    NotFound,
    Store,
    User,
)

from .test_storage import alice, bob, database_url, make_store, msg, store  # noqa: F401

pytestmark = pytest.mark.usefixtures("database_url")


@pytest.fixture
async def carol(store: Store) -> User:  # noqa: F811
    return await store.create_user("carol", "carol-pw")


async def test_a_new_room_is_public_owned_by_its_creator_with_its_topic(
    store: Store,  # noqa: F811
    alice: User,  # noqa: F811
) -> None:
    room = await store.create_room("r", alice.id, topic="about r")
    assert (room.visibility, room.topic, room.slow_mode, room.owner) == (
        PUBLIC,
        "about r",
        0,
        "alice",
    )
    assert await store.get_room("r") == room
    assert await store.role_of("r", alice.id) == ROLE_OWNER
    assert await store.member_roles("r") == [Member("alice", ROLE_OWNER)]
    [listed] = await store.list_rooms()
    assert listed.owner == "alice" and listed.topic == "about r"


async def test_a_private_room_is_unknown_to_join_until_an_invitation(
    store: Store,  # noqa: F811
    alice: User,  # noqa: F811
    bob: User,  # noqa: F811
) -> None:
    room = await store.create_room("p", alice.id, private=True)
    assert room.visibility == PRIVATE
    with pytest.raises(NotFound):
        await store.join_room("p", bob.id)
    assert not await store.is_member("p", bob.id)
    assert await store.add_member("p", bob.id)
    assert not await store.add_member("p", bob.id)  # already a member
    assert not await store.join_room("p", bob.id)  # a member's join changes nothing
    assert await store.role_of("p", bob.id) == ROLE_MEMBER
    assert await store.roles_of(bob.id) == {"p": ROLE_MEMBER}
    with pytest.raises(NotFound):
        await store.add_member("nope", bob.id)


async def test_update_room_sets_only_what_is_given(
    store: Store,  # noqa: F811
    alice: User,  # noqa: F811
) -> None:
    await store.create_room("r", alice.id, topic="t1")
    await store.append_batch([msg("r", alice, "hi")])
    updated = await store.update_room("r", None, 30)
    assert updated is not None
    assert (updated.topic, updated.slow_mode, updated.last_seq) == ("t1", 30, 1)
    updated = await store.update_room("r", "", None)
    assert updated is not None and (updated.topic, updated.slow_mode) == ("", 30)
    assert await store.get_room("r") == updated
    assert await store.update_room("nope", "x", 1) is None


async def test_set_role_changes_members_but_never_the_owner(
    store: Store,  # noqa: F811
    alice: User,  # noqa: F811
    bob: User,  # noqa: F811
    carol: User,
) -> None:
    await store.create_room("r", alice.id)
    await store.join_room("r", bob.id)
    assert await store.set_role("r", bob.id, ROLE_ADMIN)
    assert await store.role_of("r", bob.id) == ROLE_ADMIN
    assert not await store.set_role("r", alice.id, ROLE_MEMBER)  # the owner
    assert not await store.set_role("r", carol.id, ROLE_ADMIN)  # not a member
    assert await store.role_of("r", alice.id) == ROLE_OWNER
    assert await store.member_roles("r") == [
        Member("alice", ROLE_OWNER),
        Member("bob", ROLE_ADMIN),
    ]


async def test_transfer_makes_a_member_owner_and_the_old_owner_admin(
    store: Store,  # noqa: F811
    alice: User,  # noqa: F811
    bob: User,  # noqa: F811
    carol: User,
) -> None:
    await store.create_room("r", alice.id)
    await store.join_room("r", bob.id)
    assert not await store.transfer_owner("r", alice.id, carol.id)  # carol is not a member
    assert not await store.transfer_owner("r", bob.id, alice.id)  # bob is not the owner
    assert await store.transfer_owner("r", alice.id, bob.id)
    room = await store.get_room("r")
    assert room is not None and room.owner == "bob"
    assert await store.member_roles("r") == [
        Member("alice", ROLE_ADMIN),
        Member("bob", ROLE_OWNER),
    ]


async def test_a_ban_ends_membership_and_keeps_the_user_out_until_unbanned(
    store: Store,  # noqa: F811
    alice: User,  # noqa: F811
    bob: User,  # noqa: F811
) -> None:
    await store.create_room("r", alice.id)
    await store.join_room("r", bob.id)
    assert await store.ban("r", bob.id, alice.id)
    assert not await store.is_member("r", bob.id)
    with pytest.raises(Banned):
        await store.join_room("r", bob.id)
    with pytest.raises(Banned):
        await store.add_member("r", bob.id)
    assert not await store.ban("r", bob.id, alice.id)  # banned already, not a member
    assert await store.unban("r", bob.id)
    assert not await store.unban("r", bob.id)
    assert not await store.is_member("r", bob.id)  # unbanned is not re-joined
    assert await store.join_room("r", bob.id)
    with pytest.raises(NotFound):
        await store.ban("nope", bob.id, alice.id)
