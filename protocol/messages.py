"""Protocol v1 frames as typed values: client requests and server events.

Every frame is a JSON object whose `type` field names it. Requests forbid unknown fields so a typo
fails loudly; events omit fields that hold their default so frames stay small.
"""

from __future__ import annotations

from typing import Annotated, Literal

import msgspec

from .frame_fields import (
    MAX_HISTORY_LIMIT,
    MAX_RESUME_ROOMS,
    MAX_SEQ,
    ClientId,
    Ref,
    RoomName,
    Seq,
    _Event,
    _Request,
)
from .room_frames import (
    Ban,
    Invite,
    Kick,
    MemberUpdated,
    Removed,
    RoomUpdate,
    RoomUpdated,
    SetRole,
    Transfer,
    Unban,
)
from .search import DEFAULT_SEARCH_LIMIT, MAX_SEARCH_LIMIT


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


class SearchRequest(_Request, tag="search", frozen=True):
    """Full-text search of the user's rooms (or of `room`), newest first; `before` is the
    `next` cursor of the previous page. The query's words are checked by the server
    (protocol.search), so an empty or long query gets its own error code."""

    query: str
    room: RoomName | None = None
    before: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    limit: Annotated[int, msgspec.Meta(ge=1, le=MAX_SEARCH_LIMIT)] = DEFAULT_SEARCH_LIMIT
    ref: Ref | None = None


Request = (Hello | Join | Leave | Send | Edit | Delete | HistoryRequest | TypingRequest | Ping) | (
    ReadRequest | SearchRequest | RoomUpdate | Invite | Kick | Ban | Unban | Transfer | SetRole
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
    SearchRequest,
    RoomUpdate,
    Invite,
    Kick,
    Ban,
    Unban,
    Transfer,
    SetRole,
)


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


class SearchResults(_Event, tag="search_results", frozen=True):
    """A page of search results, newest first, each message as history shows it; `next` (always
    present, null on the last page) is the cursor of the page after."""

    query: str
    results: list[Message]
    next: str | None
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
    | SearchResults
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
    SearchResults,
    RoomUpdated,
    MemberUpdated,
    Removed,
)
