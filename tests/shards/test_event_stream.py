"""The event stream over sharded storage (issue #13): one elected appender per shard database.

A catalog and three shard databases on the local PostgreSQL, real Redis under a namespace of
the test's own: two nodes commit to rooms on every shard and each (room, seq) is appended once,
in seq order per room, with one leader per shard database; a logical shard moved while a node
sends loses no event, and repeats at most the rows the move handed over; a node leading every
shard killed with -9 before it could append has its commits appended by a new one.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from functools import partial

import coredis
import trio

from server.config import Config
from server.events import ShardedEventAppender, build_event_appender, stream_key
from server.persist.writer import MessageWriter, PendingSend
from storage import NewMessage, Store, open_store
from storage.postgres import target_of
from storage.routing import ShardedStore
from storage.routing.move import move_logical
from storage.routing.shards import logical_shard
from tests.postgres import LentDatabases

from ..events.conftest import redis  # noqa: F401 (the fixture)
from .conftest import rooms_on

STEP = 20.0
URL = "redis://127.0.0.1:6379/0"
PARTITIONS = 4


class _NoBus:
    def publish_message(self, room: str, seq: int, payload: bytes) -> None:
        pass


def _config(namespace: str, redis_url: str = URL) -> Config:
    return Config.from_flat(
        events_enabled=True,
        events_redis_url=redis_url,
        bus_namespace=namespace,
        stream_partitions=PARTITIONS,
        db_path="postgresql://unused/catalog",
        shards=("postgresql://unused/x",),
    )


def _appender(store: Store, namespace: str) -> ShardedEventAppender:
    assert isinstance(store, ShardedStore)
    appender = build_event_appender(_config(namespace), store.sharded.event_outboxes())
    assert isinstance(appender, ShardedEventAppender)
    for one in appender.appenders.values():  # the tests' quick election and polling
        one._election_interval, one._poll_interval = 0.2, 0.02
    return appender


@asynccontextmanager
async def _node(catalog: str, shards: list[str]) -> AsyncIterator[Store]:
    async with open_store(catalog, scrypt_n=2**10, shards=shards) as store:
        yield store


async def _commit(
    store: Store, sink: ShardedEventAppender, user: int, rooms: list[str], n: int, tag: str
) -> int:
    """`n` messages over `rooms` through a writer with `sink` after commit, 6 per batch."""
    writer = MessageWriter(store, _NoBus(), queue_size=100, max_batch=10, after_commit=[sink])
    sends = [
        PendingSend(
            NewMessage(rooms[i % len(rooms)], user, "ann", f"{tag}{i}", f"{tag}{i}"), None, None
        )
        for i in range(n)
    ]
    for start in range(0, n, 6):
        await writer.commit_batch(sends[start : start + 6])
    return n


async def _entries(client: coredis.Redis[bytes], namespace: str) -> list[tuple[str, int]]:
    out: list[tuple[str, int]] = []
    for p in range(PARTITIONS):
        for entry in await client.xrange(stream_key(namespace, p)):
            out.append((entry.field_values[b"room"].decode(), int(entry.field_values[b"seq"])))
    return out


async def _until(
    client: coredis.Redis[bytes], namespace: str, want: set[tuple[str, int]]
) -> list[tuple[str, int]]:
    with trio.fail_after(STEP):
        while not want <= set(seen := await _entries(client, namespace)):  # noqa: ASYNC110 (Redis's state)
            await trio.sleep(0.05)
    return seen


async def _history(store: Store, rooms: list[str]) -> set[tuple[str, int]]:
    out: set[tuple[str, int]] = set()
    for room in rooms:
        page, _ = await store.history(room, None, 100_000)
        out |= {(room, m.seq) for m in page}
    return out


def _in_seq_order(seen: list[tuple[str, int]]) -> bool:
    """Per room, each first appearance of a seq comes after every smaller seq's."""
    last: dict[str, int] = {}
    for room, seq in seen:
        if seq > last.get(room, 0):
            if seq != last.get(room, 0) + 1:
                return False
            last[room] = seq
    return True


async def _setup(store: Store, rooms: list[str]) -> int:
    ann = await store.create_user("ann", "pw-pw-pw-pw")
    for room in rooms:
        await store.create_room(room, ann.id)
    return ann.id


def test_the_config_takes_the_event_stream_with_shards() -> None:
    config = _config("ns")
    assert config.events.events_enabled and config.storage.shards


async def test_two_nodes_on_three_shards_append_each_message_once_in_seq_order(
    databases: LentDatabases,
    redis: tuple[coredis.Redis[bytes], str],  # noqa: F811
) -> None:
    client, namespace = redis
    catalog, shards = databases.url("catalog"), [databases.url(f"shard{i}") for i in range(3)]
    rooms = [room for group in rooms_on(3, 2, "ev") for room in group]
    async with _node(catalog, shards) as one, _node(catalog, shards) as two:
        ann = await _setup(one, rooms)
        a, b = _appender(one, namespace), _appender(two, namespace)
        async with trio.open_nursery() as nursery:
            await nursery.start(a.run)
            await nursery.start(b.run)
            async with trio.open_nursery() as senders:
                senders.start_soon(_commit, one, a, ann, rooms, 120, "one")
                senders.start_soon(_commit, two, b, ann, rooms[::-1], 120, "two")
            want = await _history(one, rooms)
            assert len(want) == 240
            seen = await _until(client, namespace, want)
            leaders = {t: a.appenders[t].leader + b.appenders[t].leader for t in a.appenders}
            nursery.cancel_scope.cancel()
    assert set(seen) == want and len(seen) == len(want)  # once each, none missing
    assert _in_seq_order(seen)
    assert list(leaders.values()) == [1, 1, 1]  # one elected appender per shard database
    assert a.appended + b.appended == 240


async def test_a_shard_moved_while_sending_loses_no_event_and_repeats_only_what_it_handed_over(
    databases: LentDatabases,
    redis: tuple[coredis.Redis[bytes], str],  # noqa: F811
) -> None:
    client, namespace = redis
    catalog, shards = databases.url("catalog"), [databases.url(f"shard{i}") for i in range(3)]
    hot = rooms_on(3, 1, "mv")[0][0]
    others = [group[0] for group in rooms_on(3, 1, "other")]
    rooms = [hot, *others]
    urls = {target_of(u): u for u in shards}
    async with _node(catalog, shards) as node:
        ann = await _setup(node, rooms)
        appender = _appender(node, namespace)
        async with trio.open_nursery() as nursery:
            await nursery.start(appender.run)
            await _commit(node, appender, ann, rooms, 200, "before")
            moving = partial(move_logical, catalog, urls, logical_shard(hot), shards[1])
            async with trio.open_nursery() as during:
                during.start_soon(_commit, node, appender, ann, rooms, 300, "during")
                result = await trio.to_thread.run_sync(moving)
            await _commit(node, appender, ann, rooms, 60, "after")
            want = await _history(node, rooms)
            seen = await _until(client, namespace, want)
            nursery.cancel_scope.cancel()
    repeats = len(seen) - len(set(seen))
    print(
        f"\nmove: {result.messages} messages moved, {result.carried} handed to the target's"
        f" appender, {repeats} repeats in the stream ({len(want)} events)"
    )
    assert set(seen) == want  # nothing lost
    assert _in_seq_order(seen)
    assert repeats <= result.carried  # only rows the move handed over are appended twice


_LEADER = textwrap.dedent(
    """
    import sys, trio
    from server.config import Config
    from server.events import build_event_appender
    from server.persist.writer import MessageWriter, PendingSend
    from storage import NewMessage, open_store

    class NoBus:
        def publish_message(self, room, seq, payload):
            pass

    async def main(catalog, shards, redis, rooms):
        async with open_store(catalog, scrypt_n=2**10, shards=shards) as store:
            config = Config.from_flat(events_enabled=True, events_redis_url=redis,
                                      bus_namespace="killed", stream_partitions=4)
            sink = build_event_appender(config, store.sharded.event_outboxes())
            async with trio.open_nursery() as nursery:
                await nursery.start(sink.run)
                assert sink.leading == len(shards), sink.leading
                user = int(sys.argv[5])
                writer = MessageWriter(store, NoBus(), queue_size=100, max_batch=10,
                                       after_commit=[sink])
                sends = [PendingSend(NewMessage(rooms[i % len(rooms)], user, "ann", f"k{i}",
                                                f"k{i}"), None, None) for i in range(90)]
                for start in range(0, 90, 6):
                    await writer.commit_batch(sends[start:start + 6])
                print("committed", sink.appended, flush=True)
                await trio.sleep_forever()

    trio.run(main, sys.argv[1], sys.argv[2].split(","), sys.argv[3], sys.argv[4].split(","))
    """
)


async def test_the_appending_node_killed_with_9_has_its_commits_appended_after(
    databases: LentDatabases,
    redis: tuple[coredis.Redis[bytes], str],  # noqa: F811
) -> None:
    client, namespace = redis
    catalog, shards = databases.url("catalog"), [databases.url(f"shard{i}") for i in range(3)]
    rooms = [room for group in rooms_on(3, 1, "kill") for room in group]
    async with _node(catalog, shards) as node:
        ann = await _setup(node, rooms)
    with trio.socket.socket() as unused:  # a Redis that is not there: nothing gets appended
        await unused.bind(("127.0.0.1", 0))
        dead = f"redis://127.0.0.1:{unused.getsockname()[1]}/0"
    env = {**os.environ, "PYTHONPATH": os.getcwd()}
    argv = [
        sys.executable,
        "-c",
        _LEADER,
        catalog,
        ",".join(shards),
        dead,
        ",".join(rooms),
        str(ann),
    ]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, env=env, text=True)  # noqa: ASYNC220
    try:
        assert proc.stdout is not None
        line = await trio.to_thread.run_sync(proc.stdout.readline)
        assert line.split() == ["committed", "0"], line  # the leader of all three, none appended
    finally:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        if proc.stdout is not None:
            proc.stdout.close()
    async with _node(catalog, shards) as node:
        appender = _appender(node, namespace)
        want = await _history(node, rooms)
        assert len(want) == 90
        async with trio.open_nursery() as nursery:
            await nursery.start(appender.run)
            seen = await _until(client, namespace, want)
            nursery.cancel_scope.cancel()
    assert set(seen) == want and len(seen) == len(want)
    assert _in_seq_order(seen)
