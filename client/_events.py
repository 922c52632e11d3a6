"""Events the client adds to the server's `protocol` events."""

from __future__ import annotations

from collections.abc import Callable

import msgspec
import trio

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
(`message`, `edited`, `deleted`, `presence`, `typing`, `resync`, unmatched `error`, `welcome` on
each (re)connect, `unread` without a ref: the read cursor moved on another connection or over
HTTP, and `joined`/`left` without a ref: the user's membership changed on another connection or
over HTTP), plus `Disconnected`."""


class EventStream:
    """`async for event in client.events()`: ends when the client closes; raises the client's
    fatal error (e.g. `AuthenticationError`) if it stopped because of one."""

    def __init__(
        self,
        receive: trio.MemoryReceiveChannel[ClientEvent],
        failure: Callable[[], BaseException | None],
    ) -> None:
        self._receive = receive
        self._failure = failure

    def __aiter__(self) -> EventStream:
        return self

    async def __anext__(self) -> ClientEvent:
        try:
            return await self._receive.receive()
        except (trio.EndOfChannel, trio.ClosedResourceError):
            failure = self._failure()
            if failure is not None:
                raise failure from None
            raise StopAsyncIteration from None
