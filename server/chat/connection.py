"""The chat state of one connection, with no socket: lifecycle, identity, rooms and liveness.

Rules (every state change of a connection is one of these):
    HELLO   --hello ok-->          OPEN
    HELLO   --close(code)-->       CLOSING   (bad token, hello timeout, shutdown, ...)
    OPEN    --close(code)-->       CLOSING   (stale, slow consumer, policy, shutdown, peer close)
    any     --transport failed-->  CLOSED
    CLOSING --socket closed-->     CLOSED

What it sends goes into its `OutboundBuffer` (`out`); the transport that made the buffer writes
it to a socket and stops the reader through `stop_reading`. So the chat rules (session, hub,
membership, reaper) run, and are tested, on this object with a buffer whose flusher is a fake.
"""

from __future__ import annotations

import enum
import itertools
import math
from collections.abc import Callable

import trio

from protocol import CloseCode, Event, encode
from server.transport.frames import close_frame, text_frame
from server.transport.outbound import Outbound, OutboundBuffer


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


# Connection ids (`conn_id`): unique in this process, so the bus can name a connection (the typing
# one to skip) without holding it. Never 0 (server.fanout.bus.NO_CONN).
_conn_ids = itertools.count(1)


def _nothing() -> None:
    pass


class ChatConnection:
    """One client's connection as the chat sees it; `enqueue` never awaits."""

    __slots__ = (
        "close_code",
        "close_reason",
        "closed_by_peer",
        "closing",
        "conn_id",
        "created_at",
        "last_seen",
        "on_open",
        "out",
        "ping_sent_at",
        "rooms",
        "signed_out",
        "state",
        "stop_reading",
        "token_expires_at",
        "token_hash",
        "user_id",
        "user_name",
    )

    def __init__(
        self,
        out: OutboundBuffer,
        *,
        stop_reading: Callable[[], None] = _nothing,
        on_open: Callable[[], None] | None = None,
    ) -> None:
        """`stop_reading`: cancels the transport's reader (called on close and shutdown);
        `on_open`: called on HELLO -> OPEN (the listener's pending count)."""
        self.out = out
        out.owner = self
        self.stop_reading = stop_reading
        self.on_open = on_open
        self.conn_id = next(_conn_ids)
        self.state = ConnState.HELLO
        self.closing = False  # CLOSING or CLOSED: nothing more is queued
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
        # Closed because its token was revoked or expired (4001): its sends not yet committed
        # are void (server.persist.writer.AckTarget).
        self.signed_out = False

    @property
    def pending_bytes(self) -> int:
        """Unsent backlog bytes while the peer is blocked (the outbound buffer gauges)."""
        return self.out.pending_bytes

    def enqueue(self, item: Outbound) -> None:
        """Queue one frame (or a shared room segment) for the flusher."""
        self.out.append(item)

    def send_event(self, event: Event) -> None:
        self.out.append(text_frame(encode(event)))

    async def wait_written(self) -> None:
        """Return once all that is queued is in the kernel's hands, so a producer that can wait
        goes at the peer's pace. `close` cancels the wait (it stops the reader this runs in);
        a broken socket ends it."""
        await self.out.wait_written()

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
        self.signed_out = code == CloseCode.UNAUTHENTICATED
        self.out.close_with(close_frame(code, reason), discard_backlog=discard_backlog)
        self.stop_reading()

    def overflowed(self) -> None:
        """The peer stopped reading and its backlog went over the bound."""
        self.close(CloseCode.SLOW_CONSUMER, "slow consumer", discard_backlog=True)

    def transport_failed(self) -> None:
        """The socket broke under us: nothing more can be written."""
        if self.close_code is None:
            self.close_code = 1006
            self.close_reason = "transport failed"
        self.state = ConnState.CLOSED
        self.closing = True
        self.out.end()
        self.stop_reading()

    def socket_closed(self) -> None:
        """The transport has closed the socket (the close handshake is over or timed out)."""
        if self.state is not ConnState.CLOSED:
            self.set_state(ConnState.CLOSED)
        self.out.end()
