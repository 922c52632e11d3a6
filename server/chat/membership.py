"""Keeps every open connection of a user in step with the user's room memberships.

A membership changes on one connection (`join`/`leave`) or over HTTP, and it is the user's, not
the connection's: a user who left must stop receiving the room on all their connections, and one
who joined elsewhere starts receiving it everywhere. Each other connection is told with an
unsolicited `joined` or `left` (no `ref`). A connection is tracked once its `hello` has subscribed
it to the rooms it read; a change that lands while a hello is still reading is seen by that
connection at its next hello (the window is the hello's own database read).

A change travels as a bus event (`RoomBus.publish_membership`), so it reaches the user's
connections on every process; each process's `MembershipSync` applies it to its own. Applying is
synchronous (subscribe held, or unsubscribe and `left`); the `joined` that needs the room's
last seq is sent by a task of `run`.

A kick or ban (`removed`) unsubscribes the user's connections on every process and tells each
with `removed`; a change of a room's settings or roles goes to its subscribers on every process
(`room_changed`), and each process forgets the room's cached rules (server.chat.room_rules).

A new public room is told the same way to every tracked connection but its creator's (theirs
get `joined`): one `room_created` frame, encoded and framed once, so room lists stay live.
"""

from __future__ import annotations

import logging

import trio

from protocol import CloseCode, Joined, Left, RoomCreated, encode
from server.chat.connection import ChatConnection, ConnState
from server.chat.membership_invalidation import MembershipInvalidation
from server.chat.room_rules import RoomRules
from server.chat.user_connections import UserConnections
from server.fanout.bus import NO_CONN, ConnId, RoomBus
from server.fanout.hub import RoomHub
from server.fanout.presence import OnlineUsers
from server.transport.frames import text_frame
from storage import MembershipCache, MessageStore, StorageError

_log = logging.getLogger(__name__)


class MembershipSync:
    def __init__(
        self,
        store: MessageStore,
        hub: RoomHub,
        bus: RoomBus,
        *,
        invalidation: MembershipInvalidation,
        connections: UserConnections,
        presence: OnlineUsers,
        rules: RoomRules | None = None,
        cache: MembershipCache | None = None,
    ) -> None:
        self._store = store
        self._hub = hub
        self._bus = bus
        self._invalidation = invalidation
        self._connections = connections  # a join costs the user's connections, not all
        self._presence = presence
        self._rules = rules  # the send path's cached room rules, forgotten on a room change
        self._cache = cache  # this process's L1 membership cache
        self._nursery: trio.Nursery | None = None
        self._stopped = False  # `run` has ended: the process is stopping

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own the tasks that send `joined` to a user's other connections."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            try:
                await trio.sleep_forever()
            finally:
                self._nursery = None
                self._stopped = True

    def track(self, conn: ChatConnection) -> None:
        """`conn`'s hello is done: it is subscribed to the user's rooms as `conn.user_id`."""
        self._connections.add(conn)

    def untrack(self, conn: ChatConnection) -> None:
        self._connections.discard(conn)

    async def changed(
        self, room: str, user_id: int, member: bool, *, origin: ChatConnection | None = None
    ) -> None:
        """The store now says `user_id` is (or is not) a member of `room`: make the caches and
        the user's open connections other than `origin` agree."""
        self._invalidation.changed(room, user_id, member)
        origin_id = NO_CONN if origin is None else origin.conn_id
        self._bus.publish_membership(user_id, room, member, origin_id)

    def membership_changed(self, user_id: int, room: str, member: bool, origin: ConnId) -> None:
        """From the bus: apply a change to this process's connections of the user."""
        if member and self._nursery is None:
            if self._stopped:
                return  # shutting down: the connections are closing, their next hello reads it
            raise RuntimeError("membership sync is not running: start MembershipSync.run")
        joining: list[ChatConnection] = []
        for conn in self._connections.of_user(user_id):
            if conn.conn_id == origin or conn.state is not ConnState.OPEN:
                continue
            if member:
                if room not in conn.rooms:
                    # Held from now: a message committed before `joined` reads last_seq is
                    # either counted in it or delivered after it, never lost in between.
                    self._hub.subscribe(room, conn, hold=True)
                    joining.append(conn)
            elif room in conn.rooms:
                self._hub.unsubscribe(room, conn)
                conn.send_event(Left(room=room))
        if joining and self._nursery is not None:
            self._nursery.start_soon(self._send_joined, room, joining)

    def room_created(self, room: str, creator: int) -> None:
        """From the bus: tell this process's open connections of every user but `creator`."""
        frame = text_frame(encode(RoomCreated(room=room)))
        for conn in self._connections.everyone():
            if conn.user_id != creator and conn.state is ConnState.OPEN:
                conn.enqueue(frame)

    async def removed(self, room: str, user_id: int, payload: bytes) -> None:
        """The store no longer has `user_id` in `room` (kicked or banned): the caches on every
        node drop the membership now, and each of the user's connections gets `payload`."""
        self._invalidation.changed(room, user_id, False)
        self._bus.publish_removal(user_id, room, payload)
        await trio.lowlevel.checkpoint()

    def member_removed(self, user_id: int, room: str, payload: bytes) -> None:
        """From the bus: unsubscribe this process's connections of the user from `room`, and
        tell each (`removed`, not `left`: they did not leave)."""
        if self._rules is not None:
            self._rules.forget(room)
        if self._cache is not None:
            # Here too, not only through the invalidation's own channel, which may arrive after
            # this: once told `removed`, no connection of the user can send on a stale "member".
            self._cache.set(room, user_id, False)
        frame = text_frame(payload)
        for conn in self._connections.of_user(user_id):
            if conn.state is not ConnState.OPEN:
                continue
            if room in conn.rooms:
                self._hub.unsubscribe(room, conn)
            conn.enqueue(frame)

    def room_changed(self, room: str, payload: bytes, exclude: ConnId) -> None:
        """From the bus: forget the room's cached rules; `payload` to its subscribers here."""
        if self._rules is not None:
            self._rules.forget(room)
        self._hub.publish_event(room, payload, exclude)

    def user_event(self, user_id: int, payload: bytes, origin: ConnId) -> None:
        """From the bus: `payload` (an encoded event) to this process's connections of the
        user but `origin`, framed once for all of them."""
        frame: bytes | None = None
        for conn in self._connections.of_user(user_id):
            if conn.conn_id == origin or conn.state is not ConnState.OPEN:
                continue
            if frame is None:
                frame = text_frame(payload)
            conn.enqueue(frame)

    async def _send_joined(self, room: str, conns: list[ChatConnection]) -> None:
        try:
            try:
                await self._hub.covered(room)
                last = await self._store.last_seq(room)
                online = await self._presence.online(room)
            except StorageError:
                # Subscribed but never told: close, so the client's reconnect sets it straight.
                _log.exception("joined not sent: the store failed", extra={"room": room})
                for conn in conns:
                    conn.close(CloseCode.INTERNAL, "")
                return
            for conn in conns:
                if room in conn.rooms:
                    conn.send_event(Joined(room=room, last_seq=last, online=online))
        finally:
            for conn in conns:
                if room in conn.rooms:
                    self._hub.release(room, conn, 0)

    async def subscribe(self, room: str, conn: ChatConnection, ref: str | None = None) -> None:
        """Subscribe `conn` (if it is not yet) and send it `joined` with the room's last seq."""
        # Subscribe (held) before reading last_seq: a message committed meanwhile is then either
        # counted in last_seq or delivered live after `joined`, never lost in between.
        fresh = room not in conn.rooms
        if fresh:
            self._hub.subscribe(room, conn, hold=True)
        try:
            await self._hub.covered(room)
            last = await self._store.last_seq(room)
            online = await self._presence.online(room)
            conn.send_event(Joined(room=room, last_seq=last, online=online, ref=ref))
        finally:
            if fresh and room in conn.rooms:
                self._hub.release(room, conn, 0)
