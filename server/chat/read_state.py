"""Read state: each user's read cursor per room, the unread counts derived from it, and the
`unread` event that tells all the user's connections, on every process, that a cursor moved.

Rules (docs/protocol.md, "Read state"):
- A cursor is the last seq the user has read in a room; it only moves forward. A seq below the
  stored one changes nothing (the answer carries the stored cursor); a seq above the room's last
  seq is clamped to it (the last seq is read first, and it only grows).
- `count` is the number of messages by *other* users in (read_seq, last_seq], looked up over at
  most `UNREAD_WINDOW` seqs (so at most that many). The user's own messages are never unread,
  with nothing written when they send: the count skips them.
- Only a cursor change is pushed (`unread`, through `RoomBus.publish_user_event`). A new message
  is not: each connection already receives it, and the client adds the messages by others with
  seq > `last_seq` to `count` itself. So delivery costs nothing more per message or receiver.
"""

from __future__ import annotations

from collections.abc import Sequence

from protocol import RoomUnread, Unread, encode
from server.fanout.bus import NO_CONN, ConnId, RoomBus
from storage import Store


class ReadState:
    def __init__(self, store: Store, bus: RoomBus) -> None:
        self._store = store
        self._bus = bus

    async def of_rooms(self, user_id: int, rooms: Sequence[str]) -> dict[str, RoomUnread]:
        """The user's read state in each of `rooms` (an unknown room is left out): one read of
        the cursors, one of the last seqs, then one count per room with anything unread."""
        if not rooms:
            return {}
        cursors = await self._store.read_cursors(user_id)
        lasts = await self._store.last_seqs(rooms)
        out: dict[str, RoomUnread] = {}
        for room in rooms:
            last = lasts.get(room)
            if last is None:
                continue
            read = min(cursors.get(room, 0), last)
            out[room] = RoomUnread(read, last, await self._count(room, read, last, user_id))
        return out

    async def mark(
        self, room: str, user_id: int, seq: int, *, origin: ConnId = NO_CONN
    ) -> RoomUnread:
        """Move the user's cursor in `room` towards `seq` (forward only, clamped to the last
        seq); if it moved, tell every connection of the user but `origin`. Raises `NotFound`
        for an unknown room; the caller checked membership."""
        last = await self._store.last_seq(room)
        wanted = min(seq, last)
        stored = await self._store.mark_read(room, user_id, wanted)
        state = RoomUnread(stored, last, await self._count(room, stored, last, user_id))
        if stored == wanted:  # moved (or was already there): not a refused step back
            event = Unread(room=room, read_seq=stored, last_seq=last, count=state.count)
            self._bus.publish_user_event(user_id, encode(event), origin)
        return state

    async def _count(self, room: str, read: int, last: int, user_id: int) -> int:
        if read >= last:
            return 0
        return await self._store.unread_count(room, read, last, user_id)
