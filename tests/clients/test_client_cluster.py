"""The Python client library's edits, deletes and unread counts across two `hibiki serve`
processes sharing one database and Redis (issue #15), on SQLite and PostgreSQL: what one node
stores reaches a client of the other live, and a read moved on one node reaches the user's
client on the other."""

from __future__ import annotations

import trio

from protocol import Deleted, Edited, Message, Unread

from ..cluster import conftest as cluster
from ..cluster.conftest import http_of, open_cluster
from ..conftest import STEP, create_room, join_room, register
from .test_client import chat, next_of, texts

# The cluster tests' fixtures, here too: pytest finds fixtures by the module's attribute names.
cluster_db = cluster.cluster_db
redis_url = cluster.redis_url
namespace = cluster.namespace


async def test_changes_and_read_state_cross_nodes_for_clients_of_one_user(
    cluster_db: str, redis_url: str, namespace: str
) -> None:
    with trio.fail_after(STEP * 4):
        async with open_cluster(cluster_db, redis_url, namespace, 2) as cluster:
            n0, n1 = cluster.nodes
            async with http_of(n0) as http:
                alice, bob = await register(http), await register(http)
                await create_room(http, alice, "lobby")
                await join_room(http, bob, "lobby")
            async with (
                chat(n0.http, alice) as a,
                chat(n0.http, bob) as phone,
                chat(n1.http, bob) as laptop,
            ):
                sent = await a.send("lobby", "draft")
                for client in (phone, laptop):
                    assert await texts(client.events(), 1) == [(1, "draft")]
                    assert client.unread == {"lobby": 1}
                await a.edit("lobby", sent.id, "final")
                edited = await next_of(laptop.events(), Edited)
                assert (edited.id, edited.seq, edited.text) == (sent.id, 2, "final")

                state = await phone.mark_read("lobby", 2)
                assert (state.read_seq, state.count) == (2, 0)
                moved = await next_of(laptop.events(), Unread)
                assert (moved.read_seq, moved.last_seq, moved.count) == (2, 2, 0)
                assert laptop.unread == {"lobby": 0}

                second = await a.send("lobby", "soon gone")
                assert (await next_of(laptop.events(), Message)).id == second.id
                assert laptop.unread == {"lobby": 1}
                await a.delete("lobby", second.id)
                assert (await next_of(laptop.events(), Deleted)).id == second.id
                assert laptop.unread == {"lobby": 0} and laptop.last_seq == {"lobby": 4}
