"""MessageWriter when the database fails batch after batch (a full disk) and then recovers, with
sends of a connection whose token was revoked before their commit began, and when cancelled."""

from __future__ import annotations

import logging
import socket
from collections.abc import AsyncIterator, Sequence
from pathlib import Path

import pytest
import trio

from protocol import CloseCode
from server.chat.connection import ConnState
from server.fanout.hub import RoomHub
from server.persist.writer import MessageWriter, PendingSend
from server.transport.flusher import Flusher
from storage import Appended, NewMessage, StorageError, Store, open_store

from ..connections import chat_connection


class _HeldStore:
    """A real SQLite store whose appends wait, once begun, until `release` is set."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.begun = trio.Event()
        self.release = trio.Event()

    async def append_batch(self, batch: Sequence[NewMessage]) -> list[Appended]:
        self.begun.set()
        await self.release.wait()
        return await self.store.append_batch(batch)


class _DiskFullStore:
    """A real SQLite store whose message appends fail while `full` is set, like a full disk."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self.full = False

    async def append_batch(self, batch: Sequence[NewMessage]) -> list[Appended]:
        if self.full:
            raise StorageError("OperationalError: database or disk is full")
        return await self.store.append_batch(batch)


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    async with open_store(tmp_path / "x.db", scrypt_n=2**10) as store:
        yield store


async def test_a_full_disk_logs_one_traceback_then_counts_and_one_line_on_recovery(
    store: Store, caplog: pytest.LogCaptureFixture
) -> None:
    user = await store.create_user("u", "correct horse")
    await store.create_room("r", user.id)
    disk = _DiskFullStore(store)
    writer = MessageWriter(disk, RoomHub(Flusher()), queue_size=10, max_batch=10)  # type: ignore[arg-type]
    caplog.set_level(logging.INFO, logger="server.persist.writer")

    disk.full = True
    for i in range(100):
        message = NewMessage("r", user.id, "u", f"m{i}", None)
        await writer.commit_batch([PendingSend(message, None, None)])
    assert writer.last_commit_error == "OperationalError: database or disk is full"
    tracebacks = [record for record in caplog.records if record.exc_info]
    assert len(tracebacks) == 1, [record.getMessage() for record in caplog.records]
    assert tracebacks[0].getMessage() == "message batch of 1 could not be stored"
    assert len(caplog.records) == 1  # the rest are counted, within the first 10 s

    disk.full = False
    for i in range(3):
        message = NewMessage("r", user.id, "u", f"ok{i}", None)
        await writer.commit_batch([PendingSend(message, None, None)])
    lines = [record.getMessage() for record in caplog.records]
    assert lines[1:] == ["message batches are being stored again after 100 failures"]
    assert await store.last_seq("r") == 3


async def test_sends_of_a_connection_signed_out_before_their_commit_began_are_not_stored(
    store: Store,
) -> None:
    user = await store.create_user("u", "correct horse")
    await store.create_room("r", user.id)
    flusher = Flusher()
    writer = MessageWriter(store, RoomHub(flusher), queue_size=10, max_batch=10)
    ours, theirs = socket.socketpair()
    with ours, theirs:
        ours.setblocking(False)
        revoked, other = (chat_connection(ours, flusher, 1 << 20) for _ in range(2))
        for conn in (revoked, other):
            conn.set_state(ConnState.OPEN)
        batch = [
            PendingSend(NewMessage("r", user.id, "u", "queued", "c1"), revoked, None),
            PendingSend(NewMessage("r", user.id, "u", "kept", "c2"), other, None),
        ]
        revoked.close(CloseCode.UNAUTHENTICATED, "token revoked")  # a logout, while queued
        assert revoked.signed_out and not other.signed_out
        await writer.commit_batch(batch)
    messages, _ = await store.history("r", None, 10)
    assert [m.text for m in messages] == ["kept"]


async def test_a_batch_taken_off_the_queue_is_committed_though_the_writer_is_cancelled(
    store: Store,
) -> None:
    user = await store.create_user("u", "correct horse")
    await store.create_room("r", user.id)
    held = _HeldStore(store)
    writer = MessageWriter(held, RoomHub(Flusher()), queue_size=10, max_batch=10)  # type: ignore[arg-type]
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(writer.run)
            await writer.submit(
                PendingSend(NewMessage("r", user.id, "u", "taken", None), None, None)
            )
            await held.begun.wait()
            # Cancelled while the batch is in hand (no checkpoint between): it still commits,
            # where an unshielded commit would see Cancelled at its next checkpoint.
            nursery.cancel_scope.cancel()
            held.release.set()
    assert writer.finished.is_set()
    messages, _ = await store.history("r", None, 10)
    assert [m.text for m in messages] == ["taken"]


async def test_an_idle_writer_stops_when_cancelled(store: Store) -> None:
    writer = MessageWriter(store, RoomHub(Flusher()), queue_size=10, max_batch=10)
    with trio.fail_after(10):
        async with trio.open_nursery() as nursery:
            await nursery.start(writer.run)
            for _ in range(3):  # a cancellation waits at no batch when there is none
                await trio.lowlevel.checkpoint()
            nursery.cancel_scope.cancel()
    assert writer.finished.is_set()
