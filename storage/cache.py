"""L1 caches in front of the store. cachetools is not thread-safe: touch these only from the
trio thread, never from a `to_thread` worker."""

from __future__ import annotations

from typing import Protocol

from cachetools import TTLCache


class MemberLookup(Protocol):
    """Where a miss is answered: the store (a `RoomStore`), or an L2 cache in front of it."""

    async def is_member(self, room: str, user_id: int) -> bool: ...


class MembershipCache:
    """(room, user) -> member?; answers the send path without a database read.

    A read that was in flight while the membership changed (`set`) may hold the old answer: it
    is returned to its caller (who then acted before the change), never cached, so a user who
    left cannot go on sending on a stale "member" until the entry expires.
    """

    def __init__(self, store: MemberLookup, maxsize: int, ttl: float) -> None:
        self._store = store
        self._cache: TTLCache[tuple[str, int], bool] = TTLCache(maxsize=maxsize, ttl=ttl)
        self._reading: dict[tuple[str, int], object] = {}  # key -> the latest read's token
        self.hits = 0
        self.misses = 0

    async def is_member(self, room: str, user_id: int) -> bool:
        key = (room, user_id)
        cached = self._cache.get(key)
        if cached is not None:
            self.hits += 1
            return cached
        self.misses += 1
        token = self._reading[key] = object()
        try:
            member = await self._store.is_member(room, user_id)
        finally:
            current = self._reading.get(key)
            if current is token:
                del self._reading[key]
        if current is token:  # no change and no newer read while we waited
            self._cache[key] = member
        return member

    def set(self, room: str, user_id: int, member: bool) -> None:
        self._reading.pop((room, user_id), None)
        self._cache[(room, user_id)] = member

    def clear(self) -> None:
        """Forget every entry (invalidations may have been lost): reads go to `store` again."""
        self._reading.clear()
        self._cache.clear()
