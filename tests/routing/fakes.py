"""In-memory stand-ins for a primary and its replicas, for the router's routing logic.

The router is the thing under test; these fake what sits below it (the databases). A
`FakeReplica` holds the primary's messages up to a replay position the test moves, and can be
made to fail or hang, as a stopped or stuck replica would.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import trio

from protocol import Message
from storage import Appended, NewMessage, NotFound, StorageError
from storage.routing import ReplicaLag


@dataclass
class FakePrimary:
    """A `MessageStore` of gap-free rooms; counts `last_seq` calls (the point reads)."""

    rooms: dict[str, list[Message]] = field(default_factory=dict)
    last_seq_calls: int = 0
    page_reads: int = 0
    next_id: int = 1
    delay: float = 0.0  # seconds each last_seq takes (with the autojump clock)

    def add_room(self, room: str) -> None:
        self.rooms[room] = []

    async def append_batch(self, batch: Sequence[NewMessage]) -> list[Appended]:
        out = []
        for new in batch:
            if new.room not in self.rooms:
                raise NotFound(new.room)
            seq = len(self.rooms[new.room]) + 1
            message = Message(new.room, self.next_id, seq, new.user_name, new.text, 0)
            self.next_id += 1
            self.rooms[new.room].append(message)
            out.append(Appended(message, duplicate=False))
        return out

    async def last_seq(self, room: str) -> int:
        self.last_seq_calls += 1
        await trio.sleep(self.delay)
        return len(self._room(room))

    async def history(
        self, room: str, before_seq: int | None, limit: int
    ) -> tuple[list[Message], bool]:
        self.page_reads += 1
        return page_before(self._room(room), before_seq, limit)

    async def messages_after(self, room: str, after_seq: int, limit: int) -> list[Message]:
        self.page_reads += 1
        return [m for m in self._room(room) if m.seq > after_seq][:limit]

    def _room(self, room: str) -> list[Message]:
        try:
            return self.rooms[room]
        except KeyError:
            raise NotFound(room) from None


def page_before(
    messages: list[Message], before_seq: int | None, limit: int
) -> tuple[list[Message], bool]:
    older = [m for m in messages if before_seq is None or m.seq < before_seq]
    page = older[-limit:] if limit else []
    return page, len(older) > len(page)


@dataclass
class FakeReplica:
    """The primary as replayed up to `replayed` messages per room (all of them if caught up)."""

    primary: FakePrimary
    replayed: dict[str, int] | None = None  # None: caught up
    lag: ReplicaLag = field(default_factory=lambda: ReplicaLag(0.0, 0))
    down: bool = False
    hang: bool = False
    calls: int = 0
    page_reads: int = 0
    delay: float = 0.0  # seconds each call takes (with the autojump clock)

    async def open(self) -> None:
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()

    def freeze(self) -> None:
        """Stop replaying: from now on the replica lags the primary."""
        self.replayed = {room: len(msgs) for room, msgs in self.primary.rooms.items()}

    def catch_up(self) -> None:
        self.replayed = None

    async def _enter(self) -> None:
        self.calls += 1
        if self.hang:
            await trio.sleep_forever()
        if self.down:
            raise StorageError("connection refused")
        await trio.sleep(self.delay)

    def _room(self, room: str) -> list[Message]:
        messages = self.primary.rooms.get(room)
        if messages is None or (self.replayed is not None and room not in self.replayed):
            raise NotFound(room)
        return messages if self.replayed is None else messages[: self.replayed[room]]

    async def history_and_last_seq(
        self, room: str, before_seq: int | None, limit: int
    ) -> tuple[int, tuple[list[Message], bool]]:
        await self._enter()
        messages = self._room(room)
        self.page_reads += 1
        return len(messages), page_before(messages, before_seq, limit)

    async def messages_after_and_last_seq(
        self, room: str, after_seq: int, limit: int
    ) -> tuple[int, list[Message]]:
        await self._enter()
        messages = self._room(room)
        self.page_reads += 1
        return len(messages), [m for m in messages if m.seq > after_seq][:limit]

    async def replica_lag(self) -> ReplicaLag:
        await self._enter()
        return self.lag


def new_message(room: str, text: str) -> NewMessage:
    return NewMessage(room=room, user_id=1, user_name="alice", text=text, client_id=None)
