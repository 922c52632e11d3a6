"""A lone send (the last request its reader holds, with nothing else in the writer's hands) is
committed, published and acked inside `MessageWriter.submit` on a real SQLite store, without
the writer task; anything else is queued, in order, as before. Under load the writer task lets
the readers ready in its round admit theirs before it takes a batch."""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest
import trio
import trio.testing

from protocol import Ack, Event
from server.fanout.hub import RoomHub
from server.persist.writer import MessageWriter, PendingSend
from server.transport.flusher import Flusher
from storage import Appended, NewMessage, Store, open_store


class _Acks:
    """An `AckTarget` that records the seqs it was acked."""

    signed_out = False

    def __init__(self) -> None:
        self.seqs: list[int] = []

    def send_event(self, event: Event) -> None:
        assert isinstance(event, Ack), event
        self.seqs.append(event.seq)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with open_store(tmp_path / "x.db", scrypt_n=2**10) as store:
        user = await store.create_user("u", "correct horse")
        await store.create_room("r", user.id)
        yield store


def _send(text: str, acks: _Acks) -> PendingSend:
    return PendingSend(NewMessage("r", 1, "u", text, None), acks, None)


def _writer(store: Store) -> MessageWriter:
    return MessageWriter(store, RoomHub(Flusher()), queue_size=10, max_batch=10)


async def test_a_lone_send_is_stored_and_acked_before_submit_returns(store: Store) -> None:
    writer, acks = _writer(store), _Acks()
    await writer.submit(_send("a", acks), last=True)  # no writer task runs
    assert acks.seqs == [1]
    assert writer.queue_depth() == 0
    assert [m.text for m in (await store.history("r", None, 10))[0]] == ["a"]


async def test_a_send_with_more_behind_it_is_queued_and_order_is_kept(store: Store) -> None:
    writer, acks = _writer(store), _Acks()
    await writer.submit(_send("a", acks))  # more in the reader's hands
    await writer.submit(_send("b", acks), last=True)  # not alone: "a" is in hand
    assert acks.seqs == [] and writer.queue_depth() == 2
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        await trio.testing.wait_all_tasks_blocked()
        assert acks.seqs == [1, 2]
        await writer.submit(_send("c", acks), last=True)  # alone again: at once
        assert acks.seqs == [1, 2, 3]
        writer.close_input()
    texts = [m.text for m in (await store.history("r", None, 10))[0]]
    assert texts == ["a", "b", "c"]


async def test_nothing_is_taken_after_the_input_is_closed(store: Store) -> None:
    writer, acks = _writer(store), _Acks()
    writer.close_input()
    with pytest.raises(trio.ClosedResourceError):
        await writer.submit(_send("a", acks), last=True)
    assert acks.seqs == []
    assert (await store.history("r", None, 10))[0] == []


async def test_a_send_after_one_the_writer_task_holds_waits_its_turn(store: Store) -> None:
    writer, acks = _writer(store), _Acks()
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        await trio.testing.wait_all_tasks_blocked()  # the writer waits on its queue
        await writer.submit(_send("a", acks))
        await writer.submit(_send("b", acks), last=True)  # "a" not yet committed
        assert acks.seqs == []  # neither went ahead of the writer task
        await trio.testing.wait_all_tasks_blocked()
        assert acks.seqs == [1, 2]
        writer.close_input()


class _Until(_Acks):
    """`_Acks` that can be awaited until it holds a number of acks."""

    def __init__(self) -> None:
        super().__init__()
        self._want = 0
        self._reached = trio.Event()

    def send_event(self, event: Event) -> None:
        super().send_event(event)
        if len(self.seqs) >= self._want:
            self._reached.set()

    async def until(self, count: int) -> None:
        self._want, self._reached = count, trio.Event()
        if len(self.seqs) < count:
            await self._reached.wait()


class _Sizes:
    """The real store, recording the size of each batch the writer commits."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.sizes: list[int] = []

    async def append_batch(self, batch: Sequence[NewMessage]) -> list[Appended]:
        self.sizes.append(len(batch))
        return await self.store.append_batch(batch)


async def test_under_load_the_writer_lets_ready_readers_admit_before_it_takes_a_batch(
    store: Store,
) -> None:
    sizes, acks = _Sizes(store), _Until()
    writer = MessageWriter(sizes, RoomHub(Flusher()), queue_size=100, max_batch=100)  # type: ignore[arg-type]
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        await writer.submit(_send("a", acks))
        await writer.submit(_send("b", acks))  # a batch of two: load
        await acks.until(2)
        for i in range(10):
            await writer.submit(_send(f"x{i}", acks))  # wakes the writer
            # A reader made ready in the same scheduling round: trio may run the writer
            # first (half the time), which takes its batch only after this one admitted.
            nursery.start_soon(writer.submit, _send(f"y{i}", acks))
            await acks.until(4 + 2 * i)
        writer.close_input()
    assert sizes.sizes == [2] * 11
