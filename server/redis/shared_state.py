"""The shared-state seams over Redis, built in one call for server/seams.py.

    shared = build_shared_state(link, node_id=..., bus=bus, store=store,
                                membership=membership_cache, tokens=tokens, config=config,
                                count_error=metrics.count_redis_error,
                                count_unconfirmed=metrics.count_logout_unconfirmed)
    await root.start(shared.run)      # control channel, L2 writes, presence, rate reconcile
    # then: presence=shared.presence, invalidation=shared.invalidation,
    # limiter=shared.limiter, token_revoked=shared.revoke, and `shared.store` where the
    # sessions and the HTTP app take the store (token lookups through L1/L2), and
    # MembershipCache(shared.member_lookup, ...) for the L1 membership cache.

The membership cache must be built over `member_lookup` (its L2) before the rest:
`build_member_lookup(link, store, ...)` first, then `build_shared_state(...)` with that cache.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import trio

from server.chat.token_index import TokenIndex
from server.config import Config
from server.fanout.bus import RoomBus
from server.redis._link import RedisFaults, RedisLinkLike, RedisPart
from server.redis.control import RedisControlChannel
from server.redis.l2_writes import L2Writes
from server.redis.membership_cache import RedisMemberLookup, RedisMembershipInvalidation
from server.redis.presence import RedisOnlineUsers
from server.redis.ratelimit import SharedRateLimiter
from server.redis.token_cache import GrantCache, RedisTokenRevocation, with_grant_cache
from storage import MembershipCache, Store

CountError = Callable[[RedisPart], None]


def build_member_lookup(
    link: RedisLinkLike, store: Store, count_error: CountError
) -> RedisMemberLookup:
    """The L2 membership lookup to build the node's `MembershipCache` over."""
    return RedisMemberLookup(link, store, RedisFaults("membership_cache", count_error))


@dataclass
class SharedState:
    presence: RedisOnlineUsers
    invalidation: RedisMembershipInvalidation
    limiter: SharedRateLimiter
    revocation: RedisTokenRevocation
    store: Store  # the store with token lookups through L1/L2
    control: RedisControlChannel
    writes: L2Writes

    async def revoke(self, token_hash: str) -> None:
        """The logout's `token_revoked`: close the token's sockets on every node, and return
        once every live node has (or the bound passed)."""
        await self.revocation.confirmed(token_hash)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            await nursery.start(self.control.run)
            await nursery.start(self.writes.run)
            await nursery.start(self.presence.run)
            await nursery.start(self.limiter.run)
            task_status.started()


def build_shared_state(
    link: RedisLinkLike,
    *,
    node_id: str,
    bus: RoomBus,
    store: Store,
    membership: MembershipCache,
    tokens: TokenIndex,
    config: Config,
    count_error: CountError,
    count_unconfirmed: Callable[[], None] = lambda: None,
) -> SharedState:
    control = RedisControlChannel(
        link,
        node_id,
        RedisFaults("control", count_error),
        node_ttl=config.bus.presence_ttl,  # a node is live as long as its users are online
        heartbeat=config.bus.presence_heartbeat,
    )
    writes = L2Writes(link, RedisFaults("control", count_error))
    grants = GrantCache(link, store, RedisFaults("token_cache", count_error))
    limits = config.limits
    return SharedState(
        presence=RedisOnlineUsers(
            bus,
            link,
            node_id,
            RedisFaults("presence", count_error),
            ttl=config.bus.presence_ttl,
            heartbeat=config.bus.presence_heartbeat,
        ),
        invalidation=RedisMembershipInvalidation(membership, link, control, writes),
        limiter=SharedRateLimiter(
            link,
            node_id,
            limits.rate_per_second,
            limits.rate_burst,
            RedisFaults("ratelimit", count_error),
        ),
        revocation=RedisTokenRevocation(
            tokens, grants, control, writes, unconfirmed=count_unconfirmed
        ),
        store=with_grant_cache(store, grants),
        control=control,
        writes=writes,
    )
