"""A new room reaches every connected user's room list: `room_created` over a real socket."""

from __future__ import annotations

import httpx
import trio

from ..conftest import STEP, Connect, Peer, create_room, register


async def _events_until_pong(peer: Peer) -> list[str]:
    """The types of every event queued for `peer` before the answer to a ping."""
    await peer.send(type="ping", ref="flush")
    types = []
    while (event := await peer.recv())["type"] != "pong":
        types.append(event["type"])
    return types


async def test_a_room_created_over_http_is_announced_to_every_other_connected_user(
    http: httpx.AsyncClient, connect: Connect
) -> None:
    alice, bob, carol = await register(http), await register(http), await register(http)
    with trio.fail_after(STEP * 2):
        async with connect(alice) as a, connect(bob) as b1, connect(bob) as b2, connect(carol) as c:
            await create_room(http, alice, "random")
            for peer in (b1, b2, c):  # members of no room: told all the same
                assert await peer.expect("room_created") == {
                    "type": "room_created",
                    "room": "random",
                }
            joined = await a.expect("joined")  # the creator: subscribed, not told twice
            assert (joined["room"], "ref" in joined) == ("random", False)
            assert "room_created" not in await _events_until_pong(a)
            for peer in (b1, b2, c):
                assert await _events_until_pong(peer) == []  # once each, nothing else
            refused = await http.post(
                "/api/rooms",
                json={"name": "random"},
                headers={"Authorization": f"Bearer {bob.token}"},
            )
            assert refused.status_code == 409  # a name taken announces nothing
            for peer in (a, c):
                assert await _events_until_pong(peer) == []
