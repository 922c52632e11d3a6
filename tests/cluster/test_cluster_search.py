"""Search across two `hibiki serve` processes on one database and one Redis (issue #15): what
is sent, edited and deleted on node A is what a search on node B finds, on SQLite (one file,
indexed off the commit path by whichever node searches or indexes first) and on PostgreSQL
(`cluster_db`)."""

from __future__ import annotations

import trio

from ..conftest import STEP, create_room, join_room, register
from .conftest import http_of, open_cluster, peer_on

SKIP = ("presence", "typing", "ack", "message", "edited", "deleted")
NOT_ACK = ("presence", "typing", "message", "edited", "deleted")


async def test_search_on_one_node_finds_what_was_sent_and_changed_on_the_other(
    cluster_db: str, redis_url: str, namespace: str
) -> None:
    with trio.fail_after(STEP * 4):
        async with open_cluster(cluster_db, redis_url, namespace, 2) as cluster:
            n0, n1 = cluster.nodes
            async with http_of(n0) as http:
                alice, bob = await register(http), await register(http)
                await create_room(http, alice, "ops")
                await join_room(http, bob, "ops")
            async with peer_on(n0, bob) as b0:
                for i, text in enumerate(("disk full on db1", "disk ok", "rebooting db1")):
                    await b0.send(type="send", room="ops", text=text, ref=f"m{i}")
                    assert (await b0.expect("ack", skip=NOT_ACK))["ref"] == f"m{i}"
                await b0.send(type="search", query="db1", ref="own")
                own = await b0.expect("search_results", skip=SKIP)
                ids = [r["id"] for r in own["results"]]
                assert len(ids) == 2
                await b0.send(type="edit", room="ops", id=ids[1], text="disk full on db2")
                await b0.expect("ack", skip=NOT_ACK)
                await b0.send(type="delete", room="ops", id=ids[0])
                await b0.expect("ack", skip=NOT_ACK)
            async with peer_on(n1, alice) as a1:
                await a1.send(type="search", query="disk full", ref="s")
                found = await a1.expect("search_results", skip=SKIP)
                assert [(r["id"], r["text"]) for r in found["results"]] == [
                    (ids[1], "disk full on db2")
                ]
            async with http_of(n1) as http:
                response = await http.get(
                    "/api/search",
                    params={"q": "db", "room": "ops"},
                    headers={"Authorization": f"Bearer {alice.token}"},
                )
                assert response.status_code == 200, response.text
                assert [r["id"] for r in response.json()["results"]] == [ids[1]]
