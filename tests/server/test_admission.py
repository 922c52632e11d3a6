"""Admission (issue #14): a reader admits what one `recv` gave it without yielding per message,
up to `admit_per_turn` requests, so the writer's batches coalesce; one flooding connection still
cannot hold the event loop for more than that many requests at a time.

The writer is the real `MessageWriter` over an in-memory store that records its batches; the
readers are the real `_read_frames` over socketpairs, with real wsproto and a real `ChatSession`
on the chat fakes (tests/server/chat_fakes.py) above the writer.
"""

from __future__ import annotations

import dataclasses
import json
import socket
import struct
from collections.abc import Sequence
from pathlib import Path

import pytest
import trio
import trio.testing
from wsproto import ConnectionType
from wsproto.connection import Connection

from protocol import Message
from server.chat.connection import ChatConnection
from server.chat.session import ChatSession
from server.chat.websocket import _read_frames
from server.fanout.bus import MessageSink
from server.persist.writer import MessageWriter, PendingSend
from server.transport.connection import WsConnection
from storage import Appended, NewMessage, User

from .chat_fakes import Chat


class _RecordingStore:
    """Stores nothing: numbers each room's messages from 1 and keeps each batch's senders."""

    def __init__(self) -> None:
        self.batches: list[list[str]] = []
        self.first_batch = trio.Event()
        self._seq: dict[str, int] = {}

    async def append_batch(self, batch: Sequence[NewMessage]) -> list[Appended]:
        await trio.lowlevel.checkpoint()
        self.batches.append([m.user_name for m in batch])
        self.first_batch.set()
        out = []
        for m in batch:
            seq = self._seq[m.room] = self._seq.get(m.room, 0) + 1
            message = Message(m.room, seq, seq, m.user_name, m.text, 0, m.client_id)
            out.append(Appended(message, False))
        return out


class _NoBus:
    def publish_message(self, room: str, seq: int, payload: bytes) -> None:
        pass


def _writer(store: _RecordingStore, queue_size: int = 10_000) -> MessageWriter:
    sink: MessageSink = _NoBus()  # nothing is subscribed
    return MessageWriter(store, sink, queue_size=queue_size, max_batch=1000)  # type: ignore[arg-type]


def _pending(i: int) -> PendingSend:
    return PendingSend(NewMessage("r", 1, "ann", f"m{i}", None), None, None)


def _client_frame(request: dict[str, object]) -> bytes:
    """A final masked text frame, as a client sends it (mask 0: the payload reads as is)."""
    payload = json.dumps(request).encode()
    if len(payload) < 126:
        head = struct.pack("!BB", 0x81, 0x80 | len(payload))
    else:
        head = struct.pack("!BBH", 0x81, 0x80 | 126, len(payload))
    return head + b"\0\0\0\0" + payload


def _send(i: int) -> bytes:
    return _client_frame({"type": "send", "room": "r", "text": f"m{i}"})


async def test_submit_with_room_in_the_queue_does_not_yield() -> None:
    writer = _writer(_RecordingStore(), queue_size=10)
    ran: list[int] = []

    async def other() -> None:
        ran.append(len(ran))

    async with trio.open_nursery() as nursery:
        nursery.start_soon(other)
        for i in range(10):
            await writer.submit(_pending(i))
        assert ran == []  # ten submits and no other task ran between them
        assert writer.queue_depth() == 10
        await trio.testing.wait_all_tasks_blocked()
        assert ran == [0]  # it ran once this task yielded


async def test_submit_in_a_cancelled_scope_raises_cancelled_and_queues_nothing() -> None:
    writer = _writer(_RecordingStore(), queue_size=10)
    with trio.CancelScope() as scope:
        scope.cancel()
        await writer.submit(_pending(0))
        pytest.fail("submit did not raise Cancelled")  # pragma: no cover
    assert scope.cancelled_caught
    assert writer.queue_depth() == 0


async def test_submit_to_a_full_queue_waits_until_the_writer_takes_from_it(
    autojump_clock: trio.testing.MockClock,
) -> None:
    store = _RecordingStore()
    writer = _writer(store, queue_size=2)
    await writer.submit(_pending(0))
    await writer.submit(_pending(1))
    with trio.move_on_after(60) as waited:
        await writer.submit(_pending(2))  # backpressure: no room, so it waits
    assert waited.cancelled_caught and writer.queue_depth() == 2
    async with trio.open_nursery() as nursery:
        await nursery.start(writer.run)
        with trio.fail_after(1):
            await writer.submit(_pending(3))  # the writer took a batch: room again
        writer.close_input()
    assert sum(len(batch) for batch in store.batches) == 3


class _Reader:
    """One connection over a socketpair: the server side read by `_read_frames`."""

    def __init__(self, chat: Chat, token: str) -> None:
        self.client, server = socket.socketpair()
        server.setblocking(False)
        self.link = WsConnection(server, "peer", chat.flusher, chat.config.limits.outbound_limit)
        self.opened = trio.Event()
        self.conn = ChatConnection(
            self.link.out, stop_reading=self.link.stop_reading, on_open=self.opened.set
        )
        self.session = ChatSession(self.conn, chat.services)
        self.client.sendall(_client_frame({"type": "hello", "token": token}))

    async def read(self, chat: Chat) -> None:
        ws = Connection(ConnectionType.SERVER)
        try:
            with self.link.reader_scope:
                await _read_frames(self.conn, self.link, ws, self.session, chat.config)
        finally:
            self.link.socket_closed()


async def _flood_beside_one_send(tmp_path: Path, admit_per_turn: int) -> list[list[str]]:
    """ann writes 1,500 sends at once; once the writer has begun on them, bob writes one. The
    writer's batches, as the senders' names."""
    chat = Chat(tmp_path, rate_per_second=0.0, admit_per_turn=admit_per_turn)
    chat.store.tokens.update({"t-ann": User(1, "ann"), "t-bob": User(2, "bob")})
    chat.store.members["r"] = {1, 2}
    store = _RecordingStore()
    writer = _writer(store)
    chat.services = dataclasses.replace(chat.services, writer=writer)
    flooder, victim = _Reader(chat, "t-ann"), _Reader(chat, "t-bob")
    with trio.fail_after(20), flooder.client, victim.client:
        async with trio.open_nursery() as nursery:
            nursery.start_soon(writer.run)
            async with trio.open_nursery() as readers:
                for reader in (flooder, victim):
                    readers.start_soon(reader.read, chat)
                await flooder.opened.wait()
                await victim.opened.wait()
                flooder.client.sendall(b"".join(_send(i) for i in range(1500)))
                await store.first_batch.wait()
                victim.client.sendall(_send(0))
                flooder.client.shutdown(socket.SHUT_WR)
                victim.client.shutdown(socket.SHUT_WR)
            writer.close_input()
    return store.batches


@pytest.mark.parametrize("admit_per_turn", [16, 64])
async def test_a_flooding_connection_does_not_hold_back_another_connections_send(
    tmp_path: Path, admit_per_turn: int
) -> None:
    batches = await _flood_beside_one_send(tmp_path, admit_per_turn)
    order = [name for batch in batches for name in batch]
    assert sorted(order) == ["ann"] * 1500 + ["bob"]
    # bob's send became readable a few scheduling rounds after ann's flood began, and in each
    # round ann admits at most `admit_per_turn`: bob's is stored with the flood's first part,
    # in a batch shared with ann's (one commit), not after the flood.
    assert order.index("bob") < 6 * admit_per_turn
    [shared] = [batch for batch in batches if "bob" in batch]
    assert "ann" in shared


async def test_without_the_bound_one_recv_of_a_flood_is_admitted_before_anyone_else(
    tmp_path: Path,
) -> None:
    # The same run with a bound no recv reaches: what the bound above prevents.
    batches = await _flood_beside_one_send(tmp_path, 100_000)
    order = [name for batch in batches for name in batch]
    assert order.index("bob") >= 65536 // len(_send(1499)) - 1  # a whole recv of ann's first


def test_admit_per_turn_must_be_at_least_one(tmp_path: Path) -> None:
    from server.config import Config, ConfigError

    assert Config().limits.admit_per_turn == 128
    with pytest.raises(ConfigError, match="admit_per_turn: must be at least 1"):
        Config.from_flat(admit_per_turn=0)
