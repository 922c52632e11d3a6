"""The appender, a consumer group and the search index against the machine's Redis (a namespace
of the test's own, deleted after) and a real SQLite store."""

from __future__ import annotations

import gc
import socket
import warnings
from collections.abc import Sequence
from pathlib import Path

import coredis
import pytest
import trio
from coredis.response.types import StreamPending

from server.events import EventAppender, EventConsumer, SearchIndex, StreamEvent, stream_key
from server.persist.writer import MessageWriter, PendingSend
from storage import CompositeStore, NewMessage, open_store

STEP = 10.0
URL = "redis://127.0.0.1:6379/0"


class _NoBus:
    def publish_message(self, room: str, seq: int, payload: bytes) -> None:
        pass


async def _store(tmp_path: Path) -> tuple[CompositeStore, int]:
    store = open_store(str(tmp_path / "h.db"), scrypt_n=2)
    await store.open()
    user = await store.create_user("ann", "pw-pw-pw-pw")
    for room in ("r1", "r2", "r3"):
        await store.create_room(room, user.id)
    return store, user.id


def _appender(store: CompositeStore, namespace: str, url: str = URL) -> EventAppender:
    return EventAppender(
        url, store.events, namespace=namespace, partitions=2, maxlen=1000, append_timeout=1.0
    )


async def _commit(store: CompositeStore, user: int, sinks: list[EventAppender], n: int) -> None:
    writer = MessageWriter(store, _NoBus(), queue_size=100, max_batch=10, after_commit=sinks)
    batch = [
        PendingSend(NewMessage(f"r{i % 3 + 1}", user, "ann", f"word{i} hello", f"c{i}"), None, None)
        for i in range(n)
    ]
    for start in range(0, n, 10):
        await writer.commit_batch(batch[start : start + 10])


async def _consume(
    consumer: EventConsumer, want: int, handle: SearchIndex | None = None
) -> list[StreamEvent]:
    got: list[StreamEvent] = []
    done = trio.Event()

    async def collect(events: Sequence[StreamEvent]) -> None:
        if handle is not None:
            await handle.add(events)
        got.extend(events)
        if len({(e.event.room, e.event.seq) for e in got}) >= want:
            done.set()

    async with trio.open_nursery() as nursery:
        await nursery.start(consumer.run, collect)
        with trio.fail_after(STEP):
            await done.wait()
        nursery.cancel_scope.cancel()
    return got


async def test_messages_committed_while_redis_is_unreachable_are_appended_by_the_next_start(
    tmp_path: Path, redis: tuple[coredis.Redis[bytes], str]
) -> None:
    client, namespace = redis
    store, user = await _store(tmp_path)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        dead = f"redis://127.0.0.1:{s.getsockname()[1]}/0"
    down = _appender(store, namespace, dead)
    # coredis 6.9 leaves the anyio memory streams of a failed connection attempt to the
    # garbage collector (ResourceWarning "Unclosed <MemoryObject...>"): not ours to close.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ResourceWarning)
        warnings.simplefilter("ignore", pytest.PytestUnraisableExceptionWarning)
        async with trio.open_nursery() as nursery:
            await nursery.start(down.run)
            await _commit(store, user, [down], 30)
            assert down.outbox_depth > 0 and down.appended == 0
            nursery.cancel_scope.cancel()  # the process "dies" with nothing appended
        del down
        gc.collect()
    up = _appender(store, namespace)
    consumer = EventConsumer(client, namespace=namespace, partitions=2, group="g", consumer="c")
    async with trio.open_nursery() as nursery:
        await nursery.start(up.run)
        got = await _consume(consumer, 30)
        nursery.cancel_scope.cancel()
    assert up.recovered == 30
    for room in ("r1", "r2", "r3"):
        seqs = [e.event.seq for e in got if e.event.room == room]
        assert seqs == list(range(1, 11))
    assert await store.events.event_cursors() != {}
    await store.aclose()


async def test_a_dead_consumers_unacked_events_are_claimed_and_indexed_once(
    tmp_path: Path, redis: tuple[coredis.Redis[bytes], str]
) -> None:
    client, namespace = redis
    store, user = await _store(tmp_path)
    appender = _appender(store, namespace)

    class Died(Exception):
        pass

    async def die(events: Sequence[StreamEvent]) -> None:
        raise Died  # took the entries, never acks them

    dying = EventConsumer(client, namespace=namespace, partitions=2, group="s", consumer="a")
    index = SearchIndex(str(tmp_path / "search.db"))
    async with trio.open_nursery() as nursery:
        await nursery.start(appender.run)
        await dying.create_groups()
        await _commit(store, user, [appender], 12)
        with pytest.raises(Died):
            with trio.fail_after(STEP):
                while True:
                    await dying.read_new(die)
        heir = EventConsumer(
            client, namespace=namespace, partitions=2, group="s", consumer="b", claim_idle=0.05
        )
        taken = await _consume(heir, 12, index)
        assert {e.event.seq for e in taken if e.event.room == "r1"} == {1, 2, 3, 4}
        for key in (stream_key(namespace, p) for p in range(2)):
            pending = await client.xpending(key, "s")
            assert isinstance(pending, StreamPending)
            assert pending.consumers.get(b"a", 0) == 0  # all claimed from the dead consumer
        again = EventConsumer(client, namespace=namespace, partitions=2, group="s2", consumer="c")
        await _consume(again, 12, index)  # every event delivered a second time
        nursery.cancel_scope.cancel()
    assert index.count() == 12 == index.indexed
    hits = await index.search("word7")
    assert [(h.room, h.text) for h in hits] == [("r2", "word7 hello")]
    index.close()
    await store.aclose()
