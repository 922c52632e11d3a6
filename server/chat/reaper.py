"""Closes connections that never say hello, outlive their token, or stop answering pings.

Each check runs once per tick (at most 1 s), which bounds how late it acts: an expired token's
connections are closed (4001) within one tick of its expiry.
"""

from __future__ import annotations

import trio

from protocol import CloseCode
from server.chat.connection import ChatConnection, ConnState
from server.chat.registry import ConnectionRegistry
from server.config import Config
from server.transport.frames import ping_frame

_PING = ping_frame(b"hb")


class Reaper:
    def __init__(self, registry: ConnectionRegistry, config: Config) -> None:
        self._registry = registry
        self._config = config

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        # Tick often enough that a hello timeout is enforced within ~25% of its value.
        tick = min(
            self._config.timeouts.heartbeat_interval, self._config.timeouts.hello_timeout / 4, 1.0
        )
        task_status.started()
        next_ping = trio.current_time() + self._config.timeouts.heartbeat_interval
        while True:
            await trio.sleep(tick)
            now = trio.current_time()
            ping = now >= next_ping
            if ping:
                next_ping = now + self._config.timeouts.heartbeat_interval
            for conn in self._registry:
                self.check(conn, now, ping)

    def check(self, conn: ChatConnection, now: float, ping: bool) -> None:
        config = self._config
        if conn.state is ConnState.HELLO:
            if now - conn.created_at > config.timeouts.hello_timeout:
                conn.close(CloseCode.UNAUTHENTICATED, "hello timeout")
            return
        if conn.state is not ConnState.OPEN:
            return
        if now >= conn.token_expires_at:
            conn.close(CloseCode.UNAUTHENTICATED, "token expired")
            return
        if conn.ping_sent_at is not None:
            if now - conn.ping_sent_at > config.timeouts.heartbeat_deadline:
                conn.close(CloseCode.STALE, "heartbeat timeout", discard_backlog=True)
        elif ping:
            conn.ping_sent_at = now
            conn.enqueue(_PING)
