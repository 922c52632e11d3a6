"""The terminal client's shown messages: a short number per message line, so that `/edit 3 ...`
and `/delete 3` can name a message the user sees (ids are long and global; seqs are per room),
and `last` the user's own latest message in a room.

Numbers count up from 1 in the order messages are first shown, over every room; a message shown
again (by `/history`) keeps its number. Only the latest `MAX_SHOWN` are remembered.
"""

from __future__ import annotations

from dataclasses import dataclass

from protocol import Deleted, Edited, Message

from ._screen import printable

MAX_SHOWN = 10_000


@dataclass(frozen=True)
class ShownMessage:
    number: int
    room: str
    id: int
    user: str


class ShownMessages:
    """Which message each shown number stands for, and how message lines read."""

    def __init__(self) -> None:
        self._by_id: dict[int, ShownMessage] = {}
        self._by_number: dict[int, ShownMessage] = {}
        self._own_last: dict[str, int] = {}  # room -> id of the user's latest message shown
        self._next = 1

    def line(self, message: Message, me: str) -> str:
        """`#N [room] user: text` for `message`, numbering it if it is new here."""
        shown = self._by_id.get(message.id) or self._remember(message)
        if message.user == me and message.id >= self._own_last.get(message.room, 0):
            self._own_last[message.room] = message.id
        if message.deleted:
            text = "(deleted)"
        else:
            text = printable(message.text) + (" (edited)" if message.edited_at else "")
        return f"#{shown.number} [{message.room}] {printable(message.user)}: {text}"

    def change_line(self, change: Edited | Deleted) -> str:
        """What an edit or delete says: about the numbered line if it was shown, else by id."""
        shown = self._by_id.get(change.id)
        news = "(deleted)" if isinstance(change, Deleted) else f"{printable(change.text)} (edited)"
        if shown is None:
            return f"* [{change.room}] a message not shown here (id {change.id}): {news}"
        return f"* #{shown.number} [{shown.room}] {printable(shown.user)}: {news}"

    def find(self, which: str, room: str | None) -> ShownMessage | None:
        """The message `which` names: a shown number (`3` or `#3`), or `last`, the user's own
        latest message in `room`."""
        if which == "last":
            message_id = self._own_last.get(room or "")
            return self._by_id.get(message_id) if message_id is not None else None
        number = which.removeprefix("#")
        return self._by_number.get(int(number)) if number.isdigit() else None

    def _remember(self, message: Message) -> ShownMessage:
        shown = ShownMessage(self._next, message.room, message.id, message.user)
        self._next += 1
        self._by_id[message.id] = shown
        self._by_number[shown.number] = shown
        if len(self._by_id) > MAX_SHOWN:
            oldest = self._by_number.pop(next(iter(self._by_number)))
            del self._by_id[oldest.id]
        return shown
