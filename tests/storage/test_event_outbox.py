"""The event stream's outbox on every backend: committed messages by id, and the per-partition
cursor that only moves forward and survives reopening (storage.protocols.EventOutbox)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from storage import CompositeStore, Store, User

from .test_storage import alice, database_url, make_store, msg, opened, store  # noqa: F401

# One outbox per database: the sharded backend has one per shard database instead
# (storage.routing.ShardOutboxes; tests/shards/test_event_stream.py).
ONE_DATABASE = pytest.mark.parametrize("database_url", ["sqlite", "postgresql"], indirect=True)


def _outbox(opened_store: Store) -> CompositeStore:
    assert isinstance(opened_store, CompositeStore)
    assert opened_store.messages is opened_store.backend
    return opened_store


@ONE_DATABASE
async def test_messages_since_id_gives_every_room_in_id_order_from_the_cursor(
    store: Store,  # noqa: F811
    alice: User,  # noqa: F811
) -> None:
    events = _outbox(store).events
    assert await events.last_message_id() == 0
    await store.create_room("a", alice.id)
    await store.create_room("b", alice.id)
    stored = await store.append_batch([msg(r, alice, f"{r}{i}") for i in range(3) for r in "ab"])
    ids = [r.message.id for r in stored]
    assert await events.last_message_id() == max(ids)
    since = await events.messages_since_id(ids[1], 3)
    assert [m.id for m in since] == sorted(ids)[2:5]
    assert [(m.room, m.seq, m.text) for m in since] == [
        ("a", 2, "a1"),
        ("b", 2, "b1"),
        ("a", 3, "a2"),
    ]
    assert since[0] == stored[2].message
    assert await events.messages_since_id(max(ids), 10) == []


@ONE_DATABASE
async def test_event_cursors_only_move_forward_and_survive_reopening(
    make_store: Callable[[], Store],  # noqa: F811
) -> None:
    async with opened(make_store()) as first:
        events = _outbox(first).events
        assert await events.event_cursors() == {}
        await events.advance_event_cursors({0: 5, 3: 9})
        await events.advance_event_cursors({0: 2, 1: 7})  # 0 does not move back
    async with opened(make_store()) as second:
        assert await _outbox(second).events.event_cursors() == {0: 5, 1: 7, 3: 9}
