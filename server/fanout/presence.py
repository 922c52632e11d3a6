"""Who is online in a room: a user is, while at least one of their connections is subscribed.

Cluster-wide state later (several processes each count only their own connections), so it sits
behind `OnlineUsers`. The hub reports each subscription change; the directory decides when a
user came online or went offline and announces it through the bus, so every process's
subscribers hear it. `LocalOnlineUsers` counts this process's connections per (room, user).
"""

from __future__ import annotations

from typing import Literal, Protocol

from protocol import Presence, encode
from server.fanout.bus import ConnId, RoomBus


class OnlineUsers(Protocol):
    def arrived(self, room: str, user: str, conn: ConnId) -> None:
        """A connection `conn` of `user` subscribed to `room` (held or live)."""

    def departed(self, room: str, user: str, conn: ConnId) -> None:
        """That connection is no longer subscribed."""

    async def online(self, room: str) -> list[str]:
        """The room's online users, sorted (for `joined`)."""


class LocalOnlineUsers:
    """One process: connections per (room, user); 0 -> 1 is `online`, 1 -> 0 is `offline`."""

    def __init__(self, bus: RoomBus) -> None:
        self._bus = bus
        self._counts: dict[str, dict[str, int]] = {}

    def arrived(self, room: str, user: str, conn: ConnId) -> None:
        users = self._counts.setdefault(room, {})
        count = users.get(user, 0)
        users[user] = count + 1
        if count == 0:
            self._announce(room, user, conn, "online")

    def departed(self, room: str, user: str, conn: ConnId) -> None:
        users = self._counts[room]
        count = users[user] - 1
        if count:
            users[user] = count
            return
        del users[user]
        if not users:
            del self._counts[room]
        self._announce(room, user, conn, "offline")

    async def online(self, room: str) -> list[str]:
        return sorted(self._counts.get(room, ()))

    def _announce(
        self, room: str, user: str, conn: ConnId, status: Literal["online", "offline"]
    ) -> None:
        payload = encode(Presence(room=room, user=user, status=status))
        self._bus.publish_presence(room, payload, conn)
