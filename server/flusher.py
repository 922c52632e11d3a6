"""One task writes every dirty connection's whole backlog with one non-blocking send.

Publishing only appends shared frame bytes to each subscriber's list and marks it dirty; the
flusher wakes after the current batch of trio work and empties each dirty connection with a single
`socket.send`. Only a connection whose kernel buffer is full gets a writer task of its own (in the
flusher's nursery) that waits for writability, so a slow peer never slows a room.
"""

from __future__ import annotations

import contextlib
import socket
from typing import TYPE_CHECKING

import trio

if TYPE_CHECKING:
    from .connection import WsConnection


class Flusher:
    def __init__(self) -> None:
        self._dirty: list[WsConnection] = []
        self._wake = trio.Event()
        self._nursery: trio.Nursery | None = None

    def mark_dirty(self, conn: WsConnection) -> None:
        """Queue `conn` for the next flush (the caller sets `conn.dirty`)."""
        self._dirty.append(conn)
        self._wake.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            while True:
                await self._wake.wait()
                self._wake = trio.Event()
                dirty, self._dirty = self._dirty, []
                for conn in dirty:
                    conn.dirty = False
                    if not conn.blocked:
                        self._flush(conn)

    def flush_now(self, conn: WsConnection) -> None:
        """Write `conn`'s backlog immediately (used when closing, so the close frame goes out)."""
        if not conn.blocked:
            self._flush(conn)

    def _flush(self, conn: WsConnection) -> None:
        frames = conn.pending
        if not frames:
            return
        data = frames[0] if len(frames) == 1 else b"".join(frames)
        try:
            sent = conn.sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            conn.transport_failed()
            return
        if sent == len(data):
            frames.clear()
            conn.pending_bytes = 0
            return
        _keep_unsent(conn, frames, sent)
        conn.blocked = True
        assert self._nursery is not None
        self._nursery.start_soon(self._drain, conn)

    async def _drain(self, conn: WsConnection) -> None:
        """Write a blocked connection's backlog as the peer makes room; then hand it back."""
        sock = conn.sock
        while conn.pending and not conn.sock_closed:
            try:
                await trio.lowlevel.wait_writable(sock)
            except (trio.ClosedResourceError, OSError):
                return
            frames = conn.pending
            data = frames[0] if len(frames) == 1 else b"".join(frames)
            try:
                sent = sock.send(data)
            except BlockingIOError:
                sent = 0
            except OSError:
                conn.transport_failed()
                return
            _keep_unsent(conn, frames, sent)
        conn.blocked = False
        conn.drained()


def _keep_unsent(conn: WsConnection, frames: list[bytes], sent: int) -> None:
    """Leave in `conn.pending` what `send` did not take, frame by frame, noting whether the
    first one is a frame already partly on the wire (it must be finished, never dropped)."""
    offset = 0
    for index, frame in enumerate(frames):
        end = offset + len(frame)
        if end > sent:
            rest = frames[index:]
            conn.partial = sent > offset
            if conn.partial:
                rest[0] = frame[sent - offset :]
            conn.pending = rest
            conn.pending_bytes = sum(map(len, rest))
            return
        offset = end
    conn.pending = []
    conn.pending_bytes = 0
    conn.partial = False


def shutdown_write(sock: socket.socket) -> None:
    """Half-close after the close frame so the peer sees EOF (no RST that could drop the frame)."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_WR)
