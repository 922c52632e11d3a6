"""Unread counts per room, derived on the client as docs/protocol.md's *Read state* says.

Rules:
- Per room the counter holds the latest state the server gave (`read_seq`, `last_seq`, `count`:
  from `welcome.unread`, from `unread` events, or the answer to `read`), and the messages by
  other users received since (`seq` above both `last_seq` and `read_seq`). The count is
  `count` plus those.
- A state replaces the one held only if it is not older: `(read_seq, last_seq)` compared in that
  order, since two moves made on different nodes may arrive in either order.
- The user's own messages are never unread; a deleted message no longer counts.
- A room joined during the connection starts at `(0, joined.last_seq, 0)`: what came before the
  join is not known here (the server says on the next `read`, or the next `welcome`).
"""

from __future__ import annotations

from protocol import Deleted, Message, RoomUnread, Unread, Welcome

# Counting further than the server ever does (1000) is pointless: the others are shown "999+".
_TRACKED_PER_ROOM = 1000


class UnreadCounter:
    """Unread counts of the rooms a user is in, kept current from the events a client gets."""

    def __init__(self, user: str = "") -> None:
        self.user = user
        self._state: dict[str, RoomUnread] = {}
        # Per room, messages by others after the state: id -> seq, oldest first (so a delete
        # can take one back), at most _TRACKED_PER_ROOM; older ones are only counted.
        self._later: dict[str, dict[int, int]] = {}
        self._untracked: dict[str, tuple[int, int]] = {}  # room -> (how many, highest seq)

    def counts(self) -> dict[str, int]:
        """Each room's unread count."""
        return {room: self.count(room) for room in self._state}

    def count(self, room: str) -> int:
        state = self._state.get(room)
        if state is None:
            return 0
        untracked = self._untracked.get(room, (0, 0))[0]
        return state.count + len(self._later.get(room, ())) + untracked

    def state(self, room: str) -> RoomUnread | None:
        """The latest state the server gave for `room` (what `count` starts from)."""
        return self._state.get(room)

    def welcome(self, welcome: Welcome) -> None:
        """A (re)connect: the server's state of every room the user is in."""
        self.user = welcome.user
        for room in set(self._state) - set(welcome.rooms):
            self.left(room)
        for room in welcome.rooms:
            state = welcome.unread.get(room)
            if state is not None:
                self._offer(room, state)
            else:  # a server without read state: count what arrives
                self._state.setdefault(room, RoomUnread(0, 0, 0))

    def joined(self, room: str, last_seq: int) -> None:
        self._state.setdefault(room, RoomUnread(0, last_seq, 0))

    def left(self, room: str) -> None:
        self._state.pop(room, None)
        self._later.pop(room, None)
        self._untracked.pop(room, None)

    def unread(self, event: Unread) -> bool:
        """Apply an `unread` event; whether it replaced the state (False: an older one)."""
        return self._offer(event.room, RoomUnread(event.read_seq, event.last_seq, event.count))

    def message(self, message: Message) -> None:
        """A message received live or replayed: one more unread if by another user and new."""
        state = self._state.get(message.room)
        if state is None or message.user == self.user or message.deleted:
            return
        if message.seq <= max(state.read_seq, state.last_seq):
            return  # the state's count has it already
        later = self._later.setdefault(message.room, {})
        later[message.id] = message.seq
        if len(later) > _TRACKED_PER_ROOM:
            oldest = next(iter(later))
            count, _ = self._untracked.get(message.room, (0, 0))
            self._untracked[message.room] = (count + 1, later.pop(oldest))

    def deleted(self, event: Deleted) -> None:
        """A deleted message is no longer unread."""
        self._later.get(event.room, {}).pop(event.id, None)

    def _offer(self, room: str, state: RoomUnread) -> bool:
        held = self._state.get(room)
        if held is not None and (state.read_seq, state.last_seq) < (held.read_seq, held.last_seq):
            return False
        self._state[room] = state
        seen = max(state.read_seq, state.last_seq)
        later = self._later.get(room, {})
        for message_id in [m for m, seq in later.items() if seq <= seen]:
            del later[message_id]
        if self._untracked.get(room, (0, 0))[1] <= seen:
            self._untracked.pop(room, None)
        return True
