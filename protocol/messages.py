"""Protocol v1 frames as typed values: client requests and server events.

Every frame is a JSON object whose `type` field names it. Requests forbid unknown fields so a typo
fails loudly; events omit fields that hold their default so frames stay small.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

ROOM_PATTERN = r"^[a-z0-9][a-z0-9_.-]{0,63}\Z"  # \Z: `$` would accept a trailing newline
RoomName = Annotated[str, msgspec.Meta(pattern=ROOM_PATTERN)]
Ref = Annotated[str, msgspec.Meta(max_length=64)]
ClientId = Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
MAX_SEQ = 2**63 - 1  # SQLite INTEGER range: a larger value would overflow in storage
Seq = Annotated[int, msgspec.Meta(ge=0, le=MAX_SEQ)]
MAX_HISTORY_LIMIT = 200
MAX_RESUME_ROOMS = 1000


class _Request(msgspec.Struct, tag_field="type", forbid_unknown_fields=True, frozen=True):
    pass


class Hello(_Request, tag="hello", frozen=True):
    token: Annotated[str, msgspec.Meta(min_length=1, max_length=256)]
    resume: Annotated[dict[RoomName, Seq], msgspec.Meta(max_length=MAX_RESUME_ROOMS)] | None = None
    ref: Ref | None = None


class Join(_Request, tag="join", frozen=True):
    room: RoomName
    ref: Ref | None = None


class Leave(_Request, tag="leave", frozen=True):
    room: RoomName
    ref: Ref | None = None


class Send(_Request, tag="send", frozen=True):
    room: RoomName
    text: str
    client_id: ClientId | None = None
    ref: Ref | None = None


class Edit(_Request, tag="edit", frozen=True):
    """Replace the text of the sender's own message `id` (validated like `send`'s text)."""

    room: RoomName
    id: Annotated[int, msgspec.Meta(ge=1, le=MAX_SEQ)]
    text: str
    client_id: ClientId | None = None
    ref: Ref | None = None


class Delete(_Request, tag="delete", frozen=True):
    """Delete the sender's own message `id`: it stays in history as a tombstone."""

    room: RoomName
    id: Annotated[int, msgspec.Meta(ge=1, le=MAX_SEQ)]
    client_id: ClientId | None = None
    ref: Ref | None = None


class HistoryRequest(_Request, tag="history", frozen=True):
    room: RoomName
    before_seq: Annotated[int, msgspec.Meta(ge=1, le=MAX_SEQ)] | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=MAX_HISTORY_LIMIT)] = 50
    ref: Ref | None = None


class TypingRequest(_Request, tag="typing", frozen=True):
    room: RoomName
    ref: Ref | None = None


class Ping(_Request, tag="ping", frozen=True):
    ref: Ref | None = None


class ReadRequest(_Request, tag="read", frozen=True):
    """Move the user's read cursor in `room` to `seq` (forward only; clamped to the last seq)."""

    room: RoomName
    seq: Seq
    ref: Ref | None = None


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


Request = (Hello | Join | Leave | Send | Edit | Delete | HistoryRequest | TypingRequest | Ping) | (
    ReadRequest | RoomUpdate | Invite | Kick | Ban | Unban | Transfer | SetRole
)
REQUEST_TYPES: tuple[type[_Request], ...] = (
    Hello,
    Join,
    Leave,
    Send,
    Edit,
    Delete,
    HistoryRequest,
    TypingRequest,
    Ping,
    ReadRequest,
    RoomUpdate,
    Invite,
    Kick,
    Ban,
    Unban,
    Transfer,
    SetRole,
)


class _Event(msgspec.Struct, tag_field="type", omit_defaults=True, frozen=True):
    pass


class RoomUnread(msgspec.Struct, frozen=True):
    """One room's read state in `welcome`: `count` messages by others in (read_seq, last_seq]."""

    read_seq: int
    last_seq: int
    count: int


class Welcome(_Event, tag="welcome", frozen=True):
    user: str
    protocol: int
    server_id: str
    rooms: list[str] = []
    heartbeat: float = 0.0
    ref: str | None = None
    unread: dict[str, RoomUnread] = {}


class Joined(_Event, tag="joined", frozen=True):
    room: str
    last_seq: int
    online: list[str] = []
    ref: str | None = None


class Left(_Event, tag="left", frozen=True):
    room: str
    ref: str | None = None


class Message(_Event, tag="message", frozen=True):
    room: str
    id: int
    seq: int
    user: str
    text: str
    ts: int  # milliseconds since the Unix epoch, server clock
    client_id: str | None = None
    # Set only in history pages: when the text was last edited (ms), and a deleted message's
    # tombstone (its text is then "").
    edited_at: int | None = None
    deleted: bool = False


class Edited(_Event, tag="edited", frozen=True):
    """Message `id` of `room` now reads `text`: a room entry with its own `seq`."""

    room: str
    seq: int
    id: int  # the message edited
    text: str
    edited_at: int  # ms since the Unix epoch, server clock
    client_id: str | None = None


class Deleted(_Event, tag="deleted", frozen=True):
    """Message `id` of `room` was deleted: a room entry with its own `seq`."""

    room: str
    seq: int
    id: int  # the message deleted
    client_id: str | None = None


# What a room's seq numbers: a message, or a change to an earlier one. Resume and backfill
# deliver all three in seq order.
RoomEntry = Message | Edited | Deleted


class Ack(_Event, tag="ack", frozen=True):
    room: str
    id: int
    seq: int
    client_id: str | None = None
    duplicate: bool = False
    ref: str | None = None


class HistoryPage(_Event, tag="history", frozen=True):
    room: str
    messages: list[Message]
    has_more: bool
    ref: str | None = None


class Presence(_Event, tag="presence", frozen=True):
    room: str
    user: str
    status: Literal["online", "offline"]


class Typing(_Event, tag="typing", frozen=True):
    room: str
    user: str


class Resync(_Event, tag="resync", frozen=True):
    """Resume could not replay the gap: the client pages history up to `last_seq` instead."""

    room: str
    last_seq: int
    reason: str


class RoomCreated(_Event, tag="room_created", frozen=True):
    """A public room now exists: told to every connected user but its creator (told `joined`)."""

    room: str


class Error(_Event, tag="error", frozen=True):
    code: str
    message: str
    ref: str | None = None
    retry_after: float | None = None  # `slow_mode`: seconds until a send would be taken


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


class Pong(_Event, tag="pong", frozen=True):
    ref: str | None = None


class Unread(_Event, tag="unread", frozen=True):
    """The user's read cursor in `room` is `read_seq`: `count` messages by others in
    (read_seq, last_seq] are unread. Sent to each of the user's connections when it moves."""

    room: str
    read_seq: int
    last_seq: int
    count: int
    ref: str | None = None


Event = (
    Welcome
    | Joined
    | Left
    | Message
    | Edited
    | Deleted
    | Ack
    | HistoryPage
    | Presence
    | Typing
    | Resync
    | RoomCreated
    | Error
    | Pong
    | Unread
    | RoomUpdated
    | MemberUpdated
    | Removed
)
EVENT_TYPES: tuple[type[_Event], ...] = (
    Welcome,
    Joined,
    Left,
    Message,
    Edited,
    Deleted,
    Ack,
    HistoryPage,
    Presence,
    Typing,
    Resync,
    RoomCreated,
    Error,
    Pong,
    Unread,
    RoomUpdated,
    MemberUpdated,
    Removed,
)
