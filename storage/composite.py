"""A `Store` assembled from a backend and the policy written once above every backend.

A backend implements rows only (`Backend`); this adds the account policy (`Accounts`) and the
argument checks all backends share, then forwards each call to the part that owns it. Routing
arrives the same way: a read-replica or sharded part replaces `rooms` or `messages` here, and
the server, which sees only `Store`, does not change.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Collection, Mapping, Sequence
from types import TracebackType
from typing import Self

from protocol import Message, RoomEntry
from storage import passwords
from storage.accounts import Accounts
from storage.protocols import (
    Appended,
    Backend,
    EventOutbox,
    MessageStore,
    NewMessage,
    NotFound,
    Profile,
    Room,
    RoomStore,
    Session,
    TokenGrant,
    User,
)
from storage.room_admin import Member


class CompositeStore:
    """`Store` over `backend`: `accounts` is the policy on its account rows, `rooms` and
    `messages` are the backend itself. `scrypt_n` is the scrypt cost of new password hashes
    (lower it only in tests)."""

    def __init__(self, backend: Backend, *, scrypt_n: int = passwords.DEFAULT_N) -> None:
        self.backend = backend
        self.accounts = Accounts(backend, scrypt_n=scrypt_n)
        self.rooms: RoomStore = backend
        self.messages = backend
        self.events: EventOutbox = backend  # the event stream's outbox (server/events/)

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    @property
    def messages(self) -> MessageStore:
        """The part that owns messages: the backend, or a router put in front of it."""
        return self._messages

    @messages.setter
    def messages(self, part: MessageStore) -> None:
        self._messages = part
        # The writer's one call per batch goes straight to the part: no coroutine frame here.
        self.append_batch = part.append_batch
        # A backend that may commit without yielding (SQLite on the loop) offers `append_now`.
        self.append_now: Callable[[Sequence[NewMessage]], list[Appended] | None] = getattr(
            part, "append_now", _not_now
        )

    # Lifecycle ----------------------------------------------------------------------------
    async def open(self) -> None:
        await self.backend.open()
        try:
            await self.accounts.open()
        except BaseException:
            await self.backend.aclose()
            raise

    async def aclose(self) -> None:
        await self.backend.aclose()

    async def probe(self, busy_timeout: float) -> str | None:
        return await self.backend.probe(busy_timeout)

    # Accounts -----------------------------------------------------------------------------
    async def create_user(self, name: str, password: str) -> User:
        return await self.accounts.create_user(name, password)

    async def check_password(self, name: str, password: str) -> User | None:
        return await self.accounts.check_password(name, password)

    async def create_token(self, user_id: int, ttl_seconds: float, device: str = "") -> str:
        return await self.accounts.create_token(user_id, ttl_seconds, device)

    async def user_for_token(self, token: str) -> User | None:
        return await self.accounts.user_for_token(token)

    async def grant_for_token(self, token: str) -> TokenGrant | None:
        return await self.accounts.grant_for_token(token)

    async def revoke_token(self, token: str) -> None:
        await self.accounts.revoke_token(token)

    async def sessions(self, user_id: int) -> list[Session]:
        return await self.accounts.sessions(user_id)

    async def revoke_session(self, user_id: int, session_id: str) -> str | None:
        return await self.accounts.revoke_session(user_id, session_id)

    async def revoke_sessions(self, user_id: int, keep_token: str | None) -> list[str]:
        return await self.accounts.revoke_sessions(user_id, keep_token)

    async def change_password(
        self, user: User, old: str, new: str, keep_token: str | None
    ) -> list[str] | None:
        return await self.accounts.change_password(user, old, new, keep_token)

    async def set_display_name(self, user_id: int, display_name: str | None) -> str | None:
        return await self.accounts.set_display_name(user_id, display_name)

    async def profile(self, name: str) -> Profile | None:
        return await self.accounts.profile(name)

    async def record_activity(self, sessions: Mapping[str, int], users: Mapping[int, int]) -> None:
        await self.accounts.record_activity(sessions, users)

    # Rooms and membership -----------------------------------------------------------------
    async def get_room(self, name: str) -> Room | None:
        return await self.rooms.get_room(name)

    async def list_rooms(self, limit: int = 1000) -> list[Room]:
        return await self.rooms.list_rooms(_check_limit(limit))

    async def leave_room(self, room: str, user_id: int) -> bool:
        return await self.rooms.leave_room(room, user_id)

    async def is_member(self, room: str, user_id: int) -> bool:
        return await self.rooms.is_member(room, user_id)

    async def rooms_of(self, user_id: int) -> list[str]:
        return await self.rooms.rooms_of(user_id)

    async def members(self, room: str) -> list[str]:
        return await self.rooms.members(room)

    async def mark_read(self, room: str, user_id: int, seq: int) -> int:
        if seq < 0:
            raise ValueError(f"seq must be >= 0, not {seq}")
        return await self.rooms.mark_read(room, user_id, seq)

    async def read_cursors(self, user_id: int) -> dict[str, int]:
        return await self.rooms.read_cursors(user_id)

    # Room administration (storage/room_admin.py) ------------------------------------------
    async def create_room(
        self, name: str, created_by: int, private: bool = False, topic: str = ""
    ) -> Room:
        return await self.rooms.create_room(name, created_by, private, topic)

    async def join_room(self, room: str, user_id: int) -> bool:
        return await self.rooms.join_room(room, user_id)

    async def add_member(self, room: str, user_id: int) -> bool:
        return await self.rooms.add_member(room, user_id)

    async def update_room(self, room: str, topic: str | None, slow_mode: int | None) -> Room | None:
        return await self.rooms.update_room(room, topic, slow_mode)

    async def role_of(self, room: str, user_id: int) -> str | None:
        return await self.rooms.role_of(room, user_id)

    async def roles_of(self, user_id: int) -> dict[str, str]:
        return await self.rooms.roles_of(user_id)

    async def member_roles(self, room: str) -> list[Member]:
        return await self.rooms.member_roles(room)

    async def set_role(self, room: str, user_id: int, role: str) -> bool:
        return await self.rooms.set_role(room, user_id, role)

    async def transfer_owner(self, room: str, from_id: int, to_id: int) -> bool:
        return await self.rooms.transfer_owner(room, from_id, to_id)

    async def ban(self, room: str, user_id: int, by: int) -> bool:
        return await self.rooms.ban(room, user_id, by)

    async def unban(self, room: str, user_id: int) -> bool:
        return await self.rooms.unban(room, user_id)

    # Messages -----------------------------------------------------------------------------
    async def history(
        self, room: str, before_seq: int | None, limit: int
    ) -> tuple[list[Message], bool]:
        return await self.messages.history(room, before_seq, _check_limit(limit))

    async def messages_after(self, room: str, after_seq: int, limit: int) -> list[RoomEntry]:
        return await self.messages.messages_after(room, after_seq, _check_limit(limit))

    async def message(self, room: str, message_id: int) -> Message | None:
        return await self.messages.message(room, message_id)

    async def last_seq(self, room: str) -> int:
        return await self.messages.last_seq(room)

    async def last_seqs(self, rooms: Collection[str]) -> dict[str, int]:
        return await self.messages.last_seqs(rooms)

    async def unread_count(self, room: str, read_seq: int, last_seq: int, user_id: int) -> int:
        return await self.messages.unread_count(room, max(read_seq, 0), last_seq, user_id)

    async def search(
        self, rooms: Collection[str], words: Sequence[str], before_id: int, limit: int
    ) -> tuple[list[Message], bool]:
        if any(not word for word in words):
            raise ValueError("search words must not be empty")
        return await self.messages.search(rooms, words, before_id, _check_limit(limit))

    async def index_search(self) -> int:
        return await self.messages.index_search()


async def last_seqs_one_by_one(messages: MessageStore, rooms: Collection[str]) -> dict[str, int]:
    """`last_seqs` from `last_seq` calls: for a backend without a batched read yet (correct,
    but one round trip per room)."""
    out: dict[str, int] = {}
    for room in rooms:
        with contextlib.suppress(NotFound):
            out[room] = await messages.last_seq(room)
    return out


def _check_limit(limit: int) -> int:
    if limit < 0:
        raise ValueError(f"limit must be >= 0, not {limit}")
    return limit


def _not_now(batch: Sequence[NewMessage]) -> list[Appended] | None:
    """`append_now` of a backend that cannot commit without yielding: never now."""
    return None
