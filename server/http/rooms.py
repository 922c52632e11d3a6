"""Rooms over HTTP (docs/http.md): creating, listing and joining them, and (issue #15) their
settings, members and roles, through the same `server.chat.room_control.RoomControl` as the
WebSocket's requests, so both answer alike and tell every node's connections alike.

A private room is, to anyone not in it, a room that does not exist: every route answers them
exactly as it answers an unknown name (404 `no_such_room`, the same body byte for byte).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import trio
from quart import Response

from protocol import ErrorCode, ProtocolError
from server.chat.room_control import Actor, RoomControl, check_leave, visible_room
from server.chat.room_rules import STAFF
from server.http import read_state as reads
from server.http._json import HttpError, decode_body, json_response
from server.http._requests import (
    MemberTarget,
    NewRoom,
    RoleChange,
    RoomSettings,
    check_room_name,
    no_such_room,
    request_body,
)
from storage import PRIVATE, Banned, Conflict, NotFound, Room, Store, User

Authenticate = Callable[[], Awaitable[tuple[User, str]]]
# The status of each refusal RoomControl may raise.
_STATUS = {
    ErrorCode.NOT_MEMBER: 403,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.BANNED: 403,
    ErrorCode.NO_SUCH_USER: 404,
    ErrorCode.USER_NOT_MEMBER: 409,
    ErrorCode.OWNER_MUST_TRANSFER: 409,
    ErrorCode.BAD_ROLE: 422,
    ErrorCode.UNAVAILABLE: 503,
}


def http_error(exc: ProtocolError, room: str) -> HttpError:
    """A refusal of `RoomControl` as the API's error (an unknown room's is `no_such_room`)."""
    if exc.code is ErrorCode.NO_SUCH_ROOM:
        return no_such_room(room)
    return HttpError(_STATUS.get(exc.code, 422), exc.code, exc.message)


def room_settings_json(room: Room, role: str | None) -> dict[str, Any]:
    """A room as `GET /api/rooms/{room}` shows it (as listed by `GET /api/rooms`)."""
    return reads.room_json(room, role)


class RoomRoutes:
    """The handlers of /api/rooms...; `announce` tells every node of a new public room."""

    def __init__(
        self,
        store: Store,
        authenticate: Authenticate,
        control: Callable[[], RoomControl | None],
        membership_changed: Callable[[str, int, bool], Awaitable[None]],
        announce: Callable[[str, int], None],
        read_state: reads.ReadStates | None,
    ) -> None:
        self._store = store
        self._authenticate = authenticate
        self._control = control
        self._membership_changed = membership_changed
        self._announce = announce
        self._read_state = read_state

    def _rooms(self) -> RoomControl:
        control = self._control()
        if control is None:
            raise HttpError(503, ErrorCode.UNAVAILABLE, "rooms are not administered here")
        return control

    async def list_rooms(self) -> Response:
        user, _ = await self._authenticate()
        return await reads.rooms_response(self._store, self._read_state, user.id)

    async def create_room(self) -> Response:
        user, _ = await self._authenticate()
        body = decode_body(await request_body(), NewRoom)
        with trio.CancelScope(shield=True):
            try:
                room = await self._store.create_room(body.name, user.id, body.private, body.topic)
            except Conflict:
                raise HttpError(
                    409, ErrorCode.NAME_TAKEN, f"room name {body.name!r} is taken"
                ) from None
            await self._membership_changed(room.name, user.id, True)  # the creator
            if room.visibility != PRIVATE:  # a private room is known to its members only
                self._announce(room.name, user.id)
        return json_response(room_settings_json(room, "owner"), 201)

    async def room(self, room: str) -> Response:
        user, _ = await self._authenticate()
        check_room_name(room)
        try:
            found, role = await visible_room(self._store, room, user.id)
        except ProtocolError as exc:
            raise http_error(exc, room) from None
        return json_response(room_settings_json(found, role))

    async def update(self, room: str) -> Response:
        user, _ = await self._authenticate()
        check_room_name(room)
        body = decode_body(await request_body(), RoomSettings)
        with trio.CancelScope(shield=True):
            try:
                event = await self._rooms().update(Actor(user), room, body.topic, body.slow_mode)
            except ProtocolError as exc:
                raise http_error(exc, room) from None
        return json_response(event)

    async def members(self, room: str) -> Response:
        user, _ = await self._authenticate()
        check_room_name(room)
        try:
            _, role = await visible_room(self._store, room, user.id)
        except ProtocolError as exc:
            raise http_error(exc, room) from None
        if role is None:
            raise HttpError(403, ErrorCode.NOT_MEMBER, f"not a member of {room!r}")
        members = await self._store.member_roles(room)
        return json_response(
            {
                "room": room,
                "members": [m.name for m in members],
                "roles": {m.name: m.role for m in members},
            }
        )

    async def join(self, room: str) -> Response:
        user, _ = await self._authenticate()
        check_room_name(room)
        with trio.CancelScope(shield=True):
            try:
                await self._store.join_room(room, user.id)
            except NotFound:  # also a private room the user is not in
                raise no_such_room(room) from None
            except Banned:
                raise HttpError(403, ErrorCode.BANNED, f"banned from {room!r}") from None
            await self._membership_changed(room, user.id, True)
        return json_response({"room": room, "member": True})

    async def leave(self, room: str) -> Response:
        user, _ = await self._authenticate()
        check_room_name(room)
        try:
            await visible_room(self._store, room, user.id)
            await check_leave(self._store, room, user.id)
        except ProtocolError as exc:
            raise http_error(exc, room) from None
        with trio.CancelScope(shield=True):
            await self._store.leave_room(room, user.id)
            await self._membership_changed(room, user.id, False)
        return json_response({"room": room, "member": False})

    async def member(self, room: str, action: str) -> Response:
        """POST .../invite|kick|ban|unban|transfer {"user": name}."""
        user, _ = await self._authenticate()
        check_room_name(room)
        target = decode_body(await request_body(), MemberTarget).user
        control, actor = self._rooms(), Actor(user)
        with trio.CancelScope(shield=True):
            try:
                if action == "invite":
                    event = await control.invite(actor, room, target)
                elif action in ("kick", "ban"):
                    event = await control.remove(actor, room, target, banned=action == "ban")
                elif action == "unban":
                    event = await control.unban(actor, room, target)
                else:
                    event = await control.transfer(actor, room, target)
            except ProtocolError as exc:
                raise http_error(exc, room) from None
        return json_response(event)

    async def set_role(self, room: str, name: str) -> Response:
        """PUT .../members/{user} {"role": "admin"|"member"} (owner only)."""
        user, _ = await self._authenticate()
        check_room_name(room)
        role = decode_body(await request_body(), RoleChange).role
        with trio.CancelScope(shield=True):
            try:
                event = await self._rooms().set_role(Actor(user), room, name, role)
            except ProtocolError as exc:
                raise http_error(exc, room) from None
        return json_response(event)


async def check_batch(store: Store, room: Room, user_id: int) -> None:
    """A batch import by a member of a room in slow mode is the owner's or an admin's only:
    a batch would pass many messages through one slow-mode admission."""
    if room.slow_mode and await store.role_of(room.name, user_id) not in STAFF:
        raise HttpError(
            429,
            ErrorCode.SLOW_MODE,
            f"{room.name!r} is in slow mode: batch imports are for its admins",
            {"Retry-After": str(room.slow_mode)},
        )
