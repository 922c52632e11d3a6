"""Stored rows to the protocol's room entries, the same for every backend.

A backend's message row is (id, seq, user_name, text, ts, client_id, kind, target, edited_at,
deleted) in that order (`ENTRY_COLUMNS`); `entry_from_row` makes the event the row is."""

from __future__ import annotations

from typing import Any

from protocol import Deleted, Edited, Message, RoomEntry
from storage.protocols import KIND_DELETE, KIND_EDIT

ENTRY_COLUMNS = "id, seq, user_name, text, ts, client_id, kind, target, edited_at, deleted"


def entry(
    room: str,
    id_: int,
    seq: int,
    user_name: str,
    text: str,
    ts: int,
    client_id: str | None,
    kind: int,
    target: int | None,
) -> RoomEntry:
    """The event a newly stored or re-read entry is (for a message, as it was sent)."""
    if kind == KIND_EDIT:
        assert target is not None
        return Edited(room, seq, target, text, ts, client_id)
    if kind == KIND_DELETE:
        assert target is not None
        return Deleted(room, seq, target, client_id)
    return Message(room, id_, seq, user_name, text, ts, client_id)


def entry_from_row(room: str, row: tuple[Any, ...]) -> RoomEntry:
    """A row of `ENTRY_COLUMNS` as resume replays it: a message with its text as it is now
    (edits follow as their own entries), an edit or delete as its event."""
    id_, seq, user_name, text, ts, client_id, kind, target, _edited_at, _deleted = row
    if kind in (KIND_EDIT, KIND_DELETE):
        return entry(room, id_, seq, user_name, text, ts, client_id, kind, target)
    return message_from_row(room, row)


def message_from_row(room: str, row: tuple[Any, ...]) -> Message:
    """A message row of `ENTRY_COLUMNS` as history shows it."""
    id_, seq, user_name, text, ts, client_id, _kind, _target, edited_at, deleted = row
    return Message(room, id_, seq, user_name, text, ts, client_id, edited_at, bool(deleted))
