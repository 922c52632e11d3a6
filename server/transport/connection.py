"""The transport side of one accepted WebSocket: its socket, the cancel scope its reader runs in,
and the outbound buffer the flusher writes to that socket.

The chat state of the connection (lifecycle, identity, rooms, liveness) is socket-free and lives
in server.chat.connection; it owns this connection's `out` buffer and stops the reader through
`stop_reading`.
"""

from __future__ import annotations

import socket

import trio

from server.transport.outbound import FlushQueue, OutboundBuffer


class WsConnection:
    __slots__ = ("out", "peer", "reader_scope", "sock")

    def __init__(
        self, sock: socket.socket, peer: str, flusher: FlushQueue, outbound_limit: int
    ) -> None:
        self.sock = sock
        self.peer = peer
        self.out = OutboundBuffer(flusher, outbound_limit, sock)
        self.reader_scope = trio.CancelScope()

    def stop_reading(self) -> None:
        """Cancel the reader (a close, shutdown): the request being handled is not finished."""
        self.reader_scope.cancel()

    def socket_closed(self) -> None:
        """The socket is closed: nothing more can be written to it."""
        self.out.end()
        trio.lowlevel.notify_closing(self.sock)
        self.sock.close()
