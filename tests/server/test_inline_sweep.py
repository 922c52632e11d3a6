"""The writer sends a small committed batch itself (Flusher.defer_wake / end_deferral) instead
of waking the flusher task, on real socket pairs and a real SQLite store; large sweeps, a sweep
already due, a stopped flusher and the Redis bus's lead rounds keep the flusher task's path."""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import pytest
import trio
import trio.testing

from server.chat.connection import ChatConnection, ConnState
from server.fanout.hub import RoomHub
from server.persist.writer import MessageWriter, PendingSend
from server.transport.flusher import Flusher
from server.transport.frames import text_frame
from storage import NewMessage, Store, open_store

from ..connections import chat_connection

_sockets: list[socket.socket] = []


@pytest.fixture(autouse=True)
def _close_sockets() -> Iterator[None]:
    yield
    while _sockets:
        _sockets.pop().close()


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with open_store(tmp_path / "x.db", scrypt_n=2**10) as store:
        yield store


def _peer(flusher: Flusher) -> tuple[ChatConnection, socket.socket]:
    ours, theirs = socket.socketpair()
    _sockets.extend((ours, theirs))
    ours.setblocking(False)
    theirs.setblocking(False)
    conn = chat_connection(ours, flusher, 1 << 20)
    conn.user_name = "u"
    conn.set_state(ConnState.OPEN)
    return conn, theirs


def _on_the_wire(sock: socket.socket) -> bytes:
    """What the peer can read right now, without waiting."""
    try:
        return sock.recv(1 << 20)
    except BlockingIOError:
        return b""


async def _room_of_three(
    store: Store, flusher: Flusher
) -> tuple[MessageWriter, PendingSend, list[socket.socket]]:
    user = await store.create_user("u", "correct horse")
    await store.create_room("r", user.id)
    hub = RoomHub(flusher)
    writer = MessageWriter(store, hub, queue_size=10, max_batch=10, sweep=flusher)
    peers = [_peer(flusher) for _ in range(3)]
    for conn, _ in peers:
        hub.subscribe("r", conn)
    await trio.testing.wait_all_tasks_blocked()  # the presence frames are swept...
    for _, theirs in peers:
        _on_the_wire(theirs)  # ... and dropped
    send = PendingSend(NewMessage("r", user.id, "u", "hi", "c1"), peers[0][0], "ref1")
    return writer, send, [theirs for _, theirs in peers]


def _event_types(data: bytes) -> list[str]:
    frames, i = [], 0
    while i < len(data):  # small unmasked text frames: 2-byte headers
        n = data[i + 1] & 0x7F
        frames.append(json.loads(data[i + 2 : i + 2 + n])["type"])
        i += 2 + n
    return frames


async def test_a_small_batch_is_on_the_wire_when_its_commit_returns(store: Store) -> None:
    flusher = Flusher()
    async with trio.open_nursery() as nursery:
        await nursery.start(flusher.run)
        writer, send, peers = await _room_of_three(store, flusher)
        await writer.commit_batch([send])
        # No checkpoint since the commit: the flusher task has not run.
        seen = [_event_types(_on_the_wire(theirs)) for theirs in peers]
        assert seen == [["message", "ack"], ["message"], ["message"]]
        assert flusher.inline_sweeps == 1
        nursery.cancel_scope.cancel()


async def test_with_lead_rounds_the_flusher_task_sends_after_the_commit(store: Store) -> None:
    flusher = Flusher(lead_rounds=2)
    async with trio.open_nursery() as nursery:
        await nursery.start(flusher.run)
        writer, send, peers = await _room_of_three(store, flusher)
        await writer.commit_batch([send])
        assert [_on_the_wire(theirs) for theirs in peers] == [b""] * 3  # not yet: its rounds
        await trio.testing.wait_all_tasks_blocked()
        assert [_event_types(_on_the_wire(t)) for t in peers] == [
            ["message", "ack"],
            ["message"],
            ["message"],
        ]
        assert flusher.inline_sweeps == 0
        nursery.cancel_scope.cancel()


@pytest.mark.parametrize(("connections", "inline"), [(64, True), (65, False)])
async def test_only_a_small_sweep_is_done_inline(connections: int, inline: bool) -> None:
    flusher = Flusher()
    frame = text_frame(b'{"type":"x"}')
    async with trio.open_nursery() as nursery:
        await nursery.start(flusher.run)
        peers = [_peer(flusher) for _ in range(connections)]
        flusher.defer_wake()
        for conn, _ in peers:
            conn.enqueue(frame)
        flusher.end_deferral()
        now = [_on_the_wire(theirs) for _, theirs in peers]
        assert now == ([frame] if inline else [b""]) * connections
        await trio.testing.wait_all_tasks_blocked()
        later = [_on_the_wire(theirs) for _, theirs in peers]
        assert later == ([b""] if inline else [frame]) * connections
        nursery.cancel_scope.cancel()


async def test_a_sweep_already_due_is_left_to_the_flusher_task() -> None:
    flusher = Flusher()
    frame = text_frame(b'{"type":"x"}')
    async with trio.open_nursery() as nursery:
        await nursery.start(flusher.run)
        (a, a_peer), (b, b_peer) = _peer(flusher), _peer(flusher)
        a.enqueue(frame)  # wakes the flusher task: a sweep is due
        flusher.defer_wake()
        b.enqueue(frame)
        flusher.end_deferral()
        assert (_on_the_wire(a_peer), _on_the_wire(b_peer)) == (b"", b"")
        await trio.testing.wait_all_tasks_blocked()
        assert (_on_the_wire(a_peer), _on_the_wire(b_peer)) == (frame, frame)
        assert flusher.inline_sweeps == 0
        nursery.cancel_scope.cancel()


async def test_a_flusher_that_is_not_running_sweeps_nothing_inline() -> None:
    flusher = Flusher()  # never started, or its task has ended (shutdown)
    conn, theirs = _peer(flusher)
    flusher.defer_wake()
    conn.enqueue(text_frame(b"{}"))
    flusher.end_deferral()
    assert _on_the_wire(theirs) == b""
    assert flusher.dirty == [conn.out]
    assert flusher.inline_sweeps == 0
