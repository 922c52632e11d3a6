"""Two and three `hibiki serve` processes on one database and one Redis: a chat spans them.

The message paths run on SQLite and on PostgreSQL (`cluster_db`); typing and leave go through
Redis alone, whichever the store, so they run on SQLite only (the suite's time is the limit)."""

from __future__ import annotations

from typing import Any

import trio

from ..conftest import STEP, Account, Peer, create_room, join_room, register
from .conftest import SQLITE_ONLY, Cluster, http_of, open_cluster, peer_on

SKIP = ("presence", "typing", "ack")


async def _accounts(cluster: Cluster, room: str, count: int) -> list[Account]:
    async with http_of(cluster.nodes[0]) as http:
        accounts = [await register(http) for _ in range(count)]
        await create_room(http, accounts[0], room)
        for account in accounts[1:]:
            await join_room(http, account, room)
    return accounts


async def _messages(peer: Peer, count: int) -> list[dict[str, Any]]:
    return [await peer.expect("message", skip=SKIP) for _ in range(count)]


async def _sync(peer: Peer) -> list[dict[str, Any]]:
    """Everything the peer is sent before the answer to a ping (the server's order)."""
    await peer.send(type="ping", ref="sync")
    events = []
    while (event := await peer.recv())["type"] != "pong":
        events.append(event)
    return events


async def test_users_on_different_nodes_chat(
    cluster_db: str, redis_url: str, namespace: str
) -> None:
    with trio.fail_after(STEP * 4):
        async with open_cluster(cluster_db, redis_url, namespace, 3) as cluster:
            alice, bob, carol = await _accounts(cluster, "lobby", 3)
            n0, n1, n2 = cluster.nodes
            async with peer_on(n0, alice) as a, peer_on(n1, bob) as b, peer_on(n2, carol) as c:
                for i in range(20):
                    await a.send(type="send", room="lobby", text=f"hi {i}", client_id=f"a{i}")
                for peer in (a, b, c):
                    got = await _messages(peer, 20)
                    assert [m["seq"] for m in got] == list(range(1, 21))
                    assert [m["text"] for m in got] == [f"hi {i}" for i in range(20)]
                for peer in (b, c):  # nothing twice, nothing else
                    assert [e for e in await _sync(peer) if e["type"] == "message"] == []


async def test_senders_on_both_nodes_chat(cluster_db: str, redis_url: str, namespace: str) -> None:
    with trio.fail_after(STEP * 4):
        async with open_cluster(cluster_db, redis_url, namespace, 2) as cluster:
            alice, bob = await _accounts(cluster, "lobby", 2)
            n0, n1 = cluster.nodes
            async with peer_on(n0, alice) as a, peer_on(n1, bob) as b:
                for i in range(10):
                    await a.send(type="send", room="lobby", text=f"a{i}", client_id=f"a{i}")
                    await b.send(type="send", room="lobby", text=f"b{i}", client_id=f"b{i}")
                for peer in (a, b):
                    got = await _messages(peer, 20)
                    assert [m["seq"] for m in got] == list(range(1, 21))
                    assert sorted(m["text"] for m in got) == sorted(
                        [f"a{i}" for i in range(10)] + [f"b{i}" for i in range(10)]
                    )


async def test_resume_on_another_node_delivers_exactly_the_missed_messages(
    cluster_db: str, redis_url: str, namespace: str
) -> None:
    with trio.fail_after(STEP * 4):
        async with open_cluster(cluster_db, redis_url, namespace, 2) as cluster:
            alice, bob = await _accounts(cluster, "lobby", 2)
            n0, n1 = cluster.nodes
            async with peer_on(n0, alice) as a:
                async with peer_on(n0, bob) as b:
                    for i in range(5):
                        await a.send(type="send", room="lobby", text=f"m{i}", client_id=f"m{i}")
                    assert [m["seq"] for m in await _messages(b, 5)] == [1, 2, 3, 4, 5]
                for i in range(5, 12):
                    await a.send(type="send", room="lobby", text=f"m{i}", client_id=f"m{i}")
                await _messages(a, 12)
                async with peer_on(n1, bob, resume={"lobby": 5}) as b:
                    got = await _messages(b, 7)
                    assert [m["seq"] for m in got] == list(range(6, 13))
                    await a.send(type="send", room="lobby", text="live", client_id="live")
                    live = await b.expect("message", skip=SKIP)
                    assert (live["seq"], live["text"]) == (13, "live")
                    assert [e for e in await _sync(b) if e["type"] == "message"] == []


async def test_typing_crosses_nodes(cluster_db: str, redis_url: str, namespace: str) -> None:
    with trio.fail_after(STEP * 4):
        async with open_cluster(cluster_db, redis_url, namespace, 2) as cluster:
            alice, bob = await _accounts(cluster, "lobby", 2)
            n0, n1 = cluster.nodes
            async with peer_on(n0, alice) as a, peer_on(n1, bob) as b:
                await _sync(b)
                await a.send(type="typing", room="lobby")
                typing = await b.expect("typing", skip=("presence",))
                assert (typing["room"], typing["user"]) == ("lobby", alice.name)
                assert [e for e in await _sync(a) if e["type"] == "typing"] == []


async def test_leave_on_one_node_stops_delivery_on_all(
    cluster_db: str, redis_url: str, namespace: str
) -> None:
    with trio.fail_after(STEP * 4):
        async with open_cluster(cluster_db, redis_url, namespace, 2) as cluster:
            alice, bob = await _accounts(cluster, "lobby", 2)
            n0, n1 = cluster.nodes
            async with (
                peer_on(n0, alice) as a,
                peer_on(n0, bob) as b0,
                peer_on(n1, bob) as b1,
            ):
                await a.send(type="send", room="lobby", text="before", client_id="before")
                for peer in (a, b0, b1):
                    assert (await peer.expect("message", skip=SKIP))["text"] == "before"
                await b0.send(type="leave", room="lobby", ref="bye")
                await b0.expect("left", skip=SKIP)
                # Told on the other node too.
                assert (await b1.expect("left", skip=SKIP))["room"] == "lobby"
                await a.send(type="send", room="lobby", text="after", client_id="after")
                assert (await a.expect("message", skip=SKIP))["text"] == "after"
                for peer in (b0, b1):
                    assert [e for e in await _sync(peer) if e["type"] == "message"] == []


@SQLITE_ONLY  # the announcement goes through Redis alone, whichever the store
async def test_a_new_room_is_announced_on_every_node(
    cluster_db: str, redis_url: str, namespace: str
) -> None:
    with trio.fail_after(STEP * 4):
        async with open_cluster(cluster_db, redis_url, namespace, 2) as cluster:
            alice, bob = await _accounts(cluster, "lobby", 2)
            n0, n1 = cluster.nodes
            async with peer_on(n0, alice) as a, peer_on(n1, bob) as b:
                await _sync(b)
                async with http_of(n0) as http:
                    await create_room(http, alice, "random")
                told = await b.expect("room_created", skip=("presence",))
                assert told == {"type": "room_created", "room": "random"}
                assert (await a.expect("joined", skip=("presence",)))["room"] == "random"
                assert "room_created" not in [e["type"] for e in await _sync(a)]  # the creator
                assert await _sync(b) == []  # once
