"""Two `hibiki serve` processes on a real Redis Cluster (three primaries, `redis+cluster://`): rooms
on every shard chat across the nodes, and a primary restarted mid-burst loses nothing."""

from __future__ import annotations

import re
import zlib
from pathlib import Path
from typing import Any

import pytest
import trio

from server.redis.slots import key_slot

from ..conftest import STEP, Account, Peer, create_room, join_room, register
from ..redis_cluster import (
    RedisClusterUnderTest,
    collect_coredis_garbage,
    open_redis_cluster,
)
from .conftest import Cluster, Node, http_of, open_cluster, peer_on

PARTITIONS = 64  # [bus] bus_partitions' default
BURST = 300
_collected = pytest.fixture(autouse=True)(collect_coredis_garbage)


def _channel(namespace: str, room: str) -> str:
    """The bus channel of a room (server/redis/bus.py)."""
    return f"{namespace}:{{{zlib.crc32(room.encode()) % PARTITIONS}}}:room"


async def _accounts(cluster: Cluster, rooms: list[str], count: int) -> list[Account]:
    async with http_of(cluster.nodes[0]) as http:
        accounts = [await register(http) for _ in range(count)]
        for room in rooms:
            await create_room(http, accounts[0], room)
            for account in accounts[1:]:
                await join_room(http, account, room)
    return accounts


async def _collect(peer: Peer, got: dict[str, list[int]], total: int) -> None:
    """Note each message event's seq per room until `total` have arrived."""
    while sum(map(len, got.values())) < total:
        event = await peer.recv()
        if event["type"] == "message":
            got.setdefault(event["room"], []).append(event["seq"])


async def _reconnects(node: Node) -> float:
    async with http_of(node) as http:
        metrics = (await http.get("/metrics")).text
    found = re.search(r"^hibiki_bus_reconnects_total (\S+)$", metrics, re.M)
    assert found is not None, metrics
    return float(found.group(1))


async def test_users_on_different_nodes_chat_in_rooms_on_every_shard(
    tmp_path: Path, namespace: str
) -> None:
    with trio.fail_after(STEP * 6):
        async with open_redis_cluster(tmp_path / "redis") as redis:
            slots = await redis.slot_map()
            rooms = [f"room{i}" for i in range(9)]
            shards = {slots.owner(key_slot(_channel(namespace, room))) for room in rooms}
            assert shards == {node.address for node in redis.nodes}
            async with open_cluster(tmp_path, redis.url, namespace, 2) as cluster:
                alice, bob = await _accounts(cluster, rooms, 2)
                n0, n1 = cluster.nodes
                async with peer_on(n0, alice) as a, peer_on(n1, bob) as b:
                    for i in range(10):
                        for room in rooms:
                            await a.send(type="send", room=room, text="a", client_id=f"a{i}{room}")
                            await b.send(type="send", room=room, text="b", client_id=f"b{i}{room}")
                    for peer in (a, b):
                        got: dict[str, list[int]] = {}
                        await _collect(peer, got, 20 * len(rooms))
                        assert got == {room: list(range(1, 21)) for room in rooms}
                        await peer.send(type="ping", ref="end")  # and nothing twice
                        while (event := await peer.recv())["type"] != "pong":
                            assert event["type"] != "message", event
                assert await _reconnects(n0) == 0


async def _send_burst(peer: Peer, acked: dict[str, int], halfway: trio.Event) -> None:
    """BURST messages to "burst", at most 20 unacknowledged; `halfway` after BURST // 3 acks."""
    sent = 0
    while len(acked) < BURST:
        while sent < BURST and sent - len(acked) < 20:
            await peer.send(type="send", room="burst", text=f"m{sent}", client_id=f"m{sent}")
            sent += 1
        event: dict[str, Any] = await peer.recv()
        if event["type"] == "ack":
            acked[event["client_id"]] = event["seq"]
            if len(acked) >= BURST // 3:
                halfway.set()


async def _restart_owner(redis: RedisClusterUnderTest, channel: str, halfway: trio.Event) -> None:
    await halfway.wait()
    owner = (await redis.slot_map()).owner(key_slot(channel))
    assert owner is not None
    await redis.restart(redis.node_at(owner))


async def test_shard_restarted_mid_burst_every_message_delivered_once(
    tmp_path: Path, namespace: str
) -> None:
    with trio.fail_after(STEP * 9):
        async with (
            open_redis_cluster(tmp_path / "redis") as redis,
            open_cluster(tmp_path, redis.url, namespace, 2) as cluster,
        ):
            alice, bob, carol = await _accounts(cluster, ["burst"], 3)
            n0, n1 = cluster.nodes
            acked: dict[str, int] = {}
            got: dict[str, dict[str, list[int]]] = {"bob": {}, "carol": {}}
            halfway = trio.Event()
            async with (
                peer_on(n0, alice) as a,
                peer_on(n0, bob) as b,
                peer_on(n1, carol) as c,
                trio.open_nursery() as nursery,
            ):
                nursery.start_soon(_collect, b, got["bob"], BURST)
                nursery.start_soon(_collect, c, got["carol"], BURST)
                # The primary that owns the room's channel goes away a third into the burst:
                # carol's node loses its subscription, and what it missed comes from the store.
                nursery.start_soon(_restart_owner, redis, _channel(namespace, "burst"), halfway)
                await _send_burst(a, acked, halfway)
            assert sorted(acked.values()) == list(range(1, BURST + 1))
            for name, rooms in got.items():
                assert rooms == {"burst": list(range(1, BURST + 1))}, name
            assert await _reconnects(n1) >= 1
