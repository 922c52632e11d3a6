"""Membership changes reach every process's membership cache through `MembershipInvalidation`.

The send path answers "is this user a member?" from an L1 cache (storage.cache.MembershipCache);
a join or leave on one process must update (or drop) that entry on every process, or a user who
left keeps sending elsewhere until the entry expires. `LocalMembershipInvalidation` is one
process: it sets the cache entry directly.
"""

from __future__ import annotations

from typing import Protocol

from storage.cache import MembershipCache


class MembershipInvalidation(Protocol):
    def changed(self, room: str, user_id: int, member: bool) -> None:
        """The store now says `user_id` is (not) a member of `room`; never awaits."""


class LocalMembershipInvalidation:
    def __init__(self, cache: MembershipCache) -> None:
        self._cache = cache

    def changed(self, room: str, user_id: int, member: bool) -> None:
        self._cache.set(room, user_id, member)
