"""Slow mode across nodes (issue #15): one `SET key NX PX` per send in a slow-mode room.

The key `{ns}:slow:{user}:{room}` lives as long as the user must wait: the SET that creates it
admits the send, and one that finds it answers with the key's remaining time (`PTTL`). Atomic
in Redis, so two nodes taking the same user's sends at once admit one. While Redis is away each
node's own gate (`LocalSlowModeGate`) answers, as the rate limit does: a user sending through
n nodes may then get n messages per period.
"""

from __future__ import annotations

from coredis import PureToken

from server.chat.room_rules import LocalSlowModeGate, retry_after
from server.redis._link import REDIS_DOWN, RedisFaults, RedisLinkLike


class RedisSlowModeGate:
    """A `SlowModeGate` shared by every node of the Redis."""

    def __init__(self, link: RedisLinkLike, faults: RedisFaults) -> None:
        self._link = link
        self._faults = faults
        self._local = LocalSlowModeGate()

    async def admit(self, room: str, user_id: int, seconds: int) -> float | None:
        if not self._link.healthy:
            return self._local.admit_now(room, user_id, seconds)
        key = self._link.key("slow", str(user_id), room)
        client = self._link.client
        try:
            if await client.set(key, b"1", px=seconds * 1000, condition=PureToken.NX):
                left_ms = 0
            else:
                left_ms = await client.pttl(key)
                if left_ms <= 0:  # it expired between the two commands: the wait is over
                    await client.set(key, b"1", px=seconds * 1000)
        except REDIS_DOWN as exc:
            self._faults.failed(exc)
            return self._local.admit_now(room, user_id, seconds)
        self._faults.succeeded()
        return None if left_ms <= 0 else retry_after(left_ms / 1000)
