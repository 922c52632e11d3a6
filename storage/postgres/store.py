"""The PostgreSQL backend: blocking psycopg jobs on worker threads over one connection pool.

Several stores, in several processes on several hosts, may share one database: every write is
a transaction that takes the row locks it needs (a batch locks its rooms in id order), so
nothing here trusts memory for seq or id. The blocking jobs live in `_accounts`, `_rooms` and
`_messages`, the threads and pool in `_threads`, the schema in `_schema` and `_upgrade`. The
store holds rows only: `storage.open_store` puts the account policy and the shared checks in
front of it.

Reads of an unknown room return nothing (None, [], False) rather than raise; only the calls whose
contract says so (`join_room`, `append_batch`, `last_seq`) raise `NotFound`.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Collection, Mapping, Sequence
from types import TracebackType
from typing import Self, TypeVar, TypeVarTuple

import trio

from protocol import Message, RoomEntry
from storage.postgres import _accounts as _pg_accounts
from storage.postgres import _events as _pg_events
from storage.postgres import _messages as _pg_messages
from storage.postgres import _reads as _pg_reads
from storage.postgres import _room_admin as _pg_admin
from storage.postgres import _rooms as _pg_rooms
from storage.postgres import _search as _pg_search
from storage.postgres._connection import Connection, Settings, postgres_errors
from storage.postgres._probe import probe_write
from storage.postgres._threads import PoolThreads
from storage.postgres._upgrade import migrate
from storage.protocols import (
    Appended,
    AppenderLease,
    NewMessage,
    Profile,
    Room,
    Session,
    StorageError,
    StreamRead,
    User,
)
from storage.room_admin import Member

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

_MAX_SEQ = 2**63 - 1


class _State(enum.Enum):
    NEW = "new"
    OPEN = "open"
    CLOSED = "closed"


class PostgresStore:
    """`storage.Backend` on a PostgreSQL database: `storage.open_store(url)` makes a `Store`.

    `pool_size` connections (one worker thread each at most), `statement_timeout` seconds per
    query, and `synchronous_commit` (on by default: a returned batch is flushed to the WAL).
    Use `async with`, or `open()` then `aclose()`.
    """

    def __init__(
        self,
        url: str,
        *,
        pool_size: int = 10,
        statement_timeout: float = 10.0,
        synchronous_commit: str = "on",
    ) -> None:
        self.settings = Settings(url, pool_size, statement_timeout, synchronous_commit)
        self._state = _State.NEW
        self._threads = PoolThreads(self.settings)
        self._known_users = _pg_messages.KnownUsers()

    @property
    def target(self) -> str:
        """host:port/database, never the password."""
        return self.settings.target

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

    async def open(self) -> None:
        if self._state is not _State.NEW:
            raise StorageError(f"a store can be opened once; this one is {self._state.value}")
        self._state = _State.OPEN
        try:
            await trio.to_thread.run_sync(self._migrate)
            await self._threads.open()
        except BaseException:
            await self.aclose()
            raise

    def _migrate(self) -> None:
        with postgres_errors(self.settings.url), self.settings.connect() as conn:
            # Unbounded: waiting for another node's migration, or a long one, is not a hang.
            conn.execute("SET statement_timeout = 0")
            migrate(conn)

    async def aclose(self) -> None:
        if self._state is _State.CLOSED:
            return
        self._state = _State.CLOSED
        await self._threads.aclose()

    async def probe(self, busy_timeout: float) -> str | None:
        return await trio.to_thread.run_sync(
            probe_write, self.settings, busy_timeout, abandon_on_cancel=True
        )

    # Account rows -------------------------------------------------------------------------
    async def insert_user(self, name: str, password_hash: str) -> User:
        return await self._write(_pg_accounts.insert_user, name, password_hash)

    async def password_hash_of(self, name: str) -> tuple[User, str] | None:
        return await self._read(_pg_accounts.password_hash_of, name)

    async def insert_token(
        self,
        user_id: int,
        token_hash: str,
        expires_at_ms: int,
        now_ms: int,
        session_id: str,
        device: str,
    ) -> None:
        await self._write(
            _pg_accounts.insert_token,
            user_id,
            token_hash,
            expires_at_ms,
            now_ms,
            session_id,
            device,
        )

    async def token_record(self, token_hash: str) -> tuple[User, int] | None:
        return await self._read(_pg_accounts.token_record, token_hash)

    async def delete_token(self, token_hash: str) -> None:
        await self._write(_pg_accounts.delete_token, token_hash)

    async def session_rows(self, user_id: int, now_ms: int) -> list[Session]:
        return await self._read(_pg_accounts.session_rows, user_id, now_ms)

    async def delete_sessions(
        self, user_id: int, session_id: str | None, keep_hash: str | None
    ) -> list[str]:
        return await self._write(_pg_accounts.delete_sessions, user_id, session_id, keep_hash)

    async def replace_password(
        self, user_id: int, password_hash: str, keep_hash: str | None
    ) -> list[str]:
        return await self._write(_pg_accounts.replace_password, user_id, password_hash, keep_hash)

    async def update_display_name(self, user_id: int, display_name: str | None) -> None:
        await self._write(_pg_accounts.update_display_name, user_id, display_name)

    async def profile_row(self, name: str) -> Profile | None:
        return await self._read(_pg_accounts.profile_row, name)

    async def touch(self, sessions: Mapping[str, int], users: Mapping[int, int]) -> None:
        await self._write(_pg_accounts.touch, dict(sessions), dict(users))

    # Rooms and membership -----------------------------------------------------------------
    async def get_room(self, name: str) -> Room | None:
        return await self._read(_pg_rooms.get_room, name)

    async def list_rooms(self, limit: int = 1000) -> list[Room]:
        return await self._read(_pg_rooms.list_rooms, limit)

    async def leave_room(self, room: str, user_id: int) -> bool:
        return await self._write(_pg_rooms.leave_room, room, user_id)

    async def is_member(self, room: str, user_id: int) -> bool:
        return await self._read(_pg_rooms.is_member, room, user_id)

    async def rooms_of(self, user_id: int) -> list[str]:
        return await self._read(_pg_rooms.rooms_of, user_id)

    async def members(self, room: str) -> list[str]:
        return await self._read(_pg_rooms.members, room)

    async def mark_read(self, room: str, user_id: int, seq: int) -> int:
        return await self._write(_pg_reads.mark_read, room, user_id, seq)

    async def read_cursors(self, user_id: int) -> dict[str, int]:
        return await self._read(_pg_reads.read_cursors, user_id)

    # Room administration (storage/room_admin.py) ------------------------------------------
    async def create_room(
        self, name: str, created_by: int, private: bool = False, topic: str = ""
    ) -> Room:
        return await self._write(_pg_rooms.create_room, name, created_by, private, topic)

    async def join_room(self, room: str, user_id: int) -> bool:
        return await self._write(_pg_rooms.join_room, room, user_id)

    async def add_member(self, room: str, user_id: int) -> bool:
        return await self._write(_pg_admin.add_member, room, user_id)

    async def update_room(self, room: str, topic: str | None, slow_mode: int | None) -> Room | None:
        return await self._write(_pg_admin.update_room, room, topic, slow_mode)

    async def role_of(self, room: str, user_id: int) -> str | None:
        return await self._read(_pg_admin.role_of, room, user_id)

    async def roles_of(self, user_id: int) -> dict[str, str]:
        return await self._read(_pg_admin.roles_of, user_id)

    async def member_roles(self, room: str) -> list[Member]:
        return await self._read(_pg_admin.member_roles, room)

    async def set_role(self, room: str, user_id: int, role: str) -> bool:
        return await self._write(_pg_admin.set_role, room, user_id, role)

    async def transfer_owner(self, room: str, from_id: int, to_id: int) -> bool:
        return await self._write(_pg_admin.transfer_owner, room, from_id, to_id)

    async def ban(self, room: str, user_id: int, by: int) -> bool:
        return await self._write(_pg_admin.ban, room, user_id, by)

    async def unban(self, room: str, user_id: int) -> bool:
        return await self._write(_pg_admin.unban, room, user_id)

    # Messages -----------------------------------------------------------------------------
    async def append_batch(self, batch: Sequence[NewMessage]) -> list[Appended]:
        if not batch:
            await trio.lowlevel.checkpoint()
            return []
        return await self._write(_pg_messages.append_batch, self._known_users, tuple(batch))

    async def history(
        self, room: str, before_seq: int | None, limit: int
    ) -> tuple[list[Message], bool]:
        before = _MAX_SEQ if before_seq is None else before_seq
        return await self._read(_pg_messages.history, room, before, limit)

    async def messages_after(self, room: str, after_seq: int, limit: int) -> list[RoomEntry]:
        return await self._read(_pg_messages.messages_after, room, after_seq, limit)

    async def message(self, room: str, message_id: int) -> Message | None:
        return await self._read(_pg_messages.message, room, message_id)

    async def last_seq(self, room: str) -> int:
        return await self._read(_pg_rooms.last_seq, room)

    async def last_seqs(self, rooms: Collection[str]) -> dict[str, int]:
        if not rooms:
            return {}
        return await self._read(_pg_rooms.last_seqs, list(rooms))

    async def unread_count(self, room: str, read_seq: int, last_seq: int, user_id: int) -> int:
        return await self._read(_pg_reads.unread_count, room, read_seq, last_seq, user_id)

    async def search(
        self, rooms: Collection[str], words: Sequence[str], before_id: int, limit: int
    ) -> tuple[list[Message], bool]:
        if not rooms or not words:
            return [], False
        return await self._read(_pg_search.search, list(rooms), list(words), before_id, limit)

    async def index_search(self) -> int:
        await trio.lowlevel.checkpoint()
        return 0  # the GIN index is part of every commit

    # The event stream's outbox -------------------------------------------------------------
    async def messages_since_id(self, after_id: int, limit: int) -> list[Message]:
        return await self._read(_pg_events.messages_since_id, after_id, limit)

    async def last_message_id(self) -> int:
        return await self._read(_pg_events.last_message_id)

    async def event_cursors(self) -> dict[int, int]:
        return await self._read(_pg_events.event_cursors)

    async def advance_event_cursors(self, cursors: Mapping[int, int]) -> None:
        await self._write(_pg_events.advance_event_cursors, dict(cursors))

    async def messages_for_stream(
        self, gaps: Sequence[tuple[int, int]], after_id: int, limit: int
    ) -> StreamRead:
        return await self._read(_pg_events.messages_for_stream, list(gaps), after_id, limit)

    def appender_lease(self) -> AppenderLease:
        return _pg_events.AdvisoryLease(self.settings)

    # Plumbing -----------------------------------------------------------------------------
    def _check_open(self) -> None:
        if self._state is not _State.OPEN:
            raise StorageError(f"the store is {self._state.value}, not open")

    async def _write(self, fn: Callable[[Connection, *Ts], T], *args: *Ts) -> T:
        self._check_open()
        return await self._threads.write(fn, *args)

    async def _read(self, fn: Callable[[Connection, *Ts], T], *args: *Ts) -> T:
        self._check_open()
        return await self._threads.read(fn, *args)
