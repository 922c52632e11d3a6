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
        pending = conn.pending
        if not pending:
            return
        data = pending[0] if len(pending) == 1 else b"".join(pending)
        pending.clear()
        conn.pending_bytes = 0
        try:
            sent = conn.sock.send(data)
        except BlockingIOError:
            sent = 0
        except OSError:
            conn.transport_failed()
            return
        if sent < len(data):
            rest = data[sent:]
            conn.pending.append(rest)
            conn.pending_bytes = len(rest)
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
            pending = conn.pending
            data = pending[0] if len(pending) == 1 else b"".join(pending)
            try:
                sent = sock.send(data)
            except BlockingIOError:
                sent = 0
            except OSError:
                conn.transport_failed()
                return
            rest = data[sent:]
            pending.clear()
            conn.pending_bytes = len(rest)
            if rest:
                pending.append(rest)
        conn.blocked = False
        conn.drained()


def shutdown_write(sock: socket.socket) -> None:
    """Half-close after the close frame so the peer sees EOF (no RST that could drop the frame)."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_WR)
