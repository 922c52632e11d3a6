"""Connections for tests that drive the hub and the flusher without a WebSocket handshake."""

from __future__ import annotations

import socket

from server.chat.connection import ChatConnection
from server.transport.connection import WsConnection
from server.transport.outbound import FlushQueue


def chat_connection(sock: socket.socket, flusher: FlushQueue, limit: int) -> ChatConnection:
    """The chat state of a connection over `sock` (non-blocking), written by `flusher`."""
    link = WsConnection(sock, "peer", flusher, limit)
    return ChatConnection(link.out, stop_reading=link.stop_reading)
