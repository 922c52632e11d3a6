"""The WebSocket's room administration requests (issue #15), answered through `RoomControl`."""

from __future__ import annotations

from protocol import Ban, Invite, Kick, MemberUpdated, RoomUpdate, RoomUpdated, SetRole, Transfer
from protocol import Unban as UnbanRequest
from server.chat.room_control import Actor, RoomControl, with_ref
from storage import User

RoomRequest = RoomUpdate | Invite | Kick | Ban | UnbanRequest | Transfer | SetRole
ROOM_REQUESTS = (RoomUpdate, Invite, Kick, Ban, UnbanRequest, Transfer, SetRole)


async def answer_room_request(
    control: RoomControl, actor: Actor, request: RoomRequest
) -> RoomUpdated | MemberUpdated:
    """The event that answers `request` (raises `ProtocolError` for a refusal)."""
    event: RoomUpdated | MemberUpdated
    match request:
        case RoomUpdate():
            event = await control.update(actor, request.room, request.topic, request.slow_mode)
        case Invite():
            event = await control.invite(actor, request.room, request.user)
        case Kick():
            event = await control.remove(actor, request.room, request.user, banned=False)
        case Ban():
            event = await control.remove(actor, request.room, request.user, banned=True)
        case UnbanRequest():
            event = await control.unban(actor, request.room, request.user)
        case Transfer():
            event = await control.transfer(actor, request.room, request.user)
        case SetRole():
            event = await control.set_role(actor, request.room, request.user, request.role)
    return with_ref(event, request.ref)


def actor_of(user_id: int, name: str, conn_id: int) -> Actor:
    return Actor(User(user_id, name), conn_id)
