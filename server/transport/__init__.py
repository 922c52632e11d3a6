"""The WebSocket transport: accept, handshake, frames, outbound bytes, the flusher.

It imports no other part of the server.
"""

from server.transport.connection import WsConnection
from server.transport.flusher import Flusher, shutdown_write
from server.transport.frames import ping_frame, pong_frame, text_frame
from server.transport.handshake import HandshakeError, accept_response
from server.transport.listener import Listener, reject
from server.transport.origin import origin_allowed
from server.transport.outbound import OutboundBuffer, Segment

__all__ = [
    "Flusher",
    "HandshakeError",
    "Listener",
    "OutboundBuffer",
    "Segment",
    "WsConnection",
    "accept_response",
    "origin_allowed",
    "ping_frame",
    "pong_frame",
    "reject",
    "shutdown_write",
    "text_frame",
]
