"""The scale-out seams' implementations for one process, chosen from `[bus]`: this process's own
(`LocalBus`, in-process presence, rate limits and membership cache) or Redis's, shared by every
process and host serving the chat (`Cluster` runs the link, the bus and the shared state).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import trio

from server.chat.membership_invalidation import LocalMembershipInvalidation, MembershipInvalidation
from server.chat.ratelimit import RateLimiter, UserRateLimiter
from server.chat.room_rules import LocalSlowModeGate, SlowModeGate
from server.chat.token_index import TokenIndex
from server.config import Config
from server.fanout.bus import LocalBus
from server.fanout.presence import LocalOnlineUsers, OnlineUsers
from server.ops.metrics import Metrics
from server.redis._link import RedisFaults
from server.redis.bus import RedisBus
from server.redis.bus_link import BusLink, open_link
from server.redis.shared_state import SharedState, build_member_lookup, build_shared_state
from server.redis.slow_mode import RedisSlowModeGate
from storage import MembershipCache, Store


@dataclass(frozen=True)
class Cluster:
    """Several processes and hosts as one chat: the link to Redis, the bus over it, and the
    shared state (presence, rate limits, caches, revocation) in it."""

    link: BusLink
    bus: RedisBus
    shared: SharedState

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        # The link outlives the parts over it: their last commands as they stop (the control
        # channel leaving the live set) still find it open; it closes when they are done.
        link_scope = trio.CancelScope(shield=True)
        async with trio.open_nursery() as outer:
            await outer.start(self._run_link, link_scope)
            try:
                async with trio.open_nursery() as nursery:
                    await nursery.start(self.bus.run)
                    await nursery.start(self.shared.run)
                    task_status.started()
            finally:
                link_scope.cancel()

    async def _run_link(
        self, scope: trio.CancelScope, *, task_status: trio.TaskStatus[None]
    ) -> None:
        with scope:
            await self.link.run(task_status=task_status)


@dataclass(frozen=True)
class Seams:
    """The implementations chosen for the scale-out seams: in-process, or Redis."""

    bus: LocalBus | RedisBus
    presence: OnlineUsers
    membership: MembershipCache
    invalidation: MembershipInvalidation
    limiter: RateLimiter
    store: Store  # what sessions and HTTP read accounts through (Redis: token lookups cached)
    revoke: Callable[[str], Awaitable[None]]
    cluster: Cluster | None
    slow_gate: SlowModeGate = field(default_factory=LocalSlowModeGate)  # rooms' slow mode


def choose_seams(config: Config, store: Store, tokens: TokenIndex, metrics: Metrics) -> Seams:
    """Every room event goes through the bus, and this process's hub is fed by it alone; with
    `[bus] redis_url` the bus and the shared state are Redis's, else this process's."""
    cache_size, cache_ttl = config.chat.membership_cache_size, config.chat.membership_cache_ttl
    if not config.bus.redis_url:
        bus = LocalBus()
        membership = MembershipCache(store, cache_size, cache_ttl)
        limiter = UserRateLimiter(config.limits.rate_per_second, config.limits.rate_burst)
        invalidation = LocalMembershipInvalidation(membership)
        return Seams(
            bus,
            LocalOnlineUsers(bus),
            membership,
            invalidation,
            limiter,
            store,
            _revoking(tokens),
            None,
        )
    link = open_link(
        config.bus.redis_url,
        namespace=config.bus.bus_namespace,
        connect_timeout=config.bus.redis_connect_timeout,
        ping_interval=config.bus.redis_ping_interval,
        ping_timeout=config.bus.redis_ping_timeout,
    )
    redis_bus = RedisBus(
        link,
        store,
        partitions=config.bus.bus_partitions,
        tail_interval=config.bus.bus_tail_check_interval,
        cover_timeout=config.bus.redis_connect_timeout,
    )
    metrics.watch_bus(redis_bus)
    lookup = build_member_lookup(link, store, metrics.count_redis_error)
    membership = MembershipCache(lookup, cache_size, cache_ttl)
    shared = build_shared_state(
        link,
        node_id=config.server.server_id,
        bus=redis_bus,
        store=store,
        membership=membership,
        tokens=tokens,
        config=config,
        count_error=metrics.count_redis_error,
        count_unconfirmed=metrics.count_logout_unconfirmed,
    )
    return Seams(
        redis_bus,
        shared.presence,
        membership,
        shared.invalidation,
        shared.limiter,
        shared.store,
        shared.revoke,
        Cluster(link, redis_bus, shared),
        RedisSlowModeGate(link, RedisFaults("ratelimit", metrics.count_redis_error)),
    )


def _revoking(tokens: TokenIndex) -> Callable[[str], Awaitable[None]]:
    """One process: closing this process's sockets of the token is the whole revocation."""

    async def revoke(token_hash: str) -> None:
        tokens.revoke(token_hash)

    return revoke
