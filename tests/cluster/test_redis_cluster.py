"""Two `hibiki serve` processes on a real Redis Cluster (three primaries, `redis+cluster://`): rooms
on every shard chat across the nodes, and a primary restarted mid-burst loses nothing."""

from __future__ import annotations

import re
import zlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
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


async def _collect(
    peer: Peer, got: dict[str, list[int]], total: int, presence: set[str] | None = None
) -> None:
    """Note each message event's seq per room until `total` have arrived (and in `presence`,
    each user announced online)."""
    while sum(map(len, got.values())) < total:
        event = await peer.recv()
        if event["type"] == "message":
            got.setdefault(event["room"], []).append(event["seq"])
        elif event["type"] == "presence" and event["status"] == "online" and presence is not None:
            presence.add(event["user"])


async def _redis_errors(node: Node) -> dict[str, float]:
    """hibiki_redis_errors_total by part: the shared state's commands that failed."""
    async with http_of(node) as http:
        metrics = (await http.get("/metrics")).text
    found = re.findall(r'^hibiki_redis_errors_total\{part="(\w+)"\} (\S+)$', metrics, re.M)
    return {part: float(value) for part, value in found}


@asynccontextmanager
async def _live_peer(node: Node, account: Account, rooms: list[str]) -> AsyncIterator[Peer]:
    """A client whose rooms' subscriptions are in force on its node: a `resume` from 0 waits
    for them (`RedisBus.covered`), and the pong after it says the resume is done. (A plain
    hello is live only once its node's subscription is, which it does not wait for; a send
    racing the resume itself can be delivered twice, on one Redis too: left to its owners.)"""
    async with peer_on(node, account, resume=dict.fromkeys(rooms, 0)) as peer:
        await peer.send(type="ping", ref="live")
        while (event := await peer.recv())["type"] != "pong":
            assert event["type"] != "message", event
        yield peer


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
            # A rate limit in force: its shared buckets (a script per hash tag) run on the cluster.
            limit = ("--rate-limit", "1000", "--rate-burst", "1000")
            async with open_cluster(tmp_path, redis.url, namespace, 2, args=limit) as cluster:
                alice, bob = await _accounts(cluster, rooms, 2)
                n0, n1 = cluster.nodes
                seen_online: set[str] = set()
                async with (
                    _live_peer(n0, alice, rooms) as a,
                    _live_peer(n1, bob, rooms) as b,
                ):
                    for i in range(10):
                        for room in rooms:
                            await a.send(type="send", room=room, text="a", client_id=f"a{i}{room}")
                            await b.send(type="send", room=room, text="b", client_id=f"b{i}{room}")
                    for peer in (a, b):
                        got: dict[str, list[int]] = {}
                        online = seen_online if peer is a else None
                        await _collect(peer, got, 20 * len(rooms), online)
                        assert got == {room: list(range(1, 21)) for room in rooms}
                        await peer.send(type="ping", ref="end")  # and nothing twice
                        while (event := await peer.recv())["type"] != "pong":
                            assert event["type"] != "message", event
                # Presence (scripts under one hash tag) decided across nodes: bob on n1 came
                # online for alice on n0; no shared-state command failed (no cross-slot).
                assert bob.name in seen_online
                for node in (n0, n1):
                    errors = await _redis_errors(node)
                    assert errors and not any(errors.values()), errors
                assert await _reconnects(n0) == 0


async def _send_burst(
    peer: Peer, acked: dict[str, int], halfway: trio.Event, killed: trio.Event
) -> None:
    """BURST messages to "burst", at most 20 unacknowledged; `halfway` after BURST // 3 acks;
    the last third only once the shard is `killed` (sent while it is down or coming back)."""
    sent = 0
    while len(acked) < BURST:
        if sent >= BURST * 2 // 3:
            await killed.wait()
        while sent < BURST and sent - len(acked) < 20:
            await peer.send(type="send", room="burst", text=f"m{sent}", client_id=f"m{sent}")
            sent += 1
        event: dict[str, Any] = await peer.recv()
        if event["type"] == "ack":
            acked[event["client_id"]] = event["seq"]
            if len(acked) >= BURST // 3:
                halfway.set()


async def _restart_owner(
    redis: RedisClusterUnderTest, channel: str, halfway: trio.Event, killed: trio.Event
) -> None:
    await halfway.wait()
    owner = (await redis.slot_map()).owner(key_slot(channel))
    assert owner is not None
    node = redis.node_at(owner)
    await node.kill()
    killed.set()
    await node.start()
    await redis.until_ok()


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
                _live_peer(n0, alice, ["burst"]) as a,
                _live_peer(n0, bob, ["burst"]) as b,
                _live_peer(n1, carol, ["burst"]) as c,
                trio.open_nursery() as nursery,
            ):
                nursery.start_soon(_collect, b, got["bob"], BURST)
                nursery.start_soon(_collect, c, got["carol"], BURST)
                # The primary that owns the room's channel goes away a third into the burst:
                # carol's node loses its subscription, and what it missed comes from the store.
                killed = trio.Event()
                channel = _channel(namespace, "burst")
                nursery.start_soon(_restart_owner, redis, channel, halfway, killed)
                await _send_burst(a, acked, halfway, killed)
            assert sorted(acked.values()) == list(range(1, BURST + 1))
            for name, rooms in got.items():
                assert rooms == {"burst": list(range(1, BURST + 1))}, name
            assert await _reconnects(n1) >= 1
