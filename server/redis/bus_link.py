"""What the bus needs from its link to Redis, and the link a Redis URL names.

`RedisLink` (one Redis, `redis://`) and `RedisClusterLink` (a cluster, `redis+cluster://`)
both provide `BusLink`; `open_link(url, ...)` picks by the URL's scheme.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

import trio
from coredis import Redis, RedisCluster

from server.redis._cluster_map import is_cluster_url
from server.redis.cluster_link import RedisClusterLink
from server.redis.link import (
    PING_INTERVAL,
    PING_TIMEOUT,
    MessageHandler,
    RedisLink,
    SubscribedHandler,
)


class BusLink(Protocol):
    """Sharded pub/sub plus a coredis client for the shared state (server.redis.link)."""

    @property
    def client(self) -> Redis[Any] | RedisCluster[Any]: ...

    @property
    def healthy(self) -> bool: ...

    @property
    def reconnects(self) -> int: ...

    @property
    def timeouts(self) -> int:
        """Keepalive PINGs left unanswered (each ended a session)."""

    def key(self, *parts: str | int, tag: str | None = None) -> str: ...

    def on_reconnect(self, callback: Callable[[], None]) -> None: ...

    def on_message(self, handler: MessageHandler, subscribed: SubscribedHandler) -> None: ...

    def subscribe(self, channel: bytes) -> None: ...

    def unsubscribe(self, channel: bytes) -> None: ...

    async def publish(self, messages: list[tuple[bytes, bytes]]) -> None: ...

    async def run(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None: ...


def open_link(
    url: str,
    *,
    namespace: str,
    connect_timeout: float,
    ping_interval: float = PING_INTERVAL,
    ping_timeout: float = PING_TIMEOUT,
) -> BusLink:
    """The link `url` names: a cluster's for `redis+cluster://`, else one Redis's.

    Both links PING each of their connections every `ping_interval` and end their session when
    one is silent for `ping_timeout`."""
    if is_cluster_url(url):
        return RedisClusterLink(
            url,
            namespace=namespace,
            connect_timeout=connect_timeout,
            ping_interval=ping_interval,
            ping_timeout=ping_timeout,
        )
    return RedisLink(
        url,
        namespace=namespace,
        connect_timeout=connect_timeout,
        ping_interval=ping_interval,
        ping_timeout=ping_timeout,
    )
