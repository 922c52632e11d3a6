"""Presence over nodes sharing one Redis: online lists merged, announcements by cluster-wide
state, and a crashed node's users announced offline once its entries expire."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from typing import Any

import pytest
import trio
from coredis.exceptions import ConnectionError as RedisConnectionError

from server.ops.metrics import Metrics
from server.redis import RedisFaults
from server.redis.presence import BEAT_PIPELINE, RedisOnlineUsers

ROOM = "lobby"


class RecordingBus:
    """The part of a bus presence uses: each announcement, decoded, as (user, status)."""

    def __init__(self) -> None:
        self.heard: list[tuple[str, str]] = []
        self.changed = trio.Event()

    def publish_presence(self, room: str, payload: bytes, exclude: int) -> None:
        event = json.loads(payload)
        assert event["room"] == room
        self.heard.append((event["user"], event["status"]))
        self.changed.set()
        self.changed = trio.Event()


@asynccontextmanager
async def _nodes(
    redis_links: Any, count: int, metrics: Metrics, **timing: float
) -> AsyncIterator[list[tuple[RedisOnlineUsers, RecordingBus]]]:
    async with AsyncExitStack() as stack:
        nodes = []
        for i in range(count):
            link = await stack.enter_async_context(redis_links())
            bus = RecordingBus()
            faults = RedisFaults("presence", metrics.count_redis_error)
            nodes.append((RedisOnlineUsers(bus, link, f"node{i}", faults, **timing), bus))  # type: ignore[arg-type]
        yield nodes


async def test_online_lists_are_merged_and_announced_once_across_two_nodes(
    redis_links: Any,
) -> None:
    metrics = Metrics()
    with trio.fail_after(10):
        async with _nodes(redis_links, 2, metrics) as [(a, bus_a), (b, bus_b)]:
            a.arrived(ROOM, "alice", 1)
            b.arrived(ROOM, "bob", 1)
            await a.sync()
            await b.sync()
            assert await a.online(ROOM) == ["alice", "bob"]
            assert await b.online(ROOM) == ["alice", "bob"]
            assert bus_a.heard == [("alice", "online")]
            assert bus_b.heard == [("bob", "online")]

            b.arrived(ROOM, "alice", 2)  # alice's second connection, on the other node
            await b.sync()
            a.departed(ROOM, "alice", 1)
            await a.sync()
            assert bus_a.heard == [("alice", "online")]  # still online through b: silence
            assert bus_b.heard == [("bob", "online")]
            assert await a.online(ROOM) == ["alice", "bob"]

            b.departed(ROOM, "alice", 2)
            await b.sync()
            assert bus_b.heard == [("bob", "online"), ("alice", "offline")]
            assert await a.online(ROOM) == ["bob"]
    assert metrics.redis_errors["presence"] == 0


async def test_a_connection_that_came_and_went_before_the_sync_is_never_announced(
    redis_links: Any,
) -> None:
    with trio.fail_after(10):
        async with _nodes(redis_links, 1, Metrics()) as [(a, bus_a)]:
            a.arrived(ROOM, "alice", 1)
            a.departed(ROOM, "alice", 1)
            await a.sync()
            assert bus_a.heard == []
            assert await a.online(ROOM) == []


async def test_a_crashed_nodes_users_are_announced_offline_by_another_node_after_expiry(
    redis_links: Any,
) -> None:
    ttl, heartbeat = 0.6, 0.2
    with trio.fail_after(10):
        async with _nodes(redis_links, 2, Metrics(), ttl=ttl, heartbeat=heartbeat) as nodes:
            (crashing, _), (survivor, heard) = nodes
            crashing.arrived(ROOM, "alice", 1)
            await crashing.sync()  # then it never refreshes again: it crashed
            assert await survivor.online(ROOM) == ["alice"]
            crashed_at = trio.current_time()
            async with trio.open_nursery() as nursery:
                await nursery.start(survivor.run)
                while ("alice", "offline") not in heard.heard:
                    await heard.changed.wait()
                took = trio.current_time() - crashed_at
                nursery.cancel_scope.cancel()
            assert heard.heard == [("alice", "offline")]  # once
            assert await survivor.online(ROOM) == []
            assert ttl * 0.9 <= took <= ttl + heartbeat + 1.0


async def test_a_heartbeat_sweeps_and_refreshes_entries_of_many_rooms_in_pipelined_chunks(
    redis_links: Any,
) -> None:
    """More rooms than one pipelined round trip holds: every room is swept, every entry
    refreshed (and, having been swept, announced online again)."""
    rooms = [f"room{i}" for i in range(2 * BEAT_PIPELINE + 50)]
    # The room keys outlive the entries by 3 ttl only: a ttl shorter than a loaded machine's
    # sync of 250 rooms would let whole rooms expire unswept (and unannounced).
    ttl = 1.0
    with trio.fail_after(20):
        async with _nodes(redis_links, 2, Metrics(), ttl=ttl) as [(a, bus_a), (b, bus_b)]:
            for room in rooms:
                a.arrived(room, "alice", 1)
            await a.sync()
            assert len(bus_a.heard) == len(rooms)
            await trio.sleep(ttl)  # a stops refreshing: its entries run out
            await b.beat()
            assert bus_b.heard == [("alice", "offline")] * len(rooms)
            assert await b.online(rooms[-1]) == []
            await a.beat()  # a is alive after all: each of its entries comes back
            assert bus_a.heard[len(rooms) :] == [("alice", "online")] * len(rooms)
            assert await b.online(rooms[0]) == ["alice"]


@pytest.mark.filterwarnings("ignore:Unclosed <MemoryObject:ResourceWarning")
async def test_online_answers_from_this_node_while_redis_is_away_and_syncs_after(
    redis_links: Any, own_redis: Any
) -> None:
    metrics = Metrics()
    with trio.fail_after(10):
        async with redis_links(port=own_redis.port) as link:
            bus = RecordingBus()
            faults = RedisFaults("presence", metrics.count_redis_error)
            node = RedisOnlineUsers(bus, link, "node0", faults)  # type: ignore[arg-type]
            own_redis.stop()
            node.arrived(ROOM, "alice", 1)
            assert await node.online(ROOM) == ["alice"]
            with pytest.raises(RedisConnectionError):
                await node.sync()
            assert metrics.redis_errors["presence"] >= 1
            assert bus.heard == []  # held until Redis is back
            own_redis.start()
            await node.sync()
            assert bus.heard == [("alice", "online")]
            assert await node.online(ROOM) == ["alice"]
