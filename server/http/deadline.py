"""The time bounds hibiki itself puts on each HTTP connection it hands to hypercorn.

hypercorn's keep-alive timer cannot be relied on under quart-trio. hypercorn finishes a response
inside the app's own `send` call: it tells the app the request is over (`http.disconnect`), then
restarts its keep-alive timer, or closes a connection it will not reuse. On that disconnect
quart-trio's receiver task cancels the request's nursery, so the rest of that `send` (the timer
restart, the close) is cancelled at its next checkpoint and an idle connection stayed open
forever (issue #9). These bounds do not depend on how hypercorn or the app schedule their work:
the bridge reports bytes received and app calls starting and ending, and runs hypercorn's side of
the connection inside the deadline's cancel scope; when it passes (never mid-request), hypercorn
is cancelled and `close_expired` closes the connection.
"""

from __future__ import annotations

import contextlib
import json
import math
import socket
from collections.abc import Callable

import trio
from hypercorn.typing import (
    AppWrapper,
    ASGIReceiveCallable,
    ASGISendCallable,
    ASGISendEvent,
    Scope,
)

from protocol import ErrorCode

_TIMEOUT_BODY = json.dumps(
    {"error": {"code": ErrorCode.TIMEOUT.value, "message": "request head was not received in time"}}
).encode()
_REQUEST_TIMEOUT = (
    b"HTTP/1.1 408 Request Timeout\r\ncontent-type: application/json\r\n"
    b"content-length: %d\r\nx-content-type-options: nosniff\r\ncache-control: no-store\r\n"
    b"connection: close\r\n\r\n%s" % (len(_TIMEOUT_BODY), _TIMEOUT_BODY)
)


class HttpDeadline:
    """The one deadline of an HTTP connection, moved by what happens on it.

    - No request in progress and nothing received since: `idle_timeout` (then closed quietly).
    - The next request's head has started arriving: `read_timeout` from its first byte (then
      answered 408 and closed). Bytes that arrive once the last response is on its way count as
      the next head: a client may send it as soon as it has read that response.
    - A request in progress (an app call running): none here; the app bounds the body itself.
    """

    def __init__(self, idle_timeout: float, read_timeout: float) -> None:
        self._idle_timeout = idle_timeout
        self._read_timeout = read_timeout
        self._requests = 0
        self._responded = False  # the last response of the requests in progress is being sent
        self._head_since: float | None = None  # first byte of the next request's head
        # Cancelled when the deadline passes: the bridge runs hypercorn's connection inside it.
        self.scope = trio.CancelScope(deadline=trio.current_time() + idle_timeout)

    def received(self) -> None:
        """Bytes arrived from the client."""
        if self._head_since is None and (self._requests == 0 or self._responded):
            self._head_since = trio.current_time()
            if self._requests == 0:
                self.scope.deadline = self._head_since + self._read_timeout

    def request_started(self) -> None:
        self._requests += 1
        self._responded = False
        self._head_since = None
        self.scope.deadline = math.inf

    def response_ending(self) -> None:
        """The last bytes of a response are about to be sent."""
        self._responded = True

    def request_ended(self) -> None:
        self._requests -= 1
        if self._requests == 0:
            self._responded = False
            if self._head_since is None:
                self.scope.deadline = trio.current_time() + self._idle_timeout
            else:
                self.scope.deadline = self._head_since + self._read_timeout

    @property
    def head_started(self) -> bool:
        """Whether the next request's head has started arriving (a stall of it deserves a 408)."""
        return self._head_since is not None


class DeadlineApp:
    """An ASGI app wrapper for one connection: each call is a request in progress."""

    def __init__(self, app: AppWrapper, deadline: HttpDeadline) -> None:
        self._app = app
        self._deadline = deadline

    async def __call__(
        self,
        scope: Scope,
        receive: ASGIReceiveCallable,
        send: ASGISendCallable,
        sync_spawn: Callable[..., object],
        call_soon: Callable[..., object],
    ) -> None:
        async def send_noting_the_end(message: ASGISendEvent) -> None:
            if message["type"] == "http.response.body" and not message.get("more_body", False):
                self._deadline.response_ending()
            await send(message)

        self._deadline.request_started()
        try:
            await self._app(scope, receive, send_noting_the_end, sync_spawn, call_soon)
        finally:
            self._deadline.request_ended()


async def close_expired(
    deadline: HttpDeadline, sock: socket.socket, stream: trio.abc.Stream
) -> None:
    """Close a connection whose deadline passed, with a 408 if a request head stalled.

    No response is in progress then, so the 408 is one best-effort non-blocking send.
    """
    if deadline.head_started:
        with contextlib.suppress(OSError):
            sock.send(_REQUEST_TIMEOUT)
    await stream.aclose()
