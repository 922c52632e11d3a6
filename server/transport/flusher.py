"""One task writes every dirty connection's whole backlog with one non-blocking send.

Publishing only appends to backlogs (a room's frames as one shared `Segment`) and marks the
connection dirty; the flusher wakes after the current batch of trio work and empties each dirty
connection with a single `socket.send`. The writer, delivering a small committed batch while
the flusher is idle, runs that same sweep itself (`defer_wake`/`end_deferral`): one task step
fewer per message at light load. Only a connection whose kernel buffer is full gets a
writer task of its own (in the flusher's nursery) that waits for writability, so a slow peer
never slows a room; its backlog is counted each cycle and bounded (slow-consumer close).

A backlog item is one frame (bytes) or a room segment of whole frames, so where frames end is
known without parsing: only the first item can be partly written, and `buf.head_sent` says how
much of it. The writer task sends the items in place with one `sendmsg`, never a joined copy.
The backlog's state and its invariants belong to `OutboundBuffer` (server.transport.outbound);
the single-send loop below reads its slots directly, as that module documents.
"""

from __future__ import annotations

import contextlib
import socket

import trio

from server.transport.outbound import Outbound, OutboundBuffer

# Buffers per `sendmsg`: under every platform's IOV_MAX that matters (Linux and macOS: 1024).
_MAX_BUFFERS = 512
# Dirty connections a publisher may sweep itself at `end_deferral` (one non-blocking send each);
# more go to the flusher task, so one large sweep is never inside the publisher's turn.
_INLINE_SWEEP_MAX = 64


class Flusher:
    def __init__(self, *, lead_rounds: int = 0) -> None:
        # Scheduling rounds a sweep waits after its wake-up, so a task woken by the same event
        # goes first: with the Redis bus, the publish to the other processes is then on the
        # wire before this process's own sweep of (say) 500 sends, instead of after it half
        # the time (trio's order within a round is random). Measured by
        # scripts/bench_hop_floor.py: on one CPU that order decides whether cross-node p99 is
        # ~1 ms or ~10 ms above same-node. 0 in one process: nothing to let go first.
        self._lead_rounds = lead_rounds
        self.dirty: list[OutboundBuffer] = []
        self._wake = trio.Event()
        self._deferring = False
        self._nursery: trio.Nursery | None = None
        self.bytes_sent = 0
        self.blocked_writers = 0
        self.inline_sweeps = 0

    def mark_dirty(self, buf: OutboundBuffer) -> None:
        """Queue `buf` for the next flush (the caller has set `buf.dirty`)."""
        self.dirty.append(buf)
        if not self._deferring:
            self._wake.set()

    def defer_wake(self) -> None:
        """Until `end_deferral`, marking a connection dirty does not wake the flusher task.

        For a publisher that marks connections dirty in one synchronous stretch (the writer,
        delivering a committed batch): at light load it then sweeps them itself, which saves
        the flusher's task step per message. With lead rounds (the Redis bus) nothing changes:
        the sweep must wait for the publish to the other processes, as `__init__` says."""
        self._deferring = not self._lead_rounds

    def end_deferral(self) -> None:
        """Sweep what was marked dirty since `defer_wake` now, if the flusher task is idle and
        the sweep small; else wake the flusher task as `mark_dirty` would have."""
        self._deferring = False
        dirty = self.dirty
        if not dirty or self._wake.is_set():
            return  # nothing to send, or a sweep is already due and takes these too
        if self._nursery is None or len(dirty) > _INLINE_SWEEP_MAX:
            self._wake.set()  # not running (a blocked writer needs its nursery), or large
            return
        self.dirty = []
        self.inline_sweeps += 1
        self._flush_all(dirty)

    def wake(self) -> None:
        """After appending to `dirty` directly (the hub's segments): as `mark_dirty` does."""
        if not self._deferring:
            self._wake.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                task_status.started()
                while True:
                    await self._wake.wait()
                    for _ in range(self._lead_rounds):
                        await trio.lowlevel.cancel_shielded_checkpoint()
                    self._wake = trio.Event()
                    dirty, self.dirty = self.dirty, []
                    self._flush_all(dirty)
        finally:
            self._nursery = None  # closed to new writer tasks: no inline sweeps from here

    def _flush_all(self, dirty: list[OutboundBuffer]) -> None:
        """One non-blocking send of each buffer's whole backlog. Kept in one loop with no
        calls per buffer: at one message per cycle it runs once per recipient, and those
        calls were a fifth of the CPU besides the send itself."""
        sent_total = 0
        for buf in dirty:
            buf.dirty = False
            if buf.blocked:
                buf.count_backlog()
                continue
            items = buf.items
            if not items:
                continue
            if len(items) == 1:
                item = items[0]
                # A room segment is sealed by its first subscriber, then its bytes are shared.
                data = item if type(item) is bytes else item.data or item.seal()  # type: ignore[union-attr]
            else:
                data = _joined(items)
            try:
                # Only buffers with a socket are ever handed to a Flusher.
                sent = buf.sock.send(data)  # type: ignore[union-attr]
            except BlockingIOError:
                sent = 0
            except OSError:
                buf.failed()
                continue
            sent_total += sent
            if sent == len(data):
                items.clear()  # the list is the buffer's own: no new one per cycle
            else:
                self._blocked(buf, sent)
        self.bytes_sent += sent_total

    def flush_now(self, buf: OutboundBuffer) -> None:
        """Write `buf`'s backlog immediately (used when closing, so the close frame goes out)."""
        if not buf.blocked and not buf.ended:
            self._flush_all([buf])

    def _blocked(self, buf: OutboundBuffer, sent: int) -> None:
        """The kernel took only `sent` bytes of the backlog: keep the rest and hand `buf` to a
        writer task."""
        buf.keep_unsent(sent)
        self.blocked_writers += 1
        assert self._nursery is not None
        self._nursery.start_soon(self._drain, buf)

    def _write_some(self, buf: OutboundBuffer, sock: socket.socket) -> bool:
        """One non-blocking `sendmsg` of the backlog's first items as they are; False if the
        socket broke."""
        buffers, sizes = buf.next_buffers(_MAX_BUFFERS)
        try:
            sent = sock.sendmsg(buffers)
        except BlockingIOError:
            return True
        except OSError:
            buf.failed()
            return False
        self.bytes_sent += sent
        buf.wrote(sizes, sent)
        return True

    async def _drain(self, buf: OutboundBuffer) -> None:
        """Write a blocked buffer's backlog as the peer makes room; then hand it back."""
        sock = buf.sock
        assert sock is not None
        try:
            while buf.items and not buf.ended:
                try:
                    await trio.lowlevel.wait_writable(sock)
                except (trio.ClosedResourceError, OSError):
                    return
                if not self._write_some(buf, sock):
                    return
            buf.drained()
        finally:
            self.blocked_writers -= 1


def _joined(items: list[Outbound]) -> bytes:
    return b"".join([i if type(i) is bytes else i.seal() for i in items])  # type: ignore[union-attr]


def shutdown_write(sock: socket.socket) -> None:
    """Half-close after the close frame so the peer sees EOF (no RST that could drop the frame)."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_WR)
