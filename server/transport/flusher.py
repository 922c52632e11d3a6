"""One task writes every dirty connection's whole backlog with one non-blocking send.

Publishing only appends to backlogs (a room's frames as one shared `Segment`) and marks the
connection dirty; the flusher wakes after the current batch of trio work and empties each dirty
connection with a single `socket.send`. Only a connection whose kernel buffer is full gets a
writer task of its own (in the flusher's nursery) that waits for writability, so a slow peer
never slows a room; its backlog is counted each cycle and bounded (slow-consumer close).

A backlog item is one frame (bytes) or a room segment of whole frames, so where frames end is
known without parsing: only the first item can be partly written, and `conn.head_sent` says how
much of it. The writer task sends the items in place with one `sendmsg`, never a joined copy.
"""

from __future__ import annotations

import contextlib
import socket
from typing import TYPE_CHECKING

import trio

from protocol import CloseCode

if TYPE_CHECKING:
    from server.transport.connection import Outbound, WsConnection

# Buffers per `sendmsg`: under every platform's IOV_MAX that matters (Linux and macOS: 1024).
_MAX_BUFFERS = 512


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
                self._blocked(conn, sent)
        self.bytes_sent += sent_total

    def flush_now(self, conn: WsConnection) -> None:
        """Write `conn`'s backlog immediately (used when closing, so the close frame goes out)."""
        if not conn.blocked and not conn.sock_closed:
            self._flush_all([conn])

    def _blocked(self, conn: WsConnection, sent: int) -> None:
        """The kernel took only `sent` bytes of the backlog (all sealed by the send): keep the
        rest and hand `conn` to a writer task."""
        sizes = [len(item if type(item) is bytes else item.seal()) for item in conn.pending]  # type: ignore[union-attr]
        conn.counted = len(sizes)
        conn.pending_bytes = sum(sizes) - sent
        _consume(conn, sizes, sent)
        conn.blocked = True
        self.blocked_writers += 1
        assert self._nursery is not None
        self._nursery.start_soon(self._drain, conn)

    def _write_some(self, conn: WsConnection) -> bool:
        """One non-blocking `sendmsg` of the backlog's first items as they are (the first from
        where the last send stopped); False if the socket broke."""
        batch = conn.pending[:_MAX_BUFFERS]
        buffers: list[bytes | memoryview] = [
            item if type(item) is bytes else item.seal()  # type: ignore[union-attr]
            for item in batch
        ]
        sizes = [len(buffer) for buffer in buffers]
        if conn.counted < len(sizes):
            conn.pending_bytes += sum(sizes[conn.counted :])
            conn.counted = len(sizes)
        if conn.head_sent:
            buffers[0] = memoryview(buffers[0])[conn.head_sent :]
        try:
            sent = conn.sock.sendmsg(buffers)
        except BlockingIOError:
            return True
        except OSError:
            conn.transport_failed()
            return False
        self.bytes_sent += sent
        conn.pending_bytes -= sent
        _consume(conn, sizes, sent)
        return True

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
                if not self._write_some(conn):
                    return
            conn.blocked = False
            conn.drained()
        finally:
            self.blocked_writers -= 1


def _joined(items: list[Outbound]) -> bytes:
    return b"".join([i if type(i) is bytes else i.seal() for i in items])  # type: ignore[union-attr]


def _consume(conn: WsConnection, sizes: list[int], sent: int) -> None:
    """Drop from `conn.pending` the items (of `sizes` bytes each, in order) that `sent` more
    bytes finished, and note how much of the next one is already written."""
    offset = conn.head_sent + sent
    done = 0
    for size in sizes:
        if offset < size:
            break
        offset -= size
        done += 1
    del conn.pending[:done]
    conn.head_sent = offset
    conn.counted -= done


def shutdown_write(sock: socket.socket) -> None:
    """Half-close after the close frame so the peer sees EOF (no RST that could drop the frame)."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_WR)
