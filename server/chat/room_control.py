"""Rooms with roles and settings (issue #15): who may do what, done once for WebSocket and HTTP.

Rules (docs/protocol.md, "Rooms, roles and settings"):
- a private room is, to a non-member, exactly a room that does not exist (`no_such_room`);
- `room_update` and `invite`/`kick`/`ban`/`unban` take an admin or the owner (`forbidden`);
  a member of a public room may also invite to it;
- an admin cannot kick or ban the owner or another admin (the owner can), nobody themselves;
- `transfer` and `set_role` take the owner; the new owner must be a member, the old one
  becomes an admin; the owner cannot leave before transferring (`owner_must_transfer`).

Each change is committed to the store, then told: to the room's members on every node
(`room_updated`/`member_updated`, through `RoomBus.publish_room_changed`, which also drops every
node's cached rules of the room), a removed user's connections get `removed`, an invited user's
`joined`. The caller answers the request with the event returned (with its `ref`).
"""

from __future__ import annotations

from dataclasses import dataclass

import msgspec

from protocol import ErrorCode, MemberUpdated, ProtocolError, Removed, RoomUpdated, encode
from server.chat.membership import MembershipSync
from server.chat.room_rules import STAFF
from server.fanout.bus import NO_CONN, ConnId, RoomBus
from storage import (
    PRIVATE,
    ROLE_ADMIN,
    ROLE_MEMBER,
    ROLE_OWNER,
    Banned,
    NotFound,
    Room,
    Store,
    User,
)


@dataclass(frozen=True, slots=True)
class Actor:
    """Who asks: the user, and the connection that is answered directly (HTTP: none)."""

    user: User
    conn: ConnId = NO_CONN


def no_such_room(room: str) -> ProtocolError:
    return ProtocolError(ErrorCode.NO_SUCH_ROOM, f"no room {room}")


def room_updated(room: Room, by: str | None = None) -> RoomUpdated:
    return RoomUpdated(
        room=room.name,
        visibility=room.visibility,
        topic=room.topic,
        slow_mode=room.slow_mode,
        owner=room.owner,
        by=by,
    )


class RoomControl:
    def __init__(self, store: Store, bus: RoomBus, memberships: MembershipSync) -> None:
        self._store = store
        self._bus = bus
        self._memberships = memberships

    async def visible(self, room: str, user_id: int) -> tuple[Room, str | None]:
        return await visible_room(self._store, room, user_id)

    async def _role(self, actor: Actor, room: str, needed: frozenset[str]) -> tuple[Room, str]:
        found, role = await self.visible(room, actor.user.id)
        if role is None:
            raise ProtocolError(ErrorCode.NOT_MEMBER, f"not a member of {room}")
        if role not in needed:
            raise ProtocolError(ErrorCode.FORBIDDEN, f"your role in {room} ({role}) is too low")
        return found, role

    async def _target(self, name: str) -> User:
        profile = await self._store.profile(name)
        if profile is None:
            raise ProtocolError(ErrorCode.NO_SUCH_USER, f"no user {name}")
        return profile.user

    def _tell(self, event: RoomUpdated | MemberUpdated, actor: Actor) -> None:
        self._bus.publish_room_changed(event.room, encode(event), actor.conn)

    async def update(
        self, actor: Actor, room: str, topic: str | None, slow_mode: int | None
    ) -> RoomUpdated:
        await self._role(actor, room, STAFF)
        updated = await self._store.update_room(room, topic, slow_mode)
        if updated is None:
            raise no_such_room(room)
        event = room_updated(updated, actor.user.name)
        self._tell(event, actor)
        return event

    async def invite(self, actor: Actor, room: str, name: str) -> MemberUpdated:
        found, role = await self.visible(room, actor.user.id)
        if role is None:
            raise ProtocolError(ErrorCode.NOT_MEMBER, f"not a member of {room}")
        if found.visibility == PRIVATE and role not in STAFF:
            raise ProtocolError(ErrorCode.FORBIDDEN, f"only admins invite to {room}")
        target = await self._target(name)
        try:
            fresh = await self._store.add_member(room, target.id)
        except Banned:
            raise ProtocolError(ErrorCode.BANNED, f"{name} is banned from {room}") from None
        except NotFound:
            raise no_such_room(room) from None
        now = await self._store.role_of(room, target.id)
        event = MemberUpdated(room=room, user=name, change="invited", by=actor.user.name, role=now)
        if fresh:
            await self._memberships.changed(room, target.id, True)  # `joined` on every node
            self._tell(event, actor)
        return event

    async def remove(self, actor: Actor, room: str, name: str, banned: bool) -> MemberUpdated:
        """Kick (`banned` False) or ban `name` from `room`."""
        _, role = await self._role(actor, room, STAFF)
        target = await self._target(name)
        their = await self._store.role_of(room, target.id)
        if target.id == actor.user.id:
            raise ProtocolError(ErrorCode.FORBIDDEN, "you cannot remove yourself: leave instead")
        if their == ROLE_OWNER or (their == ROLE_ADMIN and role != ROLE_OWNER):
            raise ProtocolError(ErrorCode.FORBIDDEN, f"an admin cannot remove the {their}")
        if banned:
            was_member = await self._store.ban(room, target.id, actor.user.id)
        elif their is None:
            raise ProtocolError(ErrorCode.USER_NOT_MEMBER, f"{name} is not a member of {room}")
        else:
            was_member = await self._store.leave_room(room, target.id)
        reason = "banned" if banned else "kicked"
        if was_member:
            removed = Removed(room=room, reason=reason, by=actor.user.name)
            await self._memberships.removed(room, target.id, encode(removed))
        event = MemberUpdated(room=room, user=name, change=reason, by=actor.user.name)
        self._tell(event, actor)
        return event

    async def unban(self, actor: Actor, room: str, name: str) -> MemberUpdated:
        await self._role(actor, room, STAFF)
        target = await self._target(name)
        await self._store.unban(room, target.id)
        event = MemberUpdated(room=room, user=name, change="unbanned", by=actor.user.name)
        self._tell(event, actor)
        return event

    async def transfer(self, actor: Actor, room: str, name: str) -> MemberUpdated:
        await self._role(actor, room, frozenset({ROLE_OWNER}))
        target = await self._target(name)
        if target.id == actor.user.id:
            raise ProtocolError(ErrorCode.FORBIDDEN, f"you own {room} already")
        if not await self._store.transfer_owner(room, actor.user.id, target.id):
            raise ProtocolError(ErrorCode.USER_NOT_MEMBER, f"{name} is not a member of {room}")
        found = await self._store.get_room(room)
        if found is not None:
            self._tell(room_updated(found, actor.user.name), Actor(actor.user))
        event = MemberUpdated(
            room=room, user=name, change="transferred", by=actor.user.name, role=ROLE_OWNER
        )
        self._tell(event, actor)
        return event

    async def set_role(self, actor: Actor, room: str, name: str, role: str) -> MemberUpdated:
        if role not in (ROLE_ADMIN, ROLE_MEMBER):
            raise ProtocolError(ErrorCode.BAD_ROLE, 'role must be "admin" or "member"')
        await self._role(actor, room, frozenset({ROLE_OWNER}))
        target = await self._target(name)
        if target.id == actor.user.id:
            raise ProtocolError(ErrorCode.FORBIDDEN, "the owner's role changes only by transfer")
        if not await self._store.set_role(room, target.id, role):
            raise ProtocolError(ErrorCode.USER_NOT_MEMBER, f"{name} is not a member of {room}")
        event = MemberUpdated(room=room, user=name, change="role", by=actor.user.name, role=role)
        self._tell(event, actor)
        return event

    async def check_leave(self, room: str, user_id: int) -> None:
        await check_leave(self._store, room, user_id)


async def visible_room(store: Store, room: str, user_id: int) -> tuple[Room, str | None]:
    """The room and the user's role in it (None: not a member); `no_such_room` if there is no
    such room or it is private and the user not in it."""
    found = await store.get_room(room)
    role = None if found is None else await store.role_of(room, user_id)
    if found is None or (found.visibility == PRIVATE and role is None):
        raise no_such_room(room)
    return found, role


async def check_leave(store: Store, room: str, user_id: int) -> None:
    """Refuse the owner's leave (`owner_must_transfer`); anyone else may leave."""
    if await store.role_of(room, user_id) == ROLE_OWNER:
        raise ProtocolError(
            ErrorCode.OWNER_MUST_TRANSFER, f"transfer {room} to a member before leaving"
        )


def with_ref(event: RoomUpdated | MemberUpdated, ref: str | None) -> RoomUpdated | MemberUpdated:
    """The answer to the request whose `ref` this is (what members were told has none)."""
    return msgspec.structs.replace(event, ref=ref)
