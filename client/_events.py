"""Events the client adds to the server's `protocol` events."""

from __future__ import annotations

import msgspec

from protocol import Event


class Disconnected(msgspec.Struct, frozen=True, kw_only=True):
    """The connection was lost; the client reconnects by itself in `retry_in` seconds.

    `code` is the WebSocket close code when there was a close frame (1001 server restart, 4008
    slow consumer, ...), `None` when the connection failed or dropped without one.
    """

    code: int | None
    reason: str
    retry_in: float


ClientEvent = Event | Disconnected
"""What `ChatClient.events()` yields: every server event not consumed as the answer to a request
(`message`, `presence`, `typing`, `resync`, unmatched `error`, and `welcome` on each (re)connect),
plus `Disconnected`."""
