"""The store's read-state calls (issue #15): each user's read cursor per room, on the catalog
(`RoomStore`), and unread counts over a room's messages (`MessageStore`)."""

from __future__ import annotations

from typing import Protocol

UNREAD_WINDOW = 1000
"""Unread counts look at most this many seqs past a read cursor, so a count is at most this
(a client shows "999+") and costs one bounded index range however far behind a reader is."""


class ReadCursors(Protocol):
    """The catalog's part: a cursor is the user's, never a shard's."""

    async def mark_read(self, room: str, user_id: int, seq: int) -> int:
        """Raise the user's read cursor in `room` to `seq`, never lower it; returns the cursor
        now stored. Raise `NotFound` for an unknown room. The caller bounds `seq` by the room's
        last seq (the catalog does not hold it once messages are sharded)."""

    async def read_cursors(self, user_id: int) -> dict[str, int]:
        """The user's read cursors, room name -> last seq read; rooms never marked are absent."""


class UnreadCounts(Protocol):
    """The messages' part: counted where the room's messages are."""

    async def unread_count(self, room: str, read_seq: int, last_seq: int, user_id: int) -> int:
        """How many of the room's messages (kind 0 entries not deleted: edits and deletes have
        seqs but are not messages) with seq in (read_seq, min(last_seq, read_seq +
        UNREAD_WINDOW)] were sent by users other than `user_id` (one bounded index range; 0
        for an unknown room). `last_seq` is what the caller read: the count covers no more."""
