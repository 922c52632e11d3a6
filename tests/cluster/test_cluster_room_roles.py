"""Rooms with roles across two `hibiki serve` processes on one database and one Redis (issue
#15), on SQLite and PostgreSQL: an invitation joins the user's connections on both nodes, a kick
on one node removes them on both and drops the other node's cached membership at once, setting
changes reach members on the other node, and slow mode holds across nodes."""

from __future__ import annotations

from typing import Any

import trio

from ..conftest import STEP, Account, Peer, register
from .conftest import http_of, open_cluster, peer_on

_TOLD = ("presence", "typing", "message", "member_updated", "room_updated", "joined")


def _auth(account: Account) -> dict[str, str]:
    return {"Authorization": f"Bearer {account.token}"}


async def _ask(peer: Peer, expected: str, **frame: Any) -> dict[str, Any]:
    await peer.send(ref="q", **frame)
    while (answer := await peer.recv()).get("ref") != "q":
        assert answer["type"] in _TOLD, answer
    assert answer["type"] == expected, answer
    return answer


async def _told(peer: Peer, type_: str) -> dict[str, Any]:
    return await peer.expect(type_, skip=tuple(t for t in _TOLD if t != type_))


async def test_invite_and_kick_reach_the_users_connections_on_both_nodes(
    cluster_db: str, redis_url: str, namespace: str
) -> None:
    with trio.fail_after(STEP * 4):
        async with open_cluster(cluster_db, redis_url, namespace, 2) as cluster:
            n0, n1 = cluster.nodes
            async with http_of(n0) as http:
                ann, bob = await register(http), await register(http)
                response = await http.post(
                    "/api/rooms", json={"name": "team", "private": True}, headers=_auth(ann)
                )
                assert response.status_code == 201, response.text
            async with peer_on(n0, ann) as owner, peer_on(n0, bob) as b0, peer_on(n1, bob) as b1:
                await _ask(owner, "member_updated", type="invite", room="team", user=bob.name)
                for peer in (b0, b1):
                    assert (await _told(peer, "joined"))["room"] == "team"
                await _ask(b1, "ack", type="send", room="team", text="cached on n1")
                await _ask(owner, "member_updated", type="kick", room="team", user=bob.name)
                for peer in (b0, b1):
                    removed = await _told(peer, "removed")
                    assert (removed["reason"], removed["by"]) == ("kicked", ann.name)
                # n1's cache said "member" a moment ago: the kick dropped it at once.
                error = await _ask(b1, "error", type="send", room="team", text="still here?")
                assert error["code"] == "not_member"
                assert (await _ask(b1, "error", type="join", room="team"))["code"] == (
                    "no_such_room"
                )


async def test_settings_reach_the_other_node_and_slow_mode_holds_across_nodes(
    cluster_db: str, redis_url: str, namespace: str
) -> None:
    with trio.fail_after(STEP * 4):
        async with open_cluster(cluster_db, redis_url, namespace, 2) as cluster:
            n0, n1 = cluster.nodes
            async with http_of(n0) as http:
                ann, bob = await register(http), await register(http)
                assert (
                    await http.post("/api/rooms", json={"name": "lobby"}, headers=_auth(ann))
                ).status_code == 201
                assert (
                    await http.post("/api/rooms/lobby/join", headers=_auth(bob))
                ).status_code == 200
            async with peer_on(n1, ann) as owner, peer_on(n0, bob) as b0, peer_on(n1, bob) as b1:
                await _ask(b0, "ack", type="send", room="lobby", text="before")  # rules cached
                await _ask(owner, "room_updated", type="room_update", room="lobby", slow_mode=60)
                told = await _told(b0, "room_updated")
                assert (told["slow_mode"], told["by"]) == (60, ann.name)
                await _ask(b0, "ack", type="send", room="lobby", text="one")
                error = await _ask(b1, "error", type="send", room="lobby", text="two")
                assert error["code"] == "slow_mode" and 0 < error["retry_after"] <= 60
                # n0 had cached "no slow mode" before the change: it forgot that when told.
                error = await _ask(b0, "error", type="send", room="lobby", text="three")
                assert error["code"] == "slow_mode"
