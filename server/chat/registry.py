"""Every open WebSocket of this process, for the reaper, shutdown and per-user lookups."""

from __future__ import annotations

from collections.abc import Iterator

import trio

from server.chat.connection import ChatConnection
from server.ops.metrics import Metrics, close_label


class ConnectionRegistry:
    def __init__(self, metrics: Metrics | None = None) -> None:
        self._all: dict[ChatConnection, None] = {}
        self._closing: dict[ChatConnection, None] = {}  # removed, close handshake still running
        self._metrics = Metrics() if metrics is None else metrics
        self.draining = False
        self.writer_flushed = trio.Event()

    def add(self, conn: ChatConnection) -> None:
        self._all[conn] = None
        self._metrics.connections_opened += 1
        if self.draining:
            conn.stop_reading()

    def stop_reading(self) -> None:
        """Shutdown, step one: no connection reads another request (their tasks then wait for
        `writer_flushed` so the acks of queued messages still go out before the 1001 close)."""
        self.draining = True
        for conn in self._all:
            conn.stop_reading()

    def remove(self, conn: ChatConnection) -> None:
        """`conn` takes no more part in the chat; its socket stays counted until `closed`."""
        if conn not in self._all:
            return
        del self._all[conn]
        self._closing[conn] = None
        reason = close_label(conn.close_code, self.draining, by_peer=conn.closed_by_peer)
        self._metrics.connections_closed[reason] += 1

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
