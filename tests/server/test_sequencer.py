"""Per-room seq ordering in front of the hub: in order once, older and repeated seqs dropped, a
gap held briefly and then filled from the store. The clock is trio's autojump clock, so a hold
runs instantly and exactly."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import trio
import trio.testing

from protocol import Message, encode
from server.fanout.sequencer import GAP_HOLD, Sequencer
from storage import StorageError


def _message(room: str, seq: int) -> Message:
    return Message(room=room, id=1000 + seq, seq=seq, user="u", text=f"m{seq}", ts=seq)


def _payload(room: str, seq: int) -> bytes:
    return encode(_message(room, seq))


class FakeMessages:
    """A store that has every message of every room up to `last`; records each read."""

    def __init__(self, last: int = 10_000, *, broken: bool = False) -> None:
        self.last = last
        self.broken = broken
        self.reads: list[tuple[str, int, int]] = []

    async def messages_after(self, room: str, after_seq: int, limit: int) -> list[Message]:
        self.reads.append((room, after_seq, limit))
        await trio.lowlevel.checkpoint()
        if self.broken:
            raise StorageError("the database is gone")
        last = min(self.last, after_seq + limit)
        return [_message(room, seq) for seq in range(after_seq + 1, last + 1)]


class Delivered:
    def __init__(self) -> None:
        self.items: list[tuple[str, int, bytes]] = []

    def __call__(self, room: str, seq: int, payload: bytes) -> None:
        self.items.append((room, seq, payload))

    def seqs(self, room: str = "r") -> list[int]:
        return [seq for r, seq, _ in self.items if r == room]


@pytest.fixture
def delivered() -> Delivered:
    return Delivered()


@pytest.fixture
def store() -> FakeMessages:
    return FakeMessages()


@pytest.fixture
async def sequencer(delivered: Delivered, store: FakeMessages) -> AsyncIterator[Sequencer]:
    sequencer = Sequencer(delivered, store)
    async with trio.open_nursery() as nursery:
        await nursery.start(sequencer.run)
        yield sequencer
        nursery.cancel_scope.cancel()


def _offer(sequencer: Sequencer, *seqs: int, room: str = "r") -> None:
    for seq in seqs:
        sequencer.offer(room, seq, _payload(room, seq))


async def test_out_of_order_messages_are_delivered_in_seq_order(
    sequencer: Sequencer, delivered: Delivered, store: FakeMessages, autojump_clock: object
) -> None:
    sequencer.track("r")
    _offer(sequencer, 1, 3)
    assert delivered.seqs() == [1]  # 3 waits for 2
    _offer(sequencer, 2)
    assert delivered.seqs() == [1, 2, 3]
    assert [payload for _, _, payload in delivered.items] == [_payload("r", s) for s in (1, 2, 3)]
    await trio.sleep(10 * GAP_HOLD)
    assert store.reads == []  # the late message filled the gap within the hold
    assert delivered.seqs() == [1, 2, 3]
    assert (sequencer.gaps_detected, sequencer.messages_backfilled) == (1, 0)


async def test_repeated_and_older_seqs_are_dropped(
    sequencer: Sequencer, delivered: Delivered, store: FakeMessages, autojump_clock: object
) -> None:
    sequencer.track("r")
    _offer(sequencer, 5, 6, 6, 5, 2, 7, 3, 7)
    assert delivered.seqs() == [5, 6, 7]
    assert sequencer.dropped == 5
    await trio.sleep(10 * GAP_HOLD)
    assert store.reads == [] and sequencer.gaps_detected == 0


async def test_a_gap_never_filled_is_backfilled_from_the_store_after_the_hold(
    sequencer: Sequencer, delivered: Delivered, store: FakeMessages, autojump_clock: object
) -> None:
    sequencer.track("r")
    _offer(sequencer, 1, 4, 5)
    started = trio.current_time()
    await trio.sleep(GAP_HOLD * 0.99)
    assert delivered.seqs() == [1] and store.reads == []  # still within the hold
    await trio.sleep(GAP_HOLD * 0.02)
    assert delivered.seqs() == [1, 2, 3, 4, 5]
    assert store.reads == [("r", 1, 2)]  # exactly the missing range, once
    assert trio.current_time() - started == pytest.approx(GAP_HOLD * 1.01)
    assert (sequencer.gaps_detected, sequencer.messages_backfilled) == (1, 2)
    # Backfilled and held messages are the same bytes a live one would have been.
    assert [payload for _, _, payload in delivered.items] == [_payload("r", s) for s in range(1, 6)]
    _offer(sequencer, 6)  # and from then on, live again
    assert delivered.seqs()[-1] == 6


async def test_a_gap_larger_than_a_page_is_backfilled_page_by_page(
    sequencer: Sequencer, delivered: Delivered, store: FakeMessages, autojump_clock: object
) -> None:
    sequencer.track("r")
    _offer(sequencer, 1, 1203)
    await trio.sleep(2 * GAP_HOLD)
    assert delivered.seqs() == list(range(1, 1204))
    assert len(store.reads) > 1 and store.reads[0][:2] == ("r", 1)
    assert sequencer.messages_backfilled == 1201


async def test_a_message_arriving_during_the_backfill_is_delivered_once_in_order(
    delivered: Delivered, autojump_clock: object
) -> None:
    arrived = trio.Event()

    class SlowStore(FakeMessages):
        async def messages_after(self, room: str, after_seq: int, limit: int) -> list[Message]:
            await arrived.wait()  # the late message 2 comes in while the store is read
            return await super().messages_after(room, after_seq, limit)

    sequencer = Sequencer(delivered, SlowStore())
    async with trio.open_nursery() as nursery:
        await nursery.start(sequencer.run)
        sequencer.track("r")
        _offer(sequencer, 1, 4)
        await trio.sleep(GAP_HOLD * 1.5)  # the filler is now waiting on the store
        _offer(sequencer, 2)
        assert delivered.seqs() == [1, 2]
        arrived.set()
        await trio.testing.wait_all_tasks_blocked()
        nursery.cancel_scope.cancel()
    assert delivered.seqs() == [1, 2, 3, 4]
    assert sequencer.messages_backfilled == 1


async def test_a_store_failure_delivers_what_is_held_past_the_hole(
    delivered: Delivered, autojump_clock: object
) -> None:
    store = FakeMessages(broken=True)
    sequencer = Sequencer(delivered, store)
    async with trio.open_nursery() as nursery:
        await nursery.start(sequencer.run)
        sequencer.track("r")
        _offer(sequencer, 1, 3, 4)
        await trio.sleep(2 * GAP_HOLD)
        assert delivered.seqs() == [1, 3, 4]  # never stalled behind a broken store
        _offer(sequencer, 5)
        assert delivered.seqs() == [1, 3, 4, 5]
        nursery.cancel_scope.cancel()
    assert len(store.reads) == 1


async def test_tracking_starts_at_the_first_message_seen_and_ends_with_untrack(
    sequencer: Sequencer, delivered: Delivered, store: FakeMessages, autojump_clock: object
) -> None:
    _offer(sequencer, 1)  # nobody here subscribes to the room: nothing to order or deliver
    sequencer.track("r")
    _offer(sequencer, 41, 42)  # the room had 40 messages before: no gap to fill
    assert delivered.seqs() == [41, 42]
    sequencer.untrack("r")
    _offer(sequencer, 43)
    assert delivered.seqs() == [41, 42]
    assert not sequencer.tracking("r")
    sequencer.track("r")
    _offer(sequencer, 50)  # a fresh start: the first message seen is the new baseline
    assert delivered.seqs() == [41, 42, 50]
    await trio.sleep(10 * GAP_HOLD)
    assert store.reads == [] and sequencer.gaps_detected == 0


async def test_a_room_released_during_the_hold_is_not_backfilled(
    sequencer: Sequencer, delivered: Delivered, store: FakeMessages, autojump_clock: object
) -> None:
    sequencer.track("r")
    sequencer.track("other")
    _offer(sequencer, 1, 3)
    _offer(sequencer, 7, room="other")
    sequencer.untrack("r")
    await trio.sleep(10 * GAP_HOLD)
    assert store.reads == []
    assert delivered.seqs() == [1] and delivered.seqs("other") == [7]
    sequencer.track("r")
    _offer(sequencer, 3)  # what was held was dropped with the room's tracking
    assert delivered.seqs() == [1, 3]


async def test_rooms_are_ordered_independently(
    sequencer: Sequencer, delivered: Delivered, store: FakeMessages, autojump_clock: object
) -> None:
    sequencer.track("a")
    sequencer.track("b")
    _offer(sequencer, 1, 3, room="a")
    _offer(sequencer, 1, 2, room="b")
    assert (delivered.seqs("a"), delivered.seqs("b")) == ([1], [1, 2])
    await trio.sleep(2 * GAP_HOLD)
    assert delivered.seqs("a") == [1, 2, 3]
    assert store.reads == [("a", 1, 1)]


async def test_a_gap_without_a_running_sequencer_is_a_clear_error(delivered: Delivered) -> None:
    sequencer = Sequencer(delivered, FakeMessages())
    sequencer.track("r")
    _offer(sequencer, 1, 2)
    with pytest.raises(RuntimeError, match="run"):
        _offer(sequencer, 4)


async def test_a_gap_after_the_sequencer_stopped_is_held_without_error(
    delivered: Delivered, store: FakeMessages
) -> None:
    sequencer = Sequencer(delivered, store)
    async with trio.open_nursery() as nursery:
        await nursery.start(sequencer.run)
        nursery.cancel_scope.cancel()
    sequencer.track("r")
    _offer(sequencer, 1, 3)  # shutting down: no filler, and no crash of the publisher
    assert delivered.seqs() == [1] and store.reads == []


async def test_a_hole_the_store_does_not_have_is_skipped_after_the_hold(
    delivered: Delivered, autojump_clock: object
) -> None:
    store = FakeMessages(last=1)  # it has nothing after seq 1
    sequencer = Sequencer(delivered, store)
    async with trio.open_nursery() as nursery:
        await nursery.start(sequencer.run)
        sequencer.track("r")
        _offer(sequencer, 1, 4)
        await trio.sleep(2 * GAP_HOLD)
        nursery.cancel_scope.cancel()
    assert delivered.seqs() == [1, 4]
    assert store.reads == [("r", 1, 2)] and sequencer.messages_backfilled == 0
