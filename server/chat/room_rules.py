"""What the send path needs of a room's settings (issue #15): its slow mode and who is exempt.

`RoomRules` caches, per room, the slow mode and the roles read so far, so a send into a room
without slow mode costs one dictionary lookup after the first. Every change of a room's settings
or roles reaches every process as a bus event (`RoomBus.publish_room_changed`), and each process
forgets the room (`forget`); a short time-to-live bounds what a lost event can leave stale.

`SlowModeGate` admits one message per user and room every `slow_mode` seconds. This process's
gate is `LocalSlowModeGate`; several processes share `server.redis.slow_mode.RedisSlowModeGate`
(one `SET NX PX` per send in a slow-mode room: atomic across nodes, and no read of the messages,
which may live on another shard and do not yet hold the sends still queued on the writer).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol

import trio
from cachetools import TTLCache

from protocol import ErrorCode, ProtocolError
from storage import MAX_SLOW_MODE, ROLE_ADMIN, ROLE_MEMBER, ROLE_OWNER, RoomStore

RULES_TTL = 5.0  # seconds a room's cached rules are trusted without an invalidation
STAFF = frozenset({ROLE_OWNER, ROLE_ADMIN})  # exempt from slow mode; may delete any message


@dataclass(slots=True)
class _Rules:
    slow_mode: int
    roles: dict[int, str] = field(default_factory=dict)


class RoomRules:
    """room -> its slow mode, and the roles of the users who sent there; on the trio thread."""

    def __init__(self, store: RoomStore, maxsize: int = 10_000, ttl: float = RULES_TTL) -> None:
        self._store = store
        self._rooms: TTLCache[str, _Rules] = TTLCache(maxsize=maxsize, ttl=ttl)
        self._changes = 0  # bumped by every `forget`: a read that saw one in flight is not kept

    async def slow_mode_for(self, room: str, user_id: int) -> int:
        """The slow mode (seconds) that applies to `user_id` in `room`: 0 when off, and for the
        room's owner and admins."""
        rules = self._rooms.get(room)
        if rules is None:
            changes = self._changes
            found = await self._store.get_room(room)
            rules = _Rules(0 if found is None else found.slow_mode)
            if changes == self._changes:
                self._rooms[room] = rules
        if rules.slow_mode == 0:
            return 0
        role = rules.roles.get(user_id)
        if role is None:
            changes = self._changes
            role = await self._store.role_of(room, user_id) or ROLE_MEMBER
            if changes == self._changes:
                rules.roles[user_id] = role
        return 0 if role in STAFF else rules.slow_mode

    def forget(self, room: str) -> None:
        self._changes += 1
        self._rooms.pop(room, None)

    def clear(self) -> None:
        self._changes += 1
        self._rooms.clear()


class SlowModeGate(Protocol):
    async def admit(self, room: str, user_id: int, seconds: int) -> float | None:
        """None if `user_id` may send in `room` now (the next is then `seconds` away), else
        the seconds until they may."""


class LocalSlowModeGate:
    """One process's gate: when each (room, user) may next send, by trio's clock."""

    def __init__(self, maxsize: int = 100_000) -> None:
        self._next: TTLCache[tuple[str, int], float] = TTLCache(maxsize=maxsize, ttl=MAX_SLOW_MODE)

    async def admit(self, room: str, user_id: int, seconds: int) -> float | None:
        await trio.lowlevel.checkpoint()
        return self.admit_now(room, user_id, seconds)

    def admit_now(self, room: str, user_id: int, seconds: int) -> float | None:
        now = trio.current_time()
        key = (room, user_id)
        until = self._next.get(key)
        if until is not None and until > now:
            return retry_after(until - now)
        self._next[key] = now + seconds
        return None


def retry_after(seconds: float) -> float:
    """What `retry_after` says: the wait rounded up to the millisecond, never 0."""
    return max(math.ceil(seconds * 1000), 1) / 1000


async def check_slow_mode(
    rules: RoomRules, gate: SlowModeGate, room: str, user_id: int, ref: str | None
) -> None:
    """Refuse a send within the room's slow mode of the user's last one (`slow_mode`, with
    `retry_after`), or return (the send is admitted, and the next one is timed from now)."""
    seconds = await rules.slow_mode_for(room, user_id)
    if seconds and (wait := await gate.admit(room, user_id, seconds)) is not None:
        message = f"slow mode: one message every {seconds} s in {room}"
        raise ProtocolError(ErrorCode.SLOW_MODE, message, ref, retry_after=wait)
