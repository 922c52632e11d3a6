"""Read state end to end (issue #15): read cursors over WebSocket and HTTP, `unread` on every
connection of the user, `welcome.unread` and GET /api/rooms, through a real server."""

from __future__ import annotations

from typing import Any

import httpx

from ..conftest import Account, Connect, Peer, create_room, join_room, register


def _auth(account: Account) -> dict[str, str]:
    return {"Authorization": f"Bearer {account.token}"}


async def _post(http: httpx.AsyncClient, who: Account, room: str, *texts: str) -> None:
    response = await http.post(
        f"/api/rooms/{room}/messages:batch",
        json={"messages": [{"text": text} for text in texts]},
        headers=_auth(who),
    )
    assert response.status_code == 201, response.text


async def _quiet(peer: Peer) -> None:
    """Nothing is queued for `peer` before the answer to a ping sent now."""
    await peer.send(type="ping", ref="quiet")
    assert (await peer.expect("pong")) == {"type": "pong", "ref": "quiet"}


async def _room_pair(http: httpx.AsyncClient) -> tuple[Account, Account]:
    """alice and bob in room "lobby"; bob has written seqs 1..3."""
    alice, bob = await register(http), await register(http)
    await create_room(http, alice, "lobby")
    await join_room(http, bob, "lobby")
    await _post(http, bob, "lobby", "one", "two", "three")
    return alice, bob


async def test_read_on_one_connection_reaches_the_users_other_connection(
    http: httpx.AsyncClient, connect: Connect
) -> None:
    alice, _ = await _room_pair(http)
    async with connect(alice) as first, connect(alice) as second:
        assert first.seen[-1]["unread"] == {"lobby": {"read_seq": 0, "last_seq": 3, "count": 3}}
        await first.send(type="read", room="lobby", seq=2, ref="r1")
        state = {"room": "lobby", "read_seq": 2, "last_seq": 3, "count": 1}
        assert await first.expect("unread") == {"type": "unread", **state, "ref": "r1"}
        assert await second.expect("unread") == {"type": "unread", **state}
        # A step back is ignored: answered with the stored cursor, and nobody else is told.
        await first.send(type="read", room="lobby", seq=1, ref="r2")
        assert await first.expect("unread") == {"type": "unread", **state, "ref": "r2"}
        await _quiet(second)
        # Past the last seq: clamped to it.
        await second.send(type="read", room="lobby", seq=10**9)
        done = {"type": "unread", "room": "lobby", "read_seq": 3, "last_seq": 3, "count": 0}
        assert await second.expect("unread") == done
        assert await first.expect("unread") == done


async def test_welcome_counts_only_messages_by_others_after_the_cursor(
    http: httpx.AsyncClient, connect: Connect
) -> None:
    alice, bob = await _room_pair(http)
    async with connect(alice) as peer:
        await peer.send(type="read", room="lobby", seq=1)
        await peer.expect("unread")
    await _post(http, alice, "lobby", "mine")  # seq 4: her own, never unread
    await _post(http, bob, "lobby", "four")  # seq 5
    async with connect(alice) as peer:
        assert peer.seen[-1]["unread"] == {"lobby": {"read_seq": 1, "last_seq": 5, "count": 3}}
    async with connect(bob) as peer:  # bob never read: everything by others is unread
        assert peer.seen[-1]["unread"] == {"lobby": {"read_seq": 0, "last_seq": 5, "count": 1}}


async def test_http_read_moves_the_cursor_and_tells_every_connection(
    http: httpx.AsyncClient, connect: Connect
) -> None:
    alice, _ = await _room_pair(http)
    async with connect(alice) as first, connect(alice) as second:
        response = await http.put("/api/rooms/lobby/read", json={"seq": 2}, headers=_auth(alice))
        assert response.status_code == 200, response.text
        state: dict[str, Any] = {"room": "lobby", "read_seq": 2, "last_seq": 3, "count": 1}
        assert response.json() == state
        assert await first.expect("unread") == {"type": "unread", **state}
        assert await second.expect("unread") == {"type": "unread", **state}
    rooms = await http.get("/api/rooms", headers=_auth(alice))
    assert rooms.json()["rooms"] == [
        {
            "name": "lobby",
            "last_seq": 3,
            "member": True,
            "read_seq": 2,
            "unread": 1,
            "visibility": "public",
            "topic": "",
            "slow_mode": 0,
            "owner": alice.name,
            "role": "owner",
        }
    ]


async def test_read_is_refused_to_non_members_and_for_bad_bodies(
    http: httpx.AsyncClient, connect: Connect
) -> None:
    await _room_pair(http)
    carol = await register(http)
    response = await http.put("/api/rooms/lobby/read", json={"seq": 1}, headers=_auth(carol))
    assert (response.status_code, response.json()["error"]["code"]) == (403, "not_member")
    response = await http.put("/api/rooms/nowhere/read", json={"seq": 1}, headers=_auth(carol))
    assert response.status_code == 404
    async with connect(carol) as peer:
        await peer.send(type="read", room="lobby", seq=1, ref="x")
        error = await peer.expect("error")
        assert (error["code"], error["ref"]) == ("not_member", "x")
        await peer.send(type="read", room="lobby", seq=-1)
        assert (await peer.expect("error"))["code"] == "bad_field"
    rooms = await http.get("/api/rooms", headers=_auth(carol))
    [listed] = rooms.json()["rooms"]
    assert (listed["name"], listed["last_seq"], listed["member"], listed["role"]) == (
        "lobby",
        3,
        False,
        None,
    )
