"""Edits and deletes across two `hibiki serve` processes on one database and one Redis (issue
#15), on SQLite and on PostgreSQL (`cluster_db`): a change made on one node reaches the other's
subscribers live, in seq order with the messages, and a resume there replays it."""

from __future__ import annotations

import trio

from ..conftest import STEP, create_room, join_room, register
from .conftest import http_of, open_cluster, peer_on

SKIP = ("presence", "typing")


async def test_an_edit_and_a_delete_on_node_a_reach_node_b(
    cluster_db: str, redis_url: str, namespace: str
) -> None:
    with trio.fail_after(STEP * 4):
        async with open_cluster(cluster_db, redis_url, namespace, 2) as cluster:
            n0, n1 = cluster.nodes
            async with http_of(n0) as http:
                alice, bob = await register(http), await register(http)
                await create_room(http, alice, "lobby")
                await join_room(http, bob, "lobby")
            async with peer_on(n0, alice) as a:
                async with peer_on(n1, bob) as b:
                    await a.send(type="send", room="lobby", text="frist")
                    sent = await a.expect("ack", skip=(*SKIP, "message"))
                    await a.send(type="edit", room="lobby", id=sent["id"], text="first")
                    assert (await b.expect("message", skip=SKIP))["text"] == "frist"
                    edited = await b.expect("edited", skip=SKIP)
                    assert (edited["seq"], edited["id"], edited["text"]) == (2, sent["id"], "first")
                await a.send(type="delete", room="lobby", id=sent["id"], ref="d")
                while (event := await a.recv()).get("ref") != "d":
                    pass
                assert (event["type"], event["seq"]) == ("ack", 3)  # committed before b resumes
                async with peer_on(n1, bob, resume={"lobby": 2}) as b:
                    deleted = await b.expect("deleted", skip=SKIP)
                    assert (deleted["seq"], deleted["id"]) == (3, sent["id"])
