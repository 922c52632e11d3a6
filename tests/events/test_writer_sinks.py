"""The writer's sinks run in commit order, the bus first, and get only what was newly stored;
the `[events]` settings and the cross-section check."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from protocol import Message
from server.config import Config, ConfigError
from server.persist.writer import MessageWriter, PendingSend
from storage import NewMessage, open_store


class _Recorder:
    def __init__(self, log: list[tuple[str, int]]) -> None:
        self.log = log

    def publish_message(self, room: str, seq: int, payload: bytes) -> None:
        self.log.append(("bus", seq))

    def committed(self, messages: Sequence[Message]) -> None:
        self.log.extend(("sink", m.seq) for m in messages)


async def test_sinks_see_each_batch_after_the_bus_without_duplicates(tmp_path: Path) -> None:
    store = open_store(str(tmp_path / "h.db"), scrypt_n=2)
    async with store:
        user = await store.create_user("ann", "pw-pw-pw-pw")
        await store.create_room("r", user.id)
        log: list[tuple[str, int]] = []
        recorder = _Recorder(log)
        writer = MessageWriter(
            store, recorder, queue_size=10, max_batch=10, after_commit=[recorder]
        )

        def send(client_id: str) -> PendingSend:
            return PendingSend(NewMessage("r", user.id, "ann", "hi", client_id), None, None)

        await writer.commit_batch([send("a"), send("b")])
        await writer.commit_batch([send("b"), send("c")])  # "b" again: a duplicate
    assert log == [("bus", 1), ("bus", 2), ("sink", 1), ("sink", 2), ("bus", 3), ("sink", 3)]


def test_events_need_a_redis_url_of_their_own_or_the_buses() -> None:
    with pytest.raises(ConfigError, match="events_redis_url"):
        Config.from_flat(events_enabled=True)
    on_bus = Config.from_flat(events_enabled=True, redis_url="redis://127.0.0.1:6379/0")
    assert on_bus.events_url == "redis://127.0.0.1:6379/0"
    own = Config.from_flat(redis_url="redis://a:1/0", events_redis_url="redis://b:2/0")
    assert own.events_url == "redis://b:2/0"
    # With shards: one appender per shard database (tests/shards/test_event_stream.py).
    sharded = Config.from_flat(
        events_enabled=True,
        redis_url="redis://a:1/0",
        shards=("postgresql://h/a",),
        db_path="postgresql://h/c",
    )
    assert sharded.events.events_enabled and sharded.storage.shards
    # Several workers each run an appender; one, elected per database, appends.
    workers = Config.from_flat(events_enabled=True, redis_url="redis://a:1/0", workers=3)
    assert workers.server.workers == 3 and workers.events.events_enabled
    with pytest.raises(ConfigError, match="stream_partitions"):
        Config.from_flat(stream_partitions=0)
