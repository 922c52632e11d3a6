"""The Redis Cluster link against a real cluster of three primaries: slots as Redis computes them,
sharded pub/sub on every shard, and a slot migration (MOVED, sunsubscribe) mended by itself."""

from __future__ import annotations

import gc
import random
import signal
import warnings
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import pytest
import trio

from server.config import BusConfig, ConfigError
from server.redis import ClusterUrl, parse_cluster_url
from server.redis.bus_link import open_link
from server.redis.cluster_link import RedisClusterLink
from server.redis.link import RedisLink, RedisUnavailable
from server.redis.slots import key_slot

from ..redis_cluster import (
    STEP,
    RedisClusterUnderTest,
    ask,
    collect_coredis_garbage,
    open_redis_cluster,
)

CHANNELS = [f"t:{{{p}}}:room".encode() for p in range(64)]
_collected = pytest.fixture(autouse=True)(collect_coredis_garbage)


def test_parse_cluster_url_reads_seeds_and_credentials() -> None:
    url = parse_cluster_url("rediss+cluster://app:p%40ss@10.0.0.1:7000,10.0.0.2:7001/")
    assert url == ClusterUrl((("10.0.0.1", 7000), ("10.0.0.2", 7001)), "app", "p@ss", True)
    assert parse_cluster_url("redis+cluster://h:1").seeds == (("h", 1),)
    assert parse_cluster_url("redis+cluster://secret@h:1").password == "secret"
    for bad in ("redis://h:1", "redis+cluster://h", "redis+cluster://h:x", "redis+cluster://"):
        with pytest.raises(ValueError):
            parse_cluster_url(bad)


def test_config_accepts_a_cluster_url_and_the_assembly_builds_its_link() -> None:
    assert BusConfig(redis_url="redis+cluster://h:1,h:2").problems() == []
    assert BusConfig(redis_url="rediss+cluster://u:p@h:1").problems() == []
    with pytest.raises(ConfigError, match="redis_url"):
        BusConfig(redis_url="http://h:1")
    with warnings.catch_warnings():  # coredis's unclosed layout stream (collect_coredis_garbage)
        warnings.simplefilter("ignore", ResourceWarning)
        link = open_link("redis+cluster://h:1", namespace="t", connect_timeout=1.0)
        assert isinstance(link, RedisClusterLink)
        del link
        gc.collect()
    assert isinstance(open_link("redis://h:1/0", namespace="t", connect_timeout=1.0), RedisLink)


class _Listener:
    """What a link delivers, as channels the test can wait on."""

    def __init__(self, link: RedisClusterLink) -> None:
        self._messages, self.messages = trio.open_memory_channel[tuple[bytes, bytes]](1000)
        self._subscribed, self.subscribed = trio.open_memory_channel[bytes](1000)
        self.reconnected = trio.Event()
        link.on_message(lambda c, p: self._messages.send_nowait((c, p)), self._subscribed_now)
        link.on_reconnect(self.reconnected.set)

    def _subscribed_now(self, channel: bytes) -> None:
        self._subscribed.send_nowait(channel)


@asynccontextmanager
async def _running(
    cluster: RedisClusterUnderTest, **keepalive: float
) -> AsyncIterator[RedisClusterLink]:
    link = RedisClusterLink(cluster.url, namespace="t", connect_timeout=2.0, **keepalive)
    async with trio.open_nursery() as nursery:
        await nursery.start(link.run)
        yield link
        nursery.cancel_scope.cancel()


async def test_key_slot_agrees_with_cluster_keyslot(tmp_path: Path) -> None:
    rng = random.Random(11)
    keys = ["foo", "", "{}", "{}x", "a{}{b}", "{a}{b}", "x{tag}y", "{user1000}.following", "é{ü}"]
    keys += ["".join(rng.choice("ab{}:é") for _ in range(rng.randrange(12))) for _ in range(300)]
    keys += [channel.decode() for channel in CHANNELS]
    with trio.fail_after(STEP * 3):
        async with open_redis_cluster(tmp_path) as cluster:
            for key in keys:
                assert await ask(cluster.nodes[0].address, "CLUSTER", "KEYSLOT", key) == key_slot(
                    key
                ), key


async def _subscribe_all(link: RedisClusterLink, listener: _Listener) -> None:
    for channel in CHANNELS:
        link.subscribe(channel)
    confirmed = {await listener.subscribed.receive() for _ in CHANNELS}
    assert confirmed == set(CHANNELS)


async def test_messages_reach_subscribers_on_every_shard_once(tmp_path: Path) -> None:
    with trio.fail_after(STEP * 3):
        async with (
            open_redis_cluster(tmp_path) as cluster,
            _running(cluster) as a,
            _running(cluster) as b,
        ):
            got = _Listener(b)
            await _subscribe_all(b, got)
            slot_map = await cluster.slot_map()
            owners = {slot_map.owner(key_slot(channel)) for channel in CHANNELS}
            assert owners == {node.address for node in cluster.nodes}
            assert b.subscriber_shards == owners
            await a.publish([(channel, b"m" + channel) for channel in CHANNELS])
            received = [await got.messages.receive() for _ in CHANNELS]
            assert sorted(received) == sorted((c, b"m" + c) for c in CHANNELS)
            b.unsubscribe(CHANNELS[0])
            # Subscribing on the same connection after it: once this is confirmed, Redis
            # has handled the unsubscribe too.
            owner = slot_map.owner(key_slot(CHANNELS[0]))
            marker = next(
                c
                for c in (f"t:{{m{i}}}:x".encode() for i in range(1000))
                if slot_map.owner(key_slot(c)) == owner
            )
            b.subscribe(marker)
            assert await got.subscribed.receive() == marker
            await a.publish([(CHANNELS[0], b"late"), (CHANNELS[1], b"last")])
            assert await got.messages.receive() == (CHANNELS[1], b"last")
            assert b.reconnects == 0


async def test_a_primary_that_stops_answering_is_noticed_within_the_ping_bound(
    tmp_path: Path,
) -> None:
    """SIGSTOP keeps a primary's TCP connections open: only the keepalive can tell. The link
    is down within interval + timeout (counted), and is back by itself after SIGCONT, every
    channel subscribed again."""
    interval, timeout = 0.2, 0.4
    with trio.fail_after(STEP * 3):
        async with (
            open_redis_cluster(tmp_path) as cluster,
            _running(cluster, ping_interval=interval, ping_timeout=timeout) as link,
        ):
            got = _Listener(link)
            await _subscribe_all(link, got)
            await trio.sleep(interval * 3)  # PINGs answered: nothing ends the session
            assert link.healthy and link.timeouts == 0
            node = cluster.nodes[1]
            assert node.process is not None
            node.process.send_signal(signal.SIGSTOP)
            try:
                stopped_at = trio.current_time()
                while link.healthy:  # noqa: ASYNC110 (the link has no event for this)
                    await trio.sleep(0.02)
                noticed = trio.current_time() - stopped_at
            finally:
                node.process.send_signal(signal.SIGCONT)
            assert link.timeouts >= 1
            await got.reconnected.wait()
            confirmed = {await got.subscribed.receive() for _ in CHANNELS}
            assert confirmed == set(CHANNELS)
            assert link.healthy
    assert noticed <= interval + timeout + 0.5, noticed


async def _migrate(cluster: RedisClusterUnderTest, slot: int) -> None:
    """Move an empty slot to another primary (CLUSTER SETSLOT on every node)."""
    slot_map = await cluster.slot_map()
    source = cluster.node_at(slot_map.owner(slot) or ("", 0))
    target = next(node for node in cluster.nodes if node is not source)
    target_id = await ask(target.address, "CLUSTER", "MYID")
    source_id = await ask(source.address, "CLUSTER", "MYID")
    assert isinstance(target_id, bytes) and isinstance(source_id, bytes)
    assert await ask(target.address, "CLUSTER", "SETSLOT", slot, "IMPORTING", source_id) == b"OK"
    assert await ask(source.address, "CLUSTER", "SETSLOT", slot, "MIGRATING", target_id) == b"OK"
    for node in (target, source, *(n for n in cluster.nodes if n not in (source, target))):
        assert await ask(node.address, "CLUSTER", "SETSLOT", slot, "NODE", target_id) == b"OK"


async def test_slot_migration_resubscribes_on_the_new_owner(tmp_path: Path) -> None:
    channel = CHANNELS[5]
    with trio.fail_after(STEP * 3):
        async with (
            open_redis_cluster(tmp_path) as cluster,
            _running(cluster) as a,
            _running(cluster) as b,
        ):
            got, sent = _Listener(b), _Listener(a)
            b.subscribe(channel)
            assert await got.subscribed.receive() == channel
            reads = b.slot_map_reads
            await _migrate(cluster, key_slot(channel))
            # The old owner says sunsubscribe: b reads the map again and resubscribes.
            await got.reconnected.wait()
            assert await got.subscribed.receive() == channel
            assert b.slot_map_reads == reads + 1
            # a's map is stale: its publish is MOVED, which makes it read the map again.
            with pytest.raises(RedisUnavailable):
                await a.publish([(channel, b"moved")])
            await sent.reconnected.wait()
            await a.publish([(channel, b"after")])
            assert await got.messages.receive() == (channel, b"after")
