"""One accepted WebSocket: its socket, outbound backlog and lifecycle state.

Rules (every state change of a connection is one of these):
    HELLO   --hello ok-->          OPEN
    HELLO   --close(code)-->       CLOSING   (bad token, hello timeout, shutdown, ...)
    OPEN    --close(code)-->       CLOSING   (stale, slow consumer, policy, shutdown, peer close)
    any     --transport failed-->  CLOSED
    CLOSING --socket closed-->     CLOSED
"""

from __future__ import annotations

import enum
import itertools
import math
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

from protocol import Event, encode
from server.transport.frames import close_frame, frame_bounds, text_frame

if TYPE_CHECKING:
    from server.transport.flusher import Flusher


class ConnState(enum.Enum):
    HELLO = "hello"
    OPEN = "open"
    CLOSING = "closing"
    CLOSED = "closed"


_ALLOWED = {
    ConnState.HELLO: {ConnState.OPEN, ConnState.CLOSING, ConnState.CLOSED},
    ConnState.OPEN: {ConnState.CLOSING, ConnState.CLOSED},
    ConnState.CLOSING: {ConnState.CLOSED},
    ConnState.CLOSED: set(),
}


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


# Connection ids (`conn_id`): unique in this process, so the bus can name a connection (the typing
# one to skip) without holding it. Never 0 (server.fanout.bus.NO_CONN).
_conn_ids = itertools.count(1)


class WsConnection:
    """Outbound side of a connection; `enqueue` never awaits and never writes to the socket."""

    __slots__ = (
        "blocked",
        "close_code",
        "close_reason",
        "closed_by_peer",
        "closing",
        "conn_id",
        "counted",
        "created_at",
        "dirty",
        "flusher",
        "head_sent",
        "last_seen",
        "on_open",
        "outbound_limit",
        "peer",
        "pending",
        "pending_bytes",
        "ping_sent_at",
        "reader_scope",
        "rooms",
        "sock",
        "sock_closed",
        "state",
        "token_expires_at",
        "token_hash",
        "user_id",
        "user_name",
        "write_idle",
    )

    def __init__(
        self,
        sock: socket.socket,
        peer: str,
        flusher: Flusher,
        outbound_limit: int,
        *,
        on_open: Callable[[], None] | None = None,
    ) -> None:
        self.sock = sock
        self.peer = peer
        self.conn_id = next(_conn_ids)
        self.flusher = flusher
        self.outbound_limit = outbound_limit
        self.pending: list[Outbound] = []
        self.pending_bytes = 0  # unsent, of pending[:counted]; maintained only while blocked
        self.counted = 0
        self.head_sent = 0  # bytes of pending[0] already written (only ever while blocked)
        self.dirty = False
        self.blocked = False
        self.closing = False  # CLOSING or CLOSED: nothing more is queued
        self.sock_closed = False
        self.state = ConnState.HELLO
        self.user_id = 0
        self.user_name = ""
        self.token_hash = ""  # of the token in hello (see server.chat.token_index)
        self.token_expires_at = math.inf  # trio clock; the reaper closes the connection then
        self.rooms: set[str] = set()
        now = trio.current_time()
        self.created_at = now
        self.last_seen = now
        self.ping_sent_at: float | None = None
        self.close_code: int | None = None
        self.close_reason = ""
        self.closed_by_peer = False  # the peer started the close (its code is its own)
        self.reader_scope = trio.CancelScope()
        # Made only when someone must wait for a drain (a close, a resume replay).
        self.write_idle: trio.Event | None = None
        self.on_open = on_open  # called on HELLO -> OPEN (the listener's pending count)

    def enqueue(self, item: Outbound) -> None:
        """Queue one frame (or a shared room segment) for the flusher."""
        if self.closing:
            return
        self.pending.append(item)
        if not self.dirty:
            self.dirty = True
            self.flusher.mark_dirty(self)

    async def wait_written(self) -> None:
        """Return once all that is queued is in the kernel's hands (at once if one send takes
        it), so a producer that can wait goes at the peer's pace. `close` cancels the wait
        (it cancels the reader scope this runs in); a broken socket ends it."""
        self.flusher.flush_now(self)
        if self.blocked and self.state is not ConnState.CLOSED:
            self.write_idle = trio.Event()
            await self.write_idle.wait()

    def send_event(self, event: Event) -> None:
        self.enqueue(text_frame(encode(event)))

    def set_state(self, new: ConnState) -> None:
        if new not in _ALLOWED[self.state]:
            raise RuntimeError(f"connection state {self.state.value} -> {new.value} is not allowed")
        self.state = new
        self.closing = new is ConnState.CLOSING or new is ConnState.CLOSED
        if new is ConnState.OPEN and self.on_open is not None:
            on_open, self.on_open = self.on_open, None
            on_open()

    def close(
        self, code: int, reason: str, *, discard_backlog: bool = False, by_peer: bool = False
    ) -> None:
        """Start closing: queue the close frame after (or instead of) the backlog, stop reading.

        `by_peer`: answering the peer's close (or EOF), so `code` says nothing about our side.
        """
        if self.closing:
            return
        self.set_state(ConnState.CLOSING)
        self.close_code = code
        self.close_reason = reason
        self.closed_by_peer = by_peer
        if discard_backlog:
            self._keep_frame_on_wire()
        self.pending.append(close_frame(code, reason))
        self.flusher.flush_now(self)
        self.reader_scope.cancel()

    def _keep_frame_on_wire(self) -> None:
        """Drop the backlog but what is left of a frame partly written: the stream would be
        corrupt if that frame were not finished."""
        rest: bytes | None = None
        head_sent = self.head_sent
        if head_sent:
            head = self.pending[0]
            if isinstance(head, Segment):  # whole frames from its first byte: find the cut one
                data = head.seal()
                start, end = frame_bounds(data, head_sent)
                rest = data[head_sent:end] if start < head_sent else None
                head_sent = 0
            else:
                rest = head  # one frame
        self.pending = [] if rest is None else [rest]
        self.head_sent = 0 if rest is None else head_sent
        self.counted = len(self.pending)
        self.pending_bytes = 0 if rest is None else len(rest) - head_sent

    def transport_failed(self) -> None:
        """The socket broke under us: nothing more can be written."""
        if self.close_code is None:
            self.close_code = 1006
            self.close_reason = "transport failed"
        self.state = ConnState.CLOSED
        self.closing = True
        self.pending = []
        self.head_sent = 0
        self.reader_scope.cancel()
        if self.write_idle is not None:
            self.write_idle.set()

    def drained(self) -> None:
        """Called by the flusher when a blocked connection's backlog has been written."""
        if self.write_idle is not None:
            self.write_idle.set()
