"""One connection's outbound backlog: the bytes queued for its socket and where the writing stands.

`OutboundBuffer` owns that state; the hub appends to it, the flusher writes it, a close trims it.
Invariants (the flusher's loop and the hub's publish read the slots directly, so they are part of
the contract):

- `items` holds whole frames (bytes) and room segments of whole frames, in order. Only
  `items[0]` can be partly written, and `head_sent` says how much of it (never more than its
  size); `head_sent` is non-zero only while `blocked`.
- `blocked`: the kernel took less than the backlog; a writer task of the flusher owns the socket
  until it has written everything, then clears it and sets `write_idle`.
- While blocked, `pending_bytes` is the unsent size of `items[:counted]` (counted lazily each
  flush cycle against `limit`); it means nothing otherwise.
- `dirty`: the buffer is in the flusher's `dirty` list for the next cycle (at most once).
- `closed`: nothing more is queued (the owner is closing); `ended`: nothing more can be written
  (the socket broke or was closed).
"""

from __future__ import annotations

import socket
from collections.abc import Iterable
from typing import Protocol

import trio

from server.transport.frames import frame_bounds


class Segment:
    """Frames published to one room within one flush cycle, shared by all its subscribers.

    Every subscriber's backlog holds a reference to the same segment; the first flush that needs
    its bytes joins them once (`data`), and from then on the hub opens a new segment.
    """

    __slots__ = ("data", "frames")

    def __init__(self) -> None:
        self.frames: list[bytes] = []
        self.data: bytes | None = None

    def seal(self) -> bytes:
        data = self.data
        if data is None:
            data = self.data = b"".join(self.frames)
            self.frames = []
        return data


Outbound = bytes | Segment


class FlushQueue(Protocol):
    """What a buffer needs of the flusher (server.transport.flusher.Flusher)."""

    dirty: list[OutboundBuffer]

    def mark_dirty(self, buf: OutboundBuffer) -> None: ...

    def wake(self) -> None: ...

    def flush_now(self, buf: OutboundBuffer) -> None: ...


class BufferOwner(Protocol):
    """Told of what the writing decides about the connection (its chat state)."""

    def overflowed(self) -> None:
        """The backlog of a blocked peer went over the limit (a slow consumer)."""

    def transport_failed(self) -> None:
        """The socket broke: nothing more can be written."""


class OutboundBuffer:
    """The backlog of one connection; appending never awaits and never writes to the socket."""

    __slots__ = (
        "blocked",
        "closed",
        "counted",
        "dirty",
        "ended",
        "flusher",
        "head_sent",
        "items",
        "limit",
        "owner",
        "pending_bytes",
        "sock",
        "write_idle",
    )

    def __init__(self, flusher: FlushQueue, limit: int, sock: socket.socket | None = None) -> None:
        """`sock`: where the flusher writes (None for a buffer that only collects, in tests)."""
        self.flusher = flusher
        self.limit = limit
        self.sock = sock
        self.owner: BufferOwner | None = None
        self.items: list[Outbound] = []
        self.head_sent = 0
        self.counted = 0
        self.pending_bytes = 0
        self.blocked = False
        self.dirty = False
        self.closed = False
        self.ended = False
        # Made only when someone must wait for a drain (a close, a resume replay).
        self.write_idle: trio.Event | None = None

    def append(self, item: Outbound) -> None:
        """Queue one frame (or a shared room segment) for the flusher's next cycle."""
        if self.closed:
            return
        self.items.append(item)
        if not self.dirty:
            self.dirty = True
            self.flusher.mark_dirty(self)

    async def wait_written(self) -> None:
        """Return once all that is queued is in the kernel's hands (at once if one send takes
        it); a broken or closed socket ends the wait."""
        self.flusher.flush_now(self)
        if self.blocked and not self.ended:
            self.write_idle = trio.Event()
            await self.write_idle.wait()

    # --- what a close does

    def close_with(self, frame: bytes, *, discard_backlog: bool) -> None:
        """Queue the last frame (the close frame) after, or instead of, the backlog; queue
        nothing more after it."""
        if discard_backlog:
            self._keep_frame_on_wire()
        self.items.append(frame)
        self.closed = True
        self.flusher.flush_now(self)

    def _keep_frame_on_wire(self) -> None:
        """Drop the backlog but what is left of a frame partly written: the stream would be
        corrupt if that frame were not finished."""
        rest: bytes | None = None
        head_sent = self.head_sent
        if head_sent:
            head = self.items[0]
            if isinstance(head, Segment):  # whole frames from its first byte: find the cut one
                data = head.seal()
                start, end = frame_bounds(data, head_sent)
                rest = data[head_sent:end] if start < head_sent else None
                head_sent = 0
            else:
                rest = head  # one frame
        self.items = [] if rest is None else [rest]
        self.head_sent = 0 if rest is None else head_sent
        self.counted = len(self.items)
        self.pending_bytes = 0 if rest is None else len(rest) - head_sent

    def end(self) -> None:
        """Nothing more can be written (the socket broke or is closed): drop the backlog and
        end any wait for a drain."""
        self.closed = self.ended = True
        self.items = []
        self.head_sent = 0
        if self.write_idle is not None:
            self.write_idle.set()

    # --- what the flusher does

    def failed(self) -> None:
        """A send raised: the socket is broken."""
        self.end()
        if self.owner is not None:
            self.owner.transport_failed()

    def keep_unsent(self, sent: int) -> None:
        """The kernel took only `sent` bytes of the whole backlog: keep the rest (every item
        is sealed here) and count it; the buffer is blocked from now."""
        sizes = [len(item if type(item) is bytes else item.seal()) for item in self.items]  # type: ignore[union-attr]
        self.counted = len(sizes)
        self.pending_bytes = sum(sizes) - sent
        self.took(sizes, sent)
        self.blocked = True

    def wrote(self, sizes: list[int], sent: int) -> None:
        """A writer task's `sendmsg` of `next_buffers` took `sent` bytes."""
        self.pending_bytes -= sent
        self.took(sizes, sent)

    def next_buffers(self, limit: int) -> tuple[list[bytes | memoryview], list[int]]:
        """The first `limit` items as buffers for one `sendmsg` (the first from where the last
        send stopped) and the items' full sizes, for `took`; counts what was not yet counted."""
        buffers: list[bytes | memoryview] = [
            item if type(item) is bytes else item.seal()  # type: ignore[union-attr]
            for item in self.items[:limit]
        ]
        sizes = [len(buffer) for buffer in buffers]
        if self.counted < len(sizes):
            self.pending_bytes += sum(sizes[self.counted :])
            self.counted = len(sizes)
        if self.head_sent:
            buffers[0] = memoryview(buffers[0])[self.head_sent :]
        return buffers, sizes

    def took(self, sizes: list[int], sent: int) -> None:
        """Drop the items (of `sizes` bytes each, in order) that `sent` more bytes finished,
        and note how much of the next one is already written."""
        offset = self.head_sent + sent
        done = 0
        for size in sizes:
            if offset < size:
                break
            offset -= size
            done += 1
        del self.items[:done]
        self.head_sent = offset
        self.counted -= done

    def count_backlog(self) -> None:
        """A cycle while blocked: count what was queued since, and tell the owner if the
        backlog is over the limit."""
        items = self.items
        total = self.pending_bytes
        for item in items[self.counted :]:
            total += len(item) if type(item) is bytes else len(item.seal())  # type: ignore[union-attr]
        self.pending_bytes = total
        self.counted = len(items)
        if total > self.limit and self.owner is not None:
            self.owner.overflowed()

    def drained(self) -> None:
        """The writer task wrote everything: the flusher's single send takes over again."""
        self.blocked = False
        if self.write_idle is not None:
            self.write_idle.set()


def append_to_all(
    buffers: Iterable[OutboundBuffer], segment: Segment, dirty: list[OutboundBuffer]
) -> None:
    """Put one shared `segment` on every open buffer of `buffers` and mark each dirty into the
    flusher's `dirty` list (the caller wakes the flusher): the hub's publish, one call per
    segment and no call per recipient."""
    for buf in buffers:
        if not buf.closed:
            buf.items.append(segment)
            if not buf.dirty:
                buf.dirty = True
                dirty.append(buf)
