"""The server side of the WebSocket opening handshake (RFC 6455 §4.2), on an h11-parsed request.

Done here rather than with wsproto's `WSConnection` so that, once open, a connection keeps only
wsproto's small frame-level `Connection` and not the handshake's h11 state (memory per idle
connection is a target). No extensions or subprotocols are offered.
"""

from __future__ import annotations

import h11
from wsproto.utilities import generate_accept_token


class HandshakeError(Exception):
    """The upgrade request is not a valid WebSocket handshake: answer `status`, then close."""

    def __init__(self, status: int, reason: str) -> None:
        super().__init__(reason)
        self.status = status
        self.reason = reason


def accept_response(request: h11.Request) -> bytes:
    """The `101 Switching Protocols` response bytes for a valid upgrade request."""
    headers = {name: value for name, value in request.headers}
    connection = {t.strip().lower() for t in headers.get(b"connection", b"").split(b",")}
    if b"upgrade" not in connection:
        raise HandshakeError(400, "missing Connection: Upgrade")
    if headers.get(b"upgrade", b"").lower() != b"websocket":
        raise HandshakeError(400, "missing Upgrade: websocket")
    if headers.get(b"sec-websocket-version") != b"13":
        raise HandshakeError(426, "Sec-WebSocket-Version must be 13")
    key = headers.get(b"sec-websocket-key")
    if not key:
        raise HandshakeError(400, "missing Sec-WebSocket-Key")
    return (
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Accept: " + generate_accept_token(key) + b"\r\n\r\n"
    )
