"""Every open WebSocket of this process, for the reaper, the metrics and per-user lookups."""

from __future__ import annotations

from collections.abc import Callable, Iterator

from server.chat.connection import ChatConnection
from server.ops.metrics import Metrics, close_label
from server.shutdown import Drain


class ConnectionRegistry:
    def __init__(self, metrics: Metrics | None = None, drain: Drain | None = None) -> None:
        self._all: dict[ChatConnection, None] = {}
        self._closing: dict[ChatConnection, None] = {}  # removed, close handshake still running
        self._metrics = Metrics() if metrics is None else metrics
        self._drain = Drain(0.0) if drain is None else drain  # closes while draining: shutdown
        # Told of each connection `remove`d (server/chat/activity.py: a user's last_seen).
        self.on_removed: Callable[[ChatConnection], None] = lambda conn: None

    def add(self, conn: ChatConnection) -> None:
        self._all[conn] = None
        self._metrics.connections_opened += 1

    def remove(self, conn: ChatConnection) -> None:
        """`conn` takes no more part in the chat; its socket stays counted until `closed`."""
        if conn not in self._all:
            return
        del self._all[conn]
        self._closing[conn] = None
        reason = close_label(conn.close_code, self._drain.draining, by_peer=conn.closed_by_peer)
        self._metrics.connections_closed[reason] += 1
        self.on_removed(conn)

    def closed(self, conn: ChatConnection) -> None:
        """`conn`'s close handshake is over and its socket closed."""
        self._closing.pop(conn, None)

    def open_sockets(self) -> int:
        """Connections whose socket is open, those still closing included (the gauge)."""
        return len(self._all) + len(self._closing)

    def __len__(self) -> int:
        return len(self._all)

    def __iter__(self) -> Iterator[ChatConnection]:
        return iter(list(self._all))
