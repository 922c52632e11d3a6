"""Hands non-WebSocket connections on the shared port to hypercorn (serving the quart-trio app).

The listener has already read the request head to route it; `ReplayStream` gives those bytes back
to hypercorn first, so hypercorn sees the connection from its first byte. Each connection's idle
and stall bounds are enforced here (`server.http.deadline`), not left to hypercorn's timer.
"""

from __future__ import annotations

import logging
import math
import socket
from collections.abc import Callable
from typing import Any

import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio.lifespan import Lifespan
from hypercorn.trio.tcp_server import TCPServer
from hypercorn.trio.worker_context import WorkerContext
from hypercorn.typing import ConnectionState
from hypercorn.utils import wrap_app

from server.http.deadline import DeadlineApp, HttpDeadline, close_expired


class ReplayStream(trio.abc.HalfCloseableStream):
    """A SocketStream that first returns bytes already read from it."""

    def __init__(
        self, stream: trio.SocketStream, prefix: bytes, on_receive: Callable[[], None]
    ) -> None:
        self._stream = stream
        self._prefix = prefix
        self._on_receive = on_receive
        self.socket = stream.socket

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        if self._prefix:
            data, self._prefix = self._prefix, b""
            await trio.lowlevel.checkpoint()
        else:
            data = bytes(await self._stream.receive_some(max_bytes))
        if data:
            self._on_receive()
        return data

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await self._stream.send_all(data)

    async def wait_send_all_might_not_block(self) -> None:
        await self._stream.wait_send_all_might_not_block()

    async def send_eof(self) -> None:
        await self._stream.send_eof()

    async def aclose(self) -> None:
        await self._stream.aclose()


class HttpBridge:
    def __init__(self, app: Any, *, idle_timeout: float = 5.0, read_timeout: float = 30.0) -> None:
        self._idle_timeout = idle_timeout
        self._read_timeout = read_timeout
        self._config = HypercornConfig()
        # hibiki's deadline bounds idle connections; hypercorn's own timer would start before it
        # reads the replayed head and could close, unanswered, a connection that was never idle.
        # It still closes idle connections at once when shutdown begins (`stop_keepalive`).
        self._config.keep_alive_timeout = math.inf
        self._config.accesslog = None
        # Hypercorn would otherwise attach its own plain-text handler and break JSON log lines.
        self._config.errorlog = logging.getLogger("hypercorn.error")
        self._app = wrap_app(app, self._config.wsgi_max_body_size, "asgi")
        self._context = WorkerContext(None)
        self._state: dict[str, Any] = {}
        self._stop = trio.Event()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Run the app's lifespan (startup before `started`, shutdown after `stop`)."""
        lifespan = Lifespan(self._app, self._config, self._state)
        async with trio.open_nursery() as nursery:
            await nursery.start(lifespan.handle_lifespan)
            await lifespan.wait_for_startup()
            task_status.started()
            await self._stop.wait()
            await lifespan.wait_for_shutdown()
            nursery.cancel_scope.cancel()

    async def stop_keepalive(self) -> None:
        """Ask idle keep-alive connections to close (start of shutdown)."""
        await self._context.terminated.set()

    def stop(self) -> None:
        self._stop.set()

    async def serve(self, sock: socket.socket, head: bytes) -> None:
        deadline = HttpDeadline(self._idle_timeout, self._read_timeout)
        if head:  # the listener read a head: not idle, whenever hypercorn gets to reading it
            deadline.received()
        stream = ReplayStream(
            trio.SocketStream(trio.socket.from_stdlib_socket(sock)), head, deadline.received
        )
        server = TCPServer(
            DeadlineApp(self._app, deadline),
            self._config,
            self._context,
            ConnectionState(self._state.copy()),
            stream,  # type: ignore[arg-type]  # it duck-types the SocketStream it needs
        )
        with deadline.scope:  # cancelled only when no request is in progress
            await server.run()
        if deadline.scope.cancelled_caught:
            await close_expired(deadline, sock, stream)
