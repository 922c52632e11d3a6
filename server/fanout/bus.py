"""The room-event bus: the one path from every producer of a room event to every process's hub.

Producers publish here and nowhere else: the writer (each committed message, and the HTTP batch
import's), a session (`typing`), presence (`online`/`offline`), membership changes (for the
user's connections, wherever they are) and a new room (for every connected user). This
process's hub, and membership sync, are fed by the bus alone. `LocalBus` is one process: it
hands each event straight to them. A bus between processes (Redis pub/sub, Phase 2) implements
the same protocol.

What travels is what a remote process can use: a message as the JSON bytes of its `message`
event (encoded once, framed by each receiving hub once for all its subscribers) with its room and
seq; typing and presence as their encoded events, without seq; connections as `ConnId`s, never
objects. Publishing never awaits (a networked bus queues to a sender task of its own) and may
lose, repeat or reorder: the receiving hub restores seq order (server.fanout.sequencer).
"""

from __future__ import annotations

from typing import Protocol

ConnId = int
"""A connection's id (`ChatConnection.conn_id`), unique within its process; 0 is no connection.
A bus between processes passes an origin back only to the process it came from."""
NO_CONN: ConnId = 0


class MessageSink(Protocol):
    """Takes committed messages: the bus, or (a unit test's shortcut) a hub itself."""

    def publish_message(self, room: str, seq: int, payload: bytes) -> None:
        """`payload` is `protocol.encode(message)`; `seq` is its room's seq."""


class RoomEvents(MessageSink, Protocol):
    """What a bus feeds: this process's hub."""

    def publish_event(self, room: str, payload: bytes, exclude: ConnId) -> None:
        """An unsequenced event (typing, presence) for every subscriber but `exclude`."""


class MembershipEvents(Protocol):
    """What a bus feeds: the handler that keeps this process's connections of a user in step."""

    def membership_changed(self, user_id: int, room: str, member: bool, origin: ConnId) -> None:
        """`user_id` joined or left `room` (on connection `origin`, which already knows)."""

    def room_created(self, room: str, creator: int) -> None:
        """`room` was created by `creator`: every other user's connections here are told."""

    def user_event(self, user_id: int, payload: bytes, origin: ConnId) -> None:
        """`payload` (an encoded event, such as `unread`) is for every connection of `user_id`
        but `origin` (which was answered)."""

    def room_changed(self, room: str, payload: bytes, exclude: ConnId) -> None:
        """`room`'s settings or roles changed: forget what is cached of them, and give
        `payload` (`room_updated`/`member_updated`) to the room's subscribers but `exclude`."""

    def member_removed(self, user_id: int, room: str, payload: bytes) -> None:
        """`user_id` was kicked or banned from `room`: unsubscribe their connections here and
        give each `payload` (an encoded `removed`)."""


class RoomBus(MessageSink, Protocol):
    """Every room event goes through here; no method awaits but `covered`."""

    def publish_typing(self, room: str, payload: bytes, exclude: ConnId) -> None:
        """`payload` is an encoded `typing` event; the typing connection `exclude` skips it."""

    def publish_presence(self, room: str, payload: bytes, exclude: ConnId) -> None:
        """`payload` is an encoded `presence` event, about connection `exclude`'s user."""

    def publish_membership(self, user_id: int, room: str, member: bool, origin: ConnId) -> None:
        """The store now says `user_id` is (not) a member of `room`: tell their connections."""

    def publish_room_created(self, room: str, creator: int) -> None:
        """The store now holds public room `room`, made by user `creator`: tell every process
        (at most once, like every event here; a client that missed it lists the rooms)."""

    def publish_user_event(self, user_id: int, payload: bytes, origin: ConnId) -> None:
        """An encoded event for every connection of `user_id`, on every process, but `origin`
        (read state: their read cursor moved). Never on a room's path: no hub sees it."""

    def publish_room_changed(self, room: str, payload: bytes, exclude: ConnId) -> None:
        """A room's settings or roles changed (issue #15): to every process (each forgets its
        cached rules of the room), and `payload` to the room's subscribers but `exclude`."""

    def publish_removal(self, user_id: int, room: str, payload: bytes) -> None:
        """The store no longer has `user_id` in `room` (kicked or banned): every process
        unsubscribes their connections and gives each `payload` (`removed`), not `left`."""

    def follow(self, room: str) -> None:
        """This process has a subscriber of `room` now (a bus that routes by room subscribes)."""

    def unfollow(self, room: str) -> None:
        """This process's last subscriber of `room` left."""

    async def covered(self, room: str) -> None:
        """The one awaiting method, for a reader about to read `room` from the store after
        subscribing (resume, `joined`): returns once events of `room` from every process reach
        this one (a networked bus: its subscription is in force, or Redis is away)."""


class _Nobody:
    """Receives and drops: what a LocalBus feeds before anything is attached."""

    def publish_message(self, room: str, seq: int, payload: bytes) -> None:
        pass

    def publish_event(self, room: str, payload: bytes, exclude: ConnId) -> None:
        pass

    def membership_changed(self, user_id: int, room: str, member: bool, origin: ConnId) -> None:
        pass

    def room_created(self, room: str, creator: int) -> None:
        pass

    def user_event(self, user_id: int, payload: bytes, origin: ConnId) -> None:
        pass

    def room_changed(self, room: str, payload: bytes, exclude: ConnId) -> None:
        pass

    def member_removed(self, user_id: int, room: str, payload: bytes) -> None:
        pass


class LocalBus:
    """One process: every event goes straight to this process's hub or membership handler."""

    def __init__(self) -> None:
        self._rooms: RoomEvents = _Nobody()
        self._memberships: MembershipEvents = _Nobody()

    def attach_hub(self, hub: RoomEvents) -> None:
        self._rooms = hub

    def attach_memberships(self, handler: MembershipEvents) -> None:
        self._memberships = handler

    @property
    def status(self) -> str:
        """What /healthz and /readyz report as `bus`."""
        return "local"

    def publish_message(self, room: str, seq: int, payload: bytes) -> None:
        self._rooms.publish_message(room, seq, payload)

    def publish_typing(self, room: str, payload: bytes, exclude: ConnId) -> None:
        self._rooms.publish_event(room, payload, exclude)

    def publish_presence(self, room: str, payload: bytes, exclude: ConnId) -> None:
        self._rooms.publish_event(room, payload, exclude)

    def publish_membership(self, user_id: int, room: str, member: bool, origin: ConnId) -> None:
        self._memberships.membership_changed(user_id, room, member, origin)

    def publish_room_created(self, room: str, creator: int) -> None:
        self._memberships.room_created(room, creator)

    def publish_user_event(self, user_id: int, payload: bytes, origin: ConnId) -> None:
        self._memberships.user_event(user_id, payload, origin)

    def publish_room_changed(self, room: str, payload: bytes, exclude: ConnId) -> None:
        self._memberships.room_changed(room, payload, exclude)

    def publish_removal(self, user_id: int, room: str, payload: bytes) -> None:
        self._memberships.member_removed(user_id, room, payload)

    def follow(self, room: str) -> None:
        pass  # every event reaches this process anyway

    def unfollow(self, room: str) -> None:
        pass

    async def covered(self, room: str) -> None:
        pass  # nothing to wait for
