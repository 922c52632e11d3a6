"""Read state across two `hibiki serve` processes on one database and one Redis (issue #15): a
read cursor moved on one node reaches the user's connections on the other, over the bus's
membership channel, on SQLite and on PostgreSQL (`cluster_db`)."""

from __future__ import annotations

import trio

from ..conftest import STEP, create_room, join_room, register
from .conftest import http_of, open_cluster, peer_on

SKIP = ("presence", "typing", "ack", "message")


async def test_a_read_on_one_node_reaches_the_users_connection_on_the_other(
    cluster_db: str, redis_url: str, namespace: str
) -> None:
    with trio.fail_after(STEP * 4):
        async with open_cluster(cluster_db, redis_url, namespace, 2) as cluster:
            n0, n1 = cluster.nodes
            async with http_of(n0) as http:
                alice, bob = await register(http), await register(http)
                await create_room(http, alice, "lobby")
                await join_room(http, bob, "lobby")
                response = await http.post(
                    "/api/rooms/lobby/messages:batch",
                    json={"messages": [{"text": t} for t in ("one", "two", "three")]},
                    headers={"Authorization": f"Bearer {bob.token}"},
                )
                assert response.status_code == 201, response.text
            async with peer_on(n0, alice) as a0, peer_on(n1, alice) as a1:
                await a0.send(type="read", room="lobby", seq=2, ref="r")
                state = {"type": "unread", "room": "lobby", "read_seq": 2, "last_seq": 3}
                assert await a0.expect("unread", skip=SKIP) == {**state, "count": 1, "ref": "r"}
                assert await a1.expect("unread", skip=SKIP) == {**state, "count": 1}
                async with http_of(n1) as http:
                    response = await http.put(
                        "/api/rooms/lobby/read",
                        json={"seq": 3},
                        headers={"Authorization": f"Bearer {alice.token}"},
                    )
                    assert response.status_code == 200, response.text
                done = {**state, "read_seq": 3, "count": 0}
                assert await a0.expect("unread", skip=SKIP) == done
                assert await a1.expect("unread", skip=SKIP) == done
            async with peer_on(n1, alice) as again:
                assert again.seen[-1]["unread"] == {
                    "lobby": {"read_seq": 3, "last_seq": 3, "count": 0}
                }
