"""Rooms with roles and settings over the WebSocket (issue #15): settings changes reach the
members live, invitations join at once, kicks and bans remove every connection, the owner's
rules, slow mode with `retry_after`, and an admin's delete of another member's message."""

from __future__ import annotations

from typing import Any

import httpx

from ..conftest import Account, Connect, Peer, create_room, join_room, register


def _auth(account: Account) -> dict[str, str]:
    return {"Authorization": f"Bearer {account.token}"}


async def _private(http: httpx.AsyncClient, owner: Account, room: str) -> None:
    response = await http.post(
        "/api/rooms", json={"name": room, "private": True, "topic": "t"}, headers=_auth(owner)
    )
    assert response.status_code == 201, response.text
    assert (response.json()["visibility"], response.json()["role"]) == ("private", "owner")


# What members are told unasked, passed over while waiting for something else.
_TOLD = ("presence", "typing", "message", "deleted", "member_updated", "room_updated")


async def _ask(peer: Peer, expected: str, **frame: Any) -> dict[str, Any]:
    """Send `frame` and return its answer (the event with its ref), which must be `expected`;
    events told meanwhile are passed over."""
    await peer.send(ref="q", **frame)
    while (answer := await peer.recv()).get("ref") != "q":
        assert answer["type"] in (*_TOLD, "joined"), answer
    assert answer["type"] == expected, answer
    return answer


async def _told(peer: Peer, type_: str) -> dict[str, Any]:
    return await peer.expect(type_, skip=tuple(t for t in _TOLD if t != type_))


async def test_room_update_answers_the_admin_and_reaches_every_member(
    http: httpx.AsyncClient, connect: Connect
) -> None:
    ann, bob = await register(http), await register(http)
    await create_room(http, ann, "lobby")
    await join_room(http, bob, "lobby")
    async with connect(ann) as owner, connect(bob) as member:
        answer = await _ask(owner, "room_updated", type="room_update", room="lobby", slow_mode=5)
        assert (answer["slow_mode"], answer["topic"], answer["owner"]) == (5, "", ann.name)
        told = await _told(member, "room_updated")
        assert "ref" not in told and told["slow_mode"] == 5 and told["by"] == ann.name
        error = await _ask(member, "error", type="room_update", room="lobby", topic="mine")
        assert error["code"] == "forbidden"
        await owner.send(type="room_update", room="lobby", slow_mode=3601)
        assert (await owner.expect("error"))["code"] == "bad_field"


async def test_invite_joins_the_user_at_once_and_kick_removes_every_connection(
    http: httpx.AsyncClient, connect: Connect
) -> None:
    ann, bob = await register(http), await register(http)
    await _private(http, ann, "team")
    async with connect(ann) as owner, connect(bob) as first, connect(bob) as second:
        answer = await _ask(owner, "member_updated", type="invite", room="team", user=bob.name)
        assert (answer["change"], answer["role"]) == ("invited", "member")
        for peer in (first, second):
            assert (await _told(peer, "joined"))["room"] == "team"
        await _ask(first, "history", type="history", room="team")
        answer = await _ask(owner, "member_updated", type="kick", room="team", user=bob.name)
        assert answer["change"] == "kicked" and "role" not in answer
        for peer in (first, second):
            removed = await _told(peer, "removed")
            assert removed == {
                "type": "removed",
                "room": "team",
                "reason": "kicked",
                "by": ann.name,
            }
        # Kicked: the room is again, to bob, a room that does not exist.
        error = await _ask(first, "error", type="join", room="team")
        assert error["code"] == "no_such_room"
        error = await _ask(first, "error", type="send", room="team", text="hi")
        assert error["code"] == "not_member"


async def test_ban_keeps_the_user_out_until_unbanned(
    http: httpx.AsyncClient, connect: Connect
) -> None:
    ann, bob = await register(http), await register(http)
    await create_room(http, ann, "lobby")
    await join_room(http, bob, "lobby")
    async with connect(ann) as owner, connect(bob) as member:
        await _ask(owner, "member_updated", type="ban", room="lobby", user=bob.name)
        assert (await _told(member, "removed"))["reason"] == "banned"
        assert (await _ask(member, "error", type="join", room="lobby"))["code"] == "banned"
        error = await _ask(owner, "error", type="invite", room="lobby", user=bob.name)
        assert error["code"] == "banned"
        await _ask(owner, "member_updated", type="unban", room="lobby", user=bob.name)
        assert (await _ask(member, "joined", type="join", room="lobby"))["room"] == "lobby"


async def test_owner_rules_for_roles_transfer_and_leaving(
    http: httpx.AsyncClient, connect: Connect
) -> None:
    ann, bob, cat = await register(http), await register(http), await register(http)
    await create_room(http, ann, "lobby")
    await join_room(http, bob, "lobby")
    await join_room(http, cat, "lobby")
    async with connect(ann) as owner, connect(bob) as admin, connect(cat) as member:
        error = await _ask(
            owner, "error", type="set_role", room="lobby", user=bob.name, role="owner"
        )
        assert error["code"] == "bad_role"
        answer = await _ask(
            owner, "member_updated", type="set_role", room="lobby", user=bob.name, role="admin"
        )
        assert (answer["change"], answer["role"]) == ("role", "admin")
        assert (await _told(member, "member_updated"))["role"] == "admin"
        error = await _ask(admin, "error", type="kick", room="lobby", user=ann.name)
        assert error["code"] == "forbidden"  # an admin cannot kick the owner
        error = await _ask(admin, "error", type="transfer", room="lobby", user=cat.name)
        assert error["code"] == "forbidden"
        error = await _ask(owner, "error", type="kick", room="lobby", user="nobody-at-all")
        assert error["code"] == "no_such_user"
        assert (await _ask(owner, "error", type="leave", room="lobby"))["code"] == (
            "owner_must_transfer"
        )
        answer = await _ask(owner, "member_updated", type="transfer", room="lobby", user=cat.name)
        assert (answer["change"], answer["role"]) == ("transferred", "owner")
        assert (await _told(member, "room_updated"))["owner"] == cat.name
        assert (await _ask(owner, "left", type="leave", room="lobby"))["room"] == "lobby"


async def test_slow_mode_refuses_a_members_second_send_with_retry_after_and_exempts_admins(
    http: httpx.AsyncClient, connect: Connect
) -> None:
    ann, bob = await register(http), await register(http)
    await create_room(http, ann, "lobby")
    await join_room(http, bob, "lobby")
    async with connect(ann) as owner, connect(bob) as member:
        await _ask(owner, "room_updated", type="room_update", room="lobby", slow_mode=60)
        await _told(member, "room_updated")
        await _ask(member, "ack", type="send", room="lobby", text="one")
        error = await _ask(member, "error", type="send", room="lobby", text="two")
        assert error["code"] == "slow_mode" and 0 < error["retry_after"] <= 60
        for text in ("a", "b"):  # the owner is exempt
            await _ask(owner, "ack", type="send", room="lobby", text=text)


async def test_an_admin_deletes_a_members_message_but_cannot_edit_it(
    http: httpx.AsyncClient, connect: Connect
) -> None:
    ann, bob = await register(http), await register(http)
    await create_room(http, ann, "lobby")
    await join_room(http, bob, "lobby")
    async with connect(ann) as owner, connect(bob) as member:
        sent = await _ask(member, "ack", type="send", room="lobby", text="oops")
        error = await _ask(owner, "error", type="edit", room="lobby", id=sent["id"], text="x")
        assert error["code"] == "not_author"
        await _ask(owner, "ack", type="delete", room="lobby", id=sent["id"])
        other = await _ask(member, "ack", type="send", room="lobby", text="mine")
        error = await _ask(member, "error", type="delete", room="lobby", id=other["id"] - 2)
        assert error["code"] in ("message_deleted", "no_such_message")
