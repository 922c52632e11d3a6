"""One task writes every dirty connection's whole backlog with one non-blocking send.

Publishing only appends to backlogs (a room's frames as one shared `Segment`) and marks the
connection dirty; the flusher wakes after the current batch of trio work and empties each dirty
connection with a single `socket.send`. Only a connection whose kernel buffer is full gets a
writer task of its own (in the flusher's nursery) that waits for writability, so a slow peer
never slows a room; its backlog is counted each cycle and bounded (slow-consumer close).
"""

from __future__ import annotations

import contextlib
import socket
import struct
from typing import TYPE_CHECKING

import trio

from protocol import CloseCode

if TYPE_CHECKING:
    from server.transport.connection import Outbound, WsConnection


class Flusher:
    def __init__(self) -> None:
        self.dirty: list[WsConnection] = []
        self._wake = trio.Event()
        self._nursery: trio.Nursery | None = None
        self.bytes_sent = 0
        self.blocked_writers = 0

    def mark_dirty(self, conn: WsConnection) -> None:
        """Queue `conn` for the next flush (the caller has set `conn.dirty`)."""
        self.dirty.append(conn)
        self._wake.set()

    def wake(self) -> None:
        self._wake.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            while True:
                await self._wake.wait()
                self._wake = trio.Event()
                dirty, self.dirty = self.dirty, []
                self._flush_all(dirty)

    def _flush_all(self, dirty: list[WsConnection]) -> None:
        """One non-blocking send of each connection's whole backlog. Kept in one loop with no
        calls per connection: at one message per cycle it runs once per recipient, and those
        calls were a fifth of the CPU besides the send itself."""
        sent_total = 0
        for conn in dirty:
            conn.dirty = False
            if conn.blocked:
                self._count_backlog(conn)
                continue
            items = conn.pending
            if not items:
                continue
            if len(items) == 1:
                item = items[0]
                # A room segment is sealed by its first subscriber, then its bytes are shared.
                data = item if type(item) is bytes else item.data or item.seal()  # type: ignore[union-attr]
            else:
                data = _joined(items)
            try:
                sent = conn.sock.send(data)
            except BlockingIOError:
                sent = 0
            except OSError:
                conn.transport_failed()
                continue
            sent_total += sent
            if sent == len(data):
                items.clear()  # the list is the connection's own: no new one per cycle
            else:
                self._blocked(conn, data, sent)
        self.bytes_sent += sent_total

    def flush_now(self, conn: WsConnection) -> None:
        """Write `conn`'s backlog immediately (used when closing, so the close frame goes out)."""
        if not conn.blocked and not conn.sock_closed:
            self._flush_all([conn])

    def _blocked(self, conn: WsConnection, data: bytes, sent: int) -> None:
        """The kernel took only `sent` bytes: keep the rest and hand `conn` to a writer task."""
        _keep_unsent(conn, data, sent)
        conn.blocked = True
        self.blocked_writers += 1
        assert self._nursery is not None
        self._nursery.start_soon(self._drain, conn)

    def _send(self, conn: WsConnection, data: bytes) -> int | None:
        """One non-blocking send: bytes taken (0 if the kernel buffer is full), None if broken."""
        try:
            sent = conn.sock.send(data)
        except BlockingIOError:
            return 0
        except OSError:
            conn.transport_failed()
            return None
        self.bytes_sent += sent
        return sent

    def _count_backlog(self, conn: WsConnection) -> None:
        pending = conn.pending
        total = conn.pending_bytes
        for item in pending[conn.counted :]:
            total += len(item) if type(item) is bytes else len(item.seal())  # type: ignore[union-attr]
        conn.pending_bytes = total
        conn.counted = len(pending)
        if total > conn.outbound_limit:
            conn.close(CloseCode.SLOW_CONSUMER, "slow consumer", discard_backlog=True)

    async def _drain(self, conn: WsConnection) -> None:
        """Write a blocked connection's backlog as the peer makes room; then hand it back."""
        sock = conn.sock
        try:
            while conn.pending and not conn.sock_closed:
                try:
                    await trio.lowlevel.wait_writable(sock)
                except (trio.ClosedResourceError, OSError):
                    return
                data = _joined(conn.pending)
                sent = self._send(conn, data)
                if sent is None:
                    return
                _keep_unsent(conn, data, sent)
            conn.blocked = False
            conn.drained()
        finally:
            self.blocked_writers -= 1


def _joined(items: list[Outbound]) -> bytes:
    if len(items) == 1:
        item = items[0]
        return item if type(item) is bytes else item.seal()  # type: ignore[union-attr]
    return b"".join([i if type(i) is bytes else i.seal() for i in items])  # type: ignore[union-attr]


def _keep_unsent(conn: WsConnection, data: bytes, sent: int) -> None:
    """Leave in `conn.pending` what `send` did not take, noting whether it starts inside a frame
    already partly on the wire (that frame must be finished, never dropped)."""
    if sent >= len(data):
        conn.pending = []
        conn.partial = False
        conn.pending_bytes = conn.counted = 0
        return
    start, end = _frame_bounds(data, sent)
    rest: list[Outbound] = [data[sent:end]]
    if end < len(data):
        rest.append(data[end:])
    conn.pending = rest
    conn.partial = start < sent
    conn.pending_bytes = len(data) - sent
    conn.counted = len(rest)


def _frame_bounds(data: bytes, offset: int) -> tuple[int, int]:
    """Start and end of the frame holding byte `offset` (our frames are unmasked: frames.py)."""
    position = 0
    while True:
        end = position + _frame_len_at(data, position)
        if end > offset:
            return position, end
        position = end


def _frame_len_at(data: bytes, position: int) -> int:
    if position >= len(data):
        return 0
    n = data[position + 1] & 0x7F
    if n == 126:
        return 4 + int(struct.unpack_from("!H", data, position + 2)[0])
    if n == 127:
        return 10 + int(struct.unpack_from("!Q", data, position + 2)[0])
    return 2 + n


def shutdown_write(sock: socket.socket) -> None:
    """Half-close after the close frame so the peer sees EOF (no RST that could drop the frame)."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_WR)
