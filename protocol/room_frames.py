"""Room administration frames (issue #15): the requests that change a room's settings and
members, and the events that tell its members (docs/protocol.md, "Rooms, roles and settings")."""

from __future__ import annotations

from typing import Annotated

import msgspec

from .frame_fields import Ref, RoomName, _Event, _Request

# Room administration (issue #15): a topic of at most 300 characters, slow mode 0-3600 s.
Topic = Annotated[str, msgspec.Meta(max_length=300)]
SlowMode = Annotated[int, msgspec.Meta(ge=0, le=3600)]
UserName = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]


class RoomUpdate(_Request, tag="room_update", frozen=True):
    """Change the room's topic and/or slow mode (admin or owner); absent fields stay."""

    room: RoomName
    topic: Topic | None = None
    slow_mode: SlowMode | None = None
    ref: Ref | None = None


class _MemberRequest(_Request, frozen=True):
    room: RoomName
    user: UserName
    ref: Ref | None = None


class Invite(_MemberRequest, tag="invite", frozen=True):
    """Make `user` a member now (any room; the way into a private one)."""


class Kick(_MemberRequest, tag="kick", frozen=True):
    """End `user`'s membership; they may join again (a public room) or be invited."""


class Ban(_MemberRequest, tag="ban", frozen=True):
    """Kick `user` and keep them out until unbanned."""


class Unban(_MemberRequest, tag="unban", frozen=True):
    pass


class Transfer(_MemberRequest, tag="transfer", frozen=True):
    """Make member `user` the owner (owner only); the old owner becomes an admin."""


class SetRole(_Request, tag="set_role", frozen=True):
    """Make a member "admin" or "member" (owner only); any other role is `bad_role`."""

    room: RoomName
    user: UserName
    role: Annotated[str, msgspec.Meta(max_length=16)]
    ref: Ref | None = None


class RoomUpdated(_Event, tag="room_updated", frozen=True):
    """The room's settings as they now are: the answer to `room_update` and `transfer`, and
    told to every member's connections (without `ref`) on every node."""

    room: str
    visibility: str
    topic: str
    slow_mode: int
    owner: str | None = None
    by: str | None = None
    ref: str | None = None


class MemberUpdated(_Event, tag="member_updated", frozen=True):
    """`user`'s membership changed (`change`: invited, kicked, banned, unbanned, role,
    transferred) by `by`; `role` is their role now, None when not a member. The answer to a
    member request, and told to every member's connections (without `ref`) on every node."""

    room: str
    user: str
    change: str
    by: str
    role: str | None = None
    ref: str | None = None


class Removed(_Event, tag="removed", frozen=True):
    """This user is no longer a member of `room` (`reason`: "kicked" or "banned") by `by`:
    each of their connections, on every node, gets it and no longer receives the room."""

    room: str
    reason: str
    by: str
