"""Keeps every open connection of a user in step with the user's room memberships.

A membership changes on one connection (`join`/`leave`) or over HTTP, and it is the user's, not
the connection's: a user who left must stop receiving the room on all their connections, and one
who joined elsewhere starts receiving it everywhere. Each other connection is told with an
unsolicited `joined` or `left` (no `ref`). A connection is tracked once its `hello` has subscribed
it to the rooms it read; a change that lands while a hello is still reading is seen by that
connection at its next hello (the window is the hello's own database read).
"""

from __future__ import annotations

from protocol import Joined, Left
from server.fanout.hub import RoomHub
from server.transport.connection import ConnState, WsConnection
from storage import MessageStore
from storage.cache import MembershipCache


class MembershipSync:
    def __init__(self, store: MessageStore, hub: RoomHub, cache: MembershipCache) -> None:
        self._store = store
        self._hub = hub
        self._cache = cache
        # Open, authenticated connections by user: a join costs the user's connections, not all.
        self._by_user: dict[int, dict[WsConnection, None]] = {}

    def track(self, conn: WsConnection) -> None:
        """`conn`'s hello is done: it is subscribed to the user's rooms as `conn.user_id`."""
        self._by_user.setdefault(conn.user_id, {})[conn] = None

    def untrack(self, conn: WsConnection) -> None:
        conns = self._by_user.get(conn.user_id)
        if conns is None:
            return
        conns.pop(conn, None)
        if not conns:
            del self._by_user[conn.user_id]

    async def changed(
        self, room: str, user_id: int, member: bool, *, origin: WsConnection | None = None
    ) -> None:
        """The store now says `user_id` is (or is not) a member of `room`: make the cache and
        the user's open connections other than `origin` agree."""
        self._cache.set(room, user_id, member)
        for conn in list(self._by_user.get(user_id, ())):
            if conn is origin or conn.state is not ConnState.OPEN:
                continue
            if member:
                if room not in conn.rooms:
                    await self.subscribe(room, conn)
            elif room in conn.rooms:
                self._hub.unsubscribe(room, conn)
                conn.send_event(Left(room=room))

    async def subscribe(self, room: str, conn: WsConnection, ref: str | None = None) -> None:
        """Subscribe `conn` (if it is not yet) and send it `joined` with the room's last seq."""
        # Subscribe (held) before reading last_seq: a message committed meanwhile is then either
        # counted in last_seq or delivered live after `joined`, never lost in between.
        fresh = room not in conn.rooms
        if fresh:
            self._hub.subscribe(room, conn, hold=True)
        try:
            last = await self._store.last_seq(room)
            online = self._hub.online(room)
            conn.send_event(Joined(room=room, last_seq=last, online=online, ref=ref))
        finally:
            if fresh and room in conn.rooms:
                self._hub.release(room, conn, 0)
