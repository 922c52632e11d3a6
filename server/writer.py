"""The message writer: drains the send queue, commits each batch in one transaction, then
publishes and acks. Nothing is delivered before it is durable."""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import trio

from protocol import Ack, Error, ErrorCode, Message, encode
from storage import Appended, NewMessage, StorageError, Store

from .connection import WsConnection
from .frames import text_frame
from .hub import RoomHub


@dataclass(frozen=True, slots=True)
class PendingSend:
    message: NewMessage
    sender: WsConnection | None
    ref: str | None


_log = logging.getLogger(__name__)
BatchObserver = Callable[[int, float], None]


class MessageWriter:
    def __init__(
        self,
        store: Store,
        hub: RoomHub,
        *,
        queue_size: int,
        max_batch: int,
        on_batch: BatchObserver | None = None,
    ) -> None:
        self._store = store
        self._hub = hub
        self._max_batch = max_batch
        self._on_batch = on_batch
        self._send, self._receive = trio.open_memory_channel[PendingSend](queue_size)
        self.finished = trio.Event()

    async def submit(self, item: PendingSend) -> None:
        """Queue a message for the next batch; waits (backpressure) while the queue is full."""
        await self._send.send(item)

    def queue_depth(self) -> int:
        return self._receive.statistics().current_buffer_used

    def close_input(self) -> None:
        """No more submissions: the writer commits what is queued, then `run` returns."""
        self._send.close()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        receive = self._receive
        try:
            while True:
                try:
                    first = await receive.receive()
                except trio.EndOfChannel:
                    return
                batch = [first]
                while len(batch) < self._max_batch:
                    try:
                        batch.append(receive.receive_nowait())
                    except (trio.WouldBlock, trio.EndOfChannel):
                        break
                # A batch taken off the queue is committed and delivered even if we are being
                # cancelled: its senders may already be waiting for their acks.
                with trio.CancelScope(shield=True):
                    await self.commit_batch(batch)
        finally:
            self.finished.set()

    async def commit_batch(self, batch: list[PendingSend]) -> None:
        started = trio.current_time()
        try:
            results = await self._store.append_batch([item.message for item in batch])
        except StorageError:
            # Not stored, so not acked: tell each sender, who may retry with the same client_id.
            _log.exception("message batch of %d could not be stored", len(batch))
            for item in batch:
                if item.sender is not None:
                    item.sender.send_event(
                        Error(code=ErrorCode.UNAVAILABLE, message="not stored", ref=item.ref)
                    )
            return
        if self._on_batch is not None:
            self._on_batch(len(batch), trio.current_time() - started)
        self.deliver(batch, results)

    def deliver(self, batch: list[PendingSend], results: list[Appended]) -> None:
        hub = self._hub
        for item, result in zip(batch, results, strict=True):
            message = result.message
            if not result.duplicate:
                hub.publish(message.room, text_frame(encode(message)), message.seq)
            sender = item.sender
            if sender is not None:
                sender.send_event(_ack(message, result.duplicate, item.ref))


def _ack(message: Message, duplicate: bool, ref: str | None) -> Ack:
    return Ack(
        room=message.room,
        id=message.id,
        seq=message.seq,
        client_id=message.client_id,
        duplicate=duplicate,
        ref=ref,
    )
