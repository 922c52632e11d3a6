"""What the shared-state parts need from the link to Redis, and how they survive its absence.

`server.redis.link.RedisLink` (the bus's) provides this; tests use a small one of their own. The
parts never own the connection: they issue commands on `link.client`, and when Redis is away
(`REDIS_DOWN`) each falls back to this process's own answer, counts the error in
`hibiki_redis_errors_total{part}`, logs the condition once (`LogThrottle`) and tries again later.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, Literal, Protocol

from coredis import Redis, RedisCluster
from coredis.exceptions import ClusterDownError, ClusterError, RedisClusterError, TryAgainError
from coredis.exceptions import ConnectionError as RedisConnectionError

from server.ops.log_throttle import LogThrottle

# A command that failed because Redis could not be reached or did not answer in time. Anything
# else (a script error, a wrong type) is a bug and surfaces. On a Redis Cluster, a cluster without
# a quorum or coverage (CLUSTERDOWN), a slot mid-migration (TRYAGAIN) and a slot map coredis
# cannot read are the same condition; so is coredis's bare `RedisClusterError` ("Local cluster
# layout cache is empty"), which it raises while it re-reads the map after losing a primary (it
# crashed a node's presence heartbeat in about one run in four of the shard-restart test).
REDIS_DOWN: tuple[type[BaseException], ...] = (
    RedisConnectionError,
    TimeoutError,
    ClusterDownError,
    ClusterError,
    TryAgainError,
    RedisClusterError,
)

# One of server.ops.metrics.REDIS_PARTS.
RedisPart = Literal["presence", "ratelimit", "membership_cache", "token_cache", "control"]


class RedisLinkLike(Protocol):
    """The part of `RedisLink` the shared-state classes use."""

    @property
    def client(self) -> Redis[Any] | RedisCluster[Any]:
        """A coredis client (one Redis's or a cluster's), already entered."""

    @property
    def healthy(self) -> bool:
        """False while the link knows Redis is unreachable."""

    def key(self, *parts: str) -> str:
        """`parts` joined under this deployment's namespace (`{ns}:a:b`)."""

    def on_reconnect(self, callback: Callable[[], None]) -> None:
        """Call `callback` (never awaits) each time the link is back after losing Redis."""


class RedisFaults:
    """One part's Redis failures: counted per part, logged once per episode."""

    def __init__(self, part: RedisPart, count: Callable[[RedisPart], None]) -> None:
        self._part = part
        self._count = count
        self._throttle = LogThrottle(logging.getLogger(f"server.redis.{part}"), f"redis {part}")

    def failed(self, exc: BaseException) -> None:
        self._count(self._part)
        self._throttle.occurred(type(exc).__name__, f"{exc}; using this process's own state")

    def succeeded(self) -> None:
        self._throttle.recovered()


def text(value: object) -> str:
    """A reply as str, whether the client decodes responses or not."""
    return value.decode() if isinstance(value, bytes) else str(value)
