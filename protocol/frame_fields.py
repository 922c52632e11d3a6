"""What every frame shares: the field types (room names, refs, seqs) and the two base classes,
kept apart from the frames themselves so that the frame modules (protocol.messages,
protocol.room_frames) can each hold a part of the protocol without importing each other."""

from __future__ import annotations

from typing import Annotated

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
    """A client request: unknown fields are refused, so a typo fails loudly."""


class _Event(msgspec.Struct, tag_field="type", omit_defaults=True, frozen=True):
    """A server event: fields that hold their default are left out, so frames stay small."""
