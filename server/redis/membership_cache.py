"""Membership `(room, user) -> member?` in Redis (L2) behind every node's L1 MembershipCache.

`RedisMemberLookup` answers an L1 miss: Redis, else the store (and fills Redis with SET NX, so a
read that raced a change never overwrites the change's value). `RedisMembershipInvalidation` is
the `MembershipInvalidation` of a node: a change sets this node's L1 at once, then (`L2Writes`)
the L2 entry, then tells every other node, which sets its L1 entry to the new value. A lost
notification is bounded by the L1 TTL; after a reconnect to Redis every L1 entry is dropped
(notifications may have been lost while away). While Redis is away lookups go to the store.
"""

from __future__ import annotations

import json

from coredis import PureToken

from server.redis._link import REDIS_DOWN, RedisFaults, RedisLinkLike, text
from server.redis.control import ControlBus
from server.redis.l2_writes import L2Writes
from storage.cache import MemberLookup, MembershipCache

L2_TTL = 60.0  # seconds a membership answer lives in Redis
_KIND = "membership"


def _key(link: RedisLinkLike, room: str, user_id: int) -> str:
    return link.key("member", str(user_id), room)


class RedisMemberLookup:
    """L2: what the L1 cache asks on a miss."""

    def __init__(
        self, link: RedisLinkLike, store: MemberLookup, faults: RedisFaults, ttl: float = L2_TTL
    ) -> None:
        self._link = link
        self._store = store
        self._faults = faults
        self._ttl_ms = round(ttl * 1000)
        self.hits = 0
        self.misses = 0

    async def is_member(self, room: str, user_id: int) -> bool:
        key = _key(self._link, room, user_id)
        try:
            cached = await self._link.client.get(key)
        except REDIS_DOWN as exc:
            self._faults.failed(exc)
            return await self._store.is_member(room, user_id)
        if cached is not None:
            self.hits += 1
            return text(cached) == "1"
        self.misses += 1
        member = await self._store.is_member(room, user_id)
        try:
            await self._link.client.set(
                key, "1" if member else "0", px=self._ttl_ms, condition=PureToken.NX
            )
        except REDIS_DOWN as exc:
            self._faults.failed(exc)
        else:
            self._faults.succeeded()
        return member


class RedisMembershipInvalidation:
    """A membership change reaches every node's L1 (and L2), in that order."""

    def __init__(
        self,
        cache: MembershipCache,
        link: RedisLinkLike,
        control: ControlBus,
        writes: L2Writes,
        ttl: float = L2_TTL,
    ) -> None:
        self._cache = cache
        self._link = link
        self._control = control
        self._writes = writes
        self._ttl_ms = round(ttl * 1000)
        control.on_control(_KIND, self._heard)
        link.on_reconnect(cache.clear)

    def changed(self, room: str, user_id: int, member: bool) -> None:
        self._cache.set(room, user_id, member)
        note = json.dumps([room, user_id, member])
        self._writes.set(
            _key(self._link, room, user_id),
            "1" if member else "0",
            self._ttl_ms,
            lambda: self._control.publish_control(_KIND, note),
        )

    def _heard(self, payload: str) -> None:
        room, user_id, member = json.loads(payload)
        self._cache.set(room, int(user_id), bool(member))
