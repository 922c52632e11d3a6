"""Read state over HTTP (issue #15): `PUT /api/rooms/{room}/read` and the read fields of
`GET /api/rooms` (docs/http.md).

The cursor moves through the same `server.chat.read_state.ReadState` as the WebSocket `read`
request (forward only, clamped to the room's last seq), which tells all the user's WebSockets on
every node; the move and that notification run in one shielded scope, like the API's other writes.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import trio
from quart import Response

from protocol import ErrorCode, RoomUnread
from server.http._json import HttpError, decode_body, json_response
from server.http._requests import ReadCursor, no_such_room
from storage import PRIVATE, NotFound, Room, Store

# (room, user_id, seq): move the user's cursor and tell their connections; the room's new state.
MarkRead = Callable[[str, int, int], Awaitable[RoomUnread]]
# (user_id, rooms): the read state of those of the user's rooms the store knows.
ReadStates = Callable[[int, Sequence[str]], Awaitable[dict[str, RoomUnread]]]


async def mark_read_response(
    mark_read: MarkRead | None, room: str, user_id: int, body: bytes
) -> Response:
    """The answer to `PUT /api/rooms/{room}/read` by a member of `room` (503: not served)."""
    cursor = decode_body(body, ReadCursor)
    if mark_read is None:
        raise HttpError(503, ErrorCode.UNAVAILABLE, "read state is not served here")
    with trio.CancelScope(shield=True):  # the cursor moved: its connections must hear it
        try:
            state = await mark_read(room, user_id, cursor.seq)
        except NotFound:
            raise no_such_room(room) from None
    return json_response({"room": room, **unread_json(state)})


async def rooms_response(store: Store, read_state: ReadStates | None, user_id: int) -> Response:
    """The answer to `GET /api/rooms`: the public rooms and the private ones the user is in,
    each with its settings and the user's role, and the read state of the user's rooms."""
    rooms = await store.list_rooms()
    roles = await store.roles_of(user_id)
    mine = [room.name for room in rooms if room.name in roles]
    states = {} if read_state is None else await read_state(user_id, mine)
    listed = [
        room_json(room, roles.get(room.name), states.get(room.name))
        for room in rooms
        if room.visibility != PRIVATE or room.name in roles
    ]
    return json_response({"rooms": listed})


def room_json(room: Room, role: str | None, state: RoomUnread | None = None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": room.name,
        "last_seq": room.last_seq,
        "member": role is not None,
        "visibility": room.visibility,
        "topic": room.topic,
        "slow_mode": room.slow_mode,
        "owner": room.owner,
        "role": role,
    }
    if state is not None:  # read after the room: its last seq is the newer one, the count's
        out.update(last_seq=state.last_seq, read_seq=state.read_seq, unread=state.count)
    return out


def unread_json(state: RoomUnread) -> dict[str, Any]:
    return {"read_seq": state.read_seq, "last_seq": state.last_seq, "count": state.count}
