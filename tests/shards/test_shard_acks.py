"""The writer on a sharded store acks each shard's part of a batch as that shard commits (issue
#13): with one shard held by a lock, the other shard's senders are acked (and their messages
published, already durable) while it is held; a shard that fails answers only its own senders
`unavailable`, and a resend of the batch is acked as duplicates where it had committed."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

import psycopg
import pytest
import trio

from protocol import Ack, Error, Event
from server.ops.metrics import Metrics
from server.persist.writer import MessageWriter, PendingSend
from storage import NewMessage, open_store
from storage.postgres._connection import target_of
from storage.routing.sharded_store import ShardedStore
from tests.conftest import STEP
from tests.postgres import LentDatabases

from .conftest import rooms_on

_HOLD = "LOCK TABLE shard_messages IN SHARE MODE"  # a shard's inserts wait behind it


class _Sender:
    """A sending connection: what the writer answered it."""

    signed_out = False

    def __init__(self) -> None:
        self.events: list[Event] = []
        self.answered = trio.Event()

    def send_event(self, event: Event) -> None:
        self.events.append(event)
        self.answered.set()


class _DurableBus:
    """Records each published (room, seq) and whether it was already committed on its shard,
    read from another connection at the moment of publishing."""

    def __init__(self, shard_of: dict[str, str]) -> None:
        self._conns = {
            room: psycopg.connect(url, autocommit=True) for room, url in shard_of.items()
        }
        self.published: list[tuple[str, int, bool]] = []

    def publish_message(self, room: str, seq: int, data: bytes) -> None:
        row = (
            self._conns[room]
            .execute(
                "SELECT count(*) FROM shard_messages JOIN shard_rooms USING (room_id)"
                " WHERE name = %s AND seq = %s",
                (room, seq),
            )
            .fetchone()
        )
        self.published.append((room, seq, row == (1,)))

    def close(self) -> None:
        for conn in self._conns.values():
            conn.close()


class _Setup:
    def __init__(self, store: ShardedStore, shards: list[str], rooms: list[str]) -> None:
        self.store, self.shards, self.rooms = store, shards, rooms
        self.bus = _DurableBus(dict(zip(rooms, shards, strict=True)))
        self.metrics = Metrics()
        self.writer = MessageWriter(
            store, self.bus, queue_size=10, max_batch=10, metrics=self.metrics
        )
        self.user_id = 0

    def batch(self) -> tuple[list[PendingSend], list[_Sender]]:
        """Two sends to the room on shard 0 around one to the room on shard 1."""
        a, b = self.rooms
        senders = [_Sender() for _ in range(3)]
        sends = [(a, "a1"), (b, "b1"), (a, "a2")]
        batch = [
            PendingSend(NewMessage(room, self.user_id, "alice", text, text), sender, text)
            for (room, text), sender in zip(sends, senders, strict=True)
        ]
        return batch, senders


@pytest.fixture
async def setup(databases: LentDatabases) -> AsyncIterator[_Setup]:
    catalog, shards = databases.url("catalog"), [databases.url(f"shard{i}") for i in range(2)]
    rooms = [names[0] for names in rooms_on(2, 1, "acks")]
    async with open_store(catalog, scrypt_n=2**10, shards=shards) as store:
        assert isinstance(store, ShardedStore)
        alice = await store.create_user("alice", "pw")
        for room in rooms:
            await store.create_room(room, alice.id)
        found = _Setup(store, shards, rooms)
        found.user_id = alice.id
        try:
            yield found
        finally:
            found.bus.close()


def _waiting_on_locks(url: str) -> list[int]:
    """Backend pids of this database waiting on a lock."""
    with psycopg.connect(url, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database()"
            " AND wait_event_type = 'Lock'"
        ).fetchall()
    return [int(pid) for (pid,) in rows]


async def _until(check: Callable[[], bool]) -> None:
    """Wait for what no event announces (a backend starting to wait on a lock): checked every
    10 ms, for at most STEP seconds."""
    for _ in range(int(STEP / 0.01)):
        if await trio.to_thread.run_sync(check):
            return
        await trio.sleep(0.01)
    raise AssertionError("the condition never held")


def _ack(sender: _Sender) -> Ack:
    (event,) = sender.events
    assert isinstance(event, Ack), event
    return event


async def test_the_free_shard_is_acked_while_the_other_is_held_then_the_held_one(
    setup: _Setup,
) -> None:
    batch, (a1, b1, a2) = setup.batch()
    a, b = setup.rooms
    with psycopg.connect(setup.shards[1]) as hold:
        hold.execute(_HOLD)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(setup.writer.commit_batch, batch)
            with trio.fail_after(STEP):
                await a1.answered.wait()
                await a2.answered.wait()
            await _until(lambda: len(_waiting_on_locks(setup.shards[1])) == 1)
            assert [(_ack(s).room, _ack(s).seq) for s in (a1, a2)] == [(a, 1), (a, 2)]
            assert not b1.events  # held: its shard has not committed
            assert setup.bus.published == [(a, 1, True), (a, 2, True)]
            hold.rollback()  # release shard 1
            with trio.fail_after(STEP):
                await b1.answered.wait()
    assert (_ack(b1).room, _ack(b1).seq, _ack(b1).duplicate) == (b, 1, False)
    assert setup.bus.published[2:] == [(b, 1, True)]  # durable before delivered, here too
    ids = [_ack(s).id for s in (a1, b1, a2)]
    assert ids == sorted(ids)  # ids from the catalog, in the batch's order
    seconds = setup.metrics.shard_commit_seconds
    assert {shard: hist.count for shard, hist in seconds.items()} == {
        target_of(url): 1 for url in setup.shards
    }
    assert setup.metrics.batch_size.count == 2  # one observation per shard's part
    assert setup.writer.last_commit_ok_at > setup.writer.last_commit_failed_at


async def test_a_failing_shard_refuses_only_its_senders_and_a_resend_is_acked_as_duplicates(
    setup: _Setup, caplog: pytest.LogCaptureFixture
) -> None:
    batch, (a1, b1, a2) = setup.batch()
    a, b = setup.rooms
    with psycopg.connect(setup.shards[0]) as hold_a, psycopg.connect(setup.shards[1]) as hold_b:
        hold_a.execute(_HOLD)
        hold_b.execute(_HOLD)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(setup.writer.commit_batch, batch)
            await _until(lambda: [len(_waiting_on_locks(u)) for u in setup.shards] == [1, 1])
            (waiting,) = _waiting_on_locks(setup.shards[1])
            hold_b.execute("SELECT pg_cancel_backend(%s)", (waiting,))  # shard 1's part fails
            with trio.fail_after(STEP):
                await b1.answered.wait()
            (refused,) = b1.events
            assert isinstance(refused, Error) and (refused.code, refused.ref) == (
                "unavailable",
                "b1",
            )
            assert not a1.events and not a2.events  # shard 0 is still held, not refused
            hold_a.rollback()
            with trio.fail_after(STEP):
                await a2.answered.wait()
        hold_b.rollback()
    first = [_ack(a1), _ack(a2)]
    assert [(ack.room, ack.seq) for ack in first] == [(a, 1), (a, 2)]
    assert setup.bus.published == [(a, 1, True), (a, 2, True)]
    # The failure came first and the success after, yet the batch counts as failed (/readyz).
    writer = setup.writer
    assert writer.last_commit_failed_at > writer.last_commit_ok_at > float("-inf")
    assert "was cancelled" in writer.last_commit_error
    assert setup.metrics.shard_commit_failures == {target_of(setup.shards[1]): 1}
    assert setup.metrics.writer_commit_failures == 1
    assert [r.getMessage() for r in caplog.records if r.exc_info] == [
        "message batch of 1 could not be stored"
    ]

    again, (ra1, rb1, ra2) = setup.batch()  # the senders resend with the same client_ids
    await writer.commit_batch(again)
    assert [(_ack(s).id, _ack(s).duplicate) for s in (ra1, ra2)] == [
        (ack.id, True) for ack in first
    ]
    assert (_ack(rb1).room, _ack(rb1).seq, _ack(rb1).duplicate) == (b, 1, False)
    assert setup.bus.published[2:] == [(b, 1, True)]  # duplicates are not published again
    assert writer.last_commit_ok_at > writer.last_commit_failed_at
    assert await setup.store.last_seqs([a, b]) == {a: 2, b: 1}
