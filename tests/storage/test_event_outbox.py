"""The event stream's outbox on every backend: committed messages by id, and the per-partition
cursor that only moves forward and survives reopening (storage.protocols.EventOutbox)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from storage import KIND_DELETE, KIND_EDIT, CompositeStore, EventOutbox, NewMessage, Store, User
from storage.routing import ShardedStore

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


def _outbox_of(opened_store: Store, room: str) -> EventOutbox:
    """The outbox `room`'s commits land in: the one database's, or its shard database's."""
    if isinstance(opened_store, ShardedStore):
        outboxes = opened_store.sharded.event_outboxes()
        return outboxes.outboxes[outboxes.home_of(room)]
    return _outbox(opened_store).events


async def test_the_stream_reads_skip_edits_and_deletes_on_every_backend(
    store: Store,  # noqa: F811
    alice: User,  # noqa: F811
) -> None:
    await store.create_room("r", alice.id)
    first, second = [r.message for r in await store.append_batch([msg("r", alice, "a")] * 2)]
    changes = [
        NewMessage("r", alice.id, alice.name, "a!", None, KIND_EDIT, first.id),  # seq 3
        msg("r", alice, "c"),  # seq 4
        NewMessage("r", alice.id, alice.name, "", None, KIND_DELETE, second.id),  # seq 5
    ]
    await store.append_batch(changes)
    events = _outbox_of(store, "r")
    assert [m.seq for m in await events.messages_since_id(0, 10)] == [1, 2, 4]
    read = await events.messages_for_stream([], 0, 10)
    assert [m.seq for m in read.messages] == [1, 2, 4]
    # Where commits race (a horizon), missing ids are read again as gaps: the edit's and the
    # delete's ids (positions on a shard) give nothing there either. SQLite has no gap reads.
    newest = await events.last_message_id()
    again = await events.messages_for_stream([(1, newest)], newest, 10)
    assert [m.seq for m in again.messages] == ([] if read.horizon is None else [1, 2, 4])
