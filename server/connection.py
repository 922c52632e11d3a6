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
import socket
from typing import TYPE_CHECKING

import trio

from protocol import CloseCode, Event, encode

from .frames import close_frame, text_frame

if TYPE_CHECKING:
    from .flusher import Flusher


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


class WsConnection:
    """Outbound side of a connection; `enqueue` is the fan-out hot path and never awaits."""

    __slots__ = (
        "blocked",
        "close_code",
        "close_reason",
        "created_at",
        "dirty",
        "flusher",
        "last_seen",
        "outbound_limit",
        "partial",
        "peer",
        "pending",
        "pending_bytes",
        "ping_sent_at",
        "reader_scope",
        "rooms",
        "sock",
        "sock_closed",
        "state",
        "user_id",
        "user_name",
        "write_idle",
    )

    def __init__(
        self, sock: socket.socket, peer: str, flusher: Flusher, outbound_limit: int
    ) -> None:
        self.sock = sock
        self.peer = peer
        self.flusher = flusher
        self.outbound_limit = outbound_limit
        self.pending: list[bytes] = []
        self.pending_bytes = 0
        self.dirty = False
        self.blocked = False
        self.partial = False  # pending[0] is the unsent tail of a frame partly on the wire
        self.sock_closed = False
        self.state = ConnState.HELLO
        self.user_id = 0
        self.user_name = ""
        self.rooms: set[str] = set()
        now = trio.current_time()
        self.created_at = now
        self.last_seen = now
        self.ping_sent_at: float | None = None
        self.close_code: int | None = None
        self.close_reason = ""
        self.reader_scope = trio.CancelScope()
        self.write_idle: trio.Event | None = None  # made only when a close must wait for a drain

    def enqueue(self, frame: bytes) -> None:
        """Queue one already-framed message; a peer over its backlog bound is cut off."""
        if self.state is ConnState.CLOSING or self.state is ConnState.CLOSED:
            return
        self.pending.append(frame)
        self.pending_bytes += len(frame)
        if self.pending_bytes > self.outbound_limit:
            self.close(CloseCode.SLOW_CONSUMER, "slow consumer", discard_backlog=True)
        elif not self.dirty and not self.blocked:
            self.dirty = True
            self.flusher.mark_dirty(self)

    def send_event(self, event: Event) -> None:
        self.enqueue(text_frame(encode(event)))

    def set_state(self, new: ConnState) -> None:
        if new not in _ALLOWED[self.state]:
            raise RuntimeError(f"connection state {self.state.value} -> {new.value} is not allowed")
        self.state = new

    def close(self, code: int, reason: str, *, discard_backlog: bool = False) -> None:
        """Start closing: queue the close frame after (or instead of) the backlog, stop reading."""
        if self.state is ConnState.CLOSING or self.state is ConnState.CLOSED:
            return
        self.set_state(ConnState.CLOSING)
        self.close_code = code
        self.close_reason = reason
        if discard_backlog:
            keep = self.pending[:1] if self.partial else []
            self.pending = keep
            self.pending_bytes = sum(map(len, keep))
        self.pending.append(close_frame(code, reason))
        self.flusher.flush_now(self)
        self.reader_scope.cancel()

    def transport_failed(self) -> None:
        """The socket broke under us: nothing more can be written."""
        if self.close_code is None:
            self.close_code = CloseCode.GOING_AWAY
            self.close_reason = "transport failed"
        self.state = ConnState.CLOSED
        self.pending.clear()
        self.pending_bytes = 0
        self.reader_scope.cancel()
        if self.write_idle is not None:
            self.write_idle.set()

    def drained(self) -> None:
        """Called by the flusher when a blocked connection's backlog has been written."""
        if not self.pending and self.write_idle is not None:
            self.write_idle.set()
