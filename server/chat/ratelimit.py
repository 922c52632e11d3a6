"""Per-user token buckets: a burst is allowed, a sustained flood gets `rate_limited`.

The limit is the user's across all their connections, so with several processes it must be
enforced cluster-wide: sessions see only `RateLimiter`; `UserRateLimiter` is this process's.
"""

from __future__ import annotations

from typing import Protocol

from cachetools import TTLCache


class RateLimiter(Protocol):
    def allow(self, user_id: int, now: float) -> bool:
        """Spend one of the user's tokens at trio time `now`; False: over the limit."""


class TokenBucket:
    __slots__ = ("_burst", "_rate", "_tokens", "_updated")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self._rate = rate
        self._burst = burst
        self._tokens = burst
        self._updated = now

    def take(self, now: float, cost: float = 1.0) -> bool:
        """Spend `cost` tokens if there are that many; False means the caller is over the limit."""
        self._tokens = min(self._burst, self._tokens + (now - self._updated) * self._rate)
        self._updated = now
        if self._tokens >= cost:
            self._tokens -= cost
            return True
        return False


class UserRateLimiter:
    """One bucket per user across all their connections; rate 0 disables limiting."""

    def __init__(self, rate: float, burst: float, max_users: int = 100_000) -> None:
        self._rate = rate
        self._burst = burst
        # A bucket idle long enough to have refilled is equivalent to a fresh one, so expiring
        # it loses nothing.
        ttl = burst / rate + 1.0 if rate > 0 else 1.0
        self._buckets: TTLCache[int, TokenBucket] = TTLCache(maxsize=max_users, ttl=ttl)

    def allow(self, user_id: int, now: float) -> bool:
        if self._rate <= 0:
            return True
        bucket = self._buckets.get(user_id)
        if bucket is None:
            bucket = self._buckets[user_id] = TokenBucket(self._rate, self._burst, now)
        else:
            self._buckets[user_id] = bucket  # refresh its expiry
        return bucket.take(now)
