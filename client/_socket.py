"""Open a trio-websocket connection whose TCP stream we own and always close.

trio-websocket (0.12) leaves the client's TCP stream open when the *server* starts the close
handshake (its `aclose` returns early once a close reason is set), so the socket lingers until
garbage collection. Owning the stream and closing it on exit fixes that.

It also never returns from the opening handshake when the TCP connection ends before the server
answers (its reader stops, the handshake event is never set): `connect_timeout` bounds that.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from urllib.parse import urlsplit

import httpx
import trio
from trio_websocket import ConnectionClosed, HandshakeError, WebSocketConnection, wrap_client_stream

# What a lost connection looks like, from DNS failure to a peer that hung up mid-frame.
_CONNECTION_ERRORS = (
    OSError,
    HandshakeError,
    ConnectionClosed,
    trio.BrokenResourceError,
    trio.ClosedResourceError,
    trio.TooSlowError,
    httpx.TransportError,
)


def is_connection_failure(exc: BaseException) -> bool:
    """Whether `exc` (or every exception in a group) means the connection failed or was lost."""
    if isinstance(exc, BaseExceptionGroup):
        return all(is_connection_failure(inner) for inner in exc.exceptions)
    return isinstance(exc, _CONNECTION_ERRORS)


def describe_failure(exc: BaseException) -> str:
    while isinstance(exc, BaseExceptionGroup) and len(exc.exceptions) == 1:
        exc = exc.exceptions[0]
    return str(exc) or type(exc).__name__


@asynccontextmanager
async def open_websocket(
    url: str,
    *,
    extra_headers: list[tuple[bytes, bytes]] | None = None,
    connect_timeout: float | None = None,
) -> AsyncIterator[WebSocketConnection]:
    """A client WebSocket to `url` (ws:// only); `trio.TooSlowError` if TCP connect plus the
    opening handshake take longer than `connect_timeout` seconds (None: no limit)."""
    parts = urlsplit(url)
    if parts.scheme != "ws" or parts.hostname is None:
        raise ValueError(f"only ws:// URLs are supported here, not {url!r}")
    port = parts.port or 80
    resource = parts.path or "/"
    if parts.query:
        resource += "?" + parts.query
    deadline = trio.current_time() + (math.inf if connect_timeout is None else connect_timeout)
    with trio.fail_at(deadline):
        stream = await trio.open_tcp_stream(parts.hostname, port)
    try:
        async with trio.open_nursery() as nursery:
            with trio.fail_at(deadline):
                ws = await wrap_client_stream(
                    nursery,
                    stream,
                    f"{parts.hostname}:{port}",
                    resource,
                    extra_headers=extra_headers,
                )
            try:
                yield ws
            finally:
                await ws.aclose()
    finally:
        await stream.aclose()
