"""The SQLite backend: one writer thread (group commit), a few reader threads, WAL.

WAL lets readers work on a snapshot while the writer commits, so reads never wait for writes.
Every write goes through the single writer thread; the blocking jobs live in `_accounts`,
`_rooms` and `_messages`, the connection set-up in `_connection`. The store holds rows only:
`storage.open_store` puts the account policy and the shared checks in front of it.

Reads of an unknown room return nothing (None, [], False) rather than raise; only the calls whose
contract says so (`join_room`, `append_batch`, `last_seq`) raise `NotFound`.
"""

from __future__ import annotations

import enum
import os
import sqlite3
from collections.abc import Callable, Collection, Mapping, Sequence
from functools import partial
from types import TracebackType
from typing import Self, TypeVar, TypeVarTuple

import trio

from protocol import Message, RoomEntry
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
from storage.sqlite import _accounts as _sqlite_accounts
from storage.sqlite import _events as _sqlite_events
from storage.sqlite import _messages as _sqlite_messages
from storage.sqlite import _reads as _sqlite_reads
from storage.sqlite import _room_admin as _sqlite_admin
from storage.sqlite import _rooms as _sqlite_rooms
from storage.sqlite import _schema
from storage.sqlite import _search as _sqlite_search
from storage.sqlite._appends import Appends
from storage.sqlite._connection import (
    SYNCHRONOUS_MODES,
    connect,
    enforcing_foreign_keys,
    opening_errors,
    sqlite_errors,
)
from storage.sqlite._loop_commit import SLOW_COMMIT_S, BusyTimeout, CheckpointSchedule, LoopCommits
from storage.sqlite._probe import probe_write
from storage.sqlite._threads import ConnectionThread

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

_MAX_SEQ = 2**63 - 1


class _State(enum.Enum):
    NEW = "new"
    OPEN = "open"
    CLOSED = "closed"


class SQLiteStore:
    """`storage.Backend` on a SQLite file: `storage.open_store(path)` makes a `Store` of it.
    Use `async with`, or call `open()` and `aclose()`; the threads are not daemons, so a store
    left open keeps the process alive. Several stores, in one process or several (`hibiki serve
    --workers N`), may share a file: each batch numbers its messages from what is committed,
    inside its write transaction, and a lock held past the busy timeout is a `StorageError`.

    `synchronous` is SQLite's durability setting: with FULL (the default) every committed batch
    survives a power cut. `readers` is the number of reader threads. `loop_commit(_stall)`:
    see `_loop_commit` (a small lone batch may commit on the event loop).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: str = "FULL",
        readers: int = 2,
        loop_commit: bool = True,
        loop_commit_stall: float = SLOW_COMMIT_S,
    ) -> None:
        if synchronous.upper() not in SYNCHRONOUS_MODES:
            raise ValueError(f"synchronous must be one of {sorted(SYNCHRONOUS_MODES)}")
        if readers < 1:
            raise ValueError("readers must be at least 1")
        self.path = os.fspath(path)
        self._synchronous = synchronous.upper()
        self._reader_count = readers
        self._state = _State.NEW
        self._writer: ConnectionThread | None = None
        self._readers: list[ConnectionThread] = []
        self._cursors = _sqlite_messages.WriterCursors()
        self.commits = LoopCommits(enabled=loop_commit, stall=loop_commit_stall)  # /metrics
        self.checkpoints = CheckpointSchedule()
        self._busy = BusyTimeout()
        self._appends: Appends | None = None  # once the writer runs

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
            with opening_errors(self.path):
                self._writer = ConnectionThread(
                    "hibiki-sqlite-writer",
                    partial(connect, self.path, self._synchronous, writer=True),
                )
                await self._writer.start()
                await self._writer.run(_schema.migrate)
                self._appends = Appends(
                    self._writer, self.commits, self.checkpoints, self._busy, self._cursors
                )
                for i in range(self._reader_count):
                    reader = ConnectionThread(
                        f"hibiki-sqlite-reader-{i}",
                        partial(connect, self.path, self._synchronous, writer=False),
                    )
                    self._readers.append(reader)
                    await reader.start()
        except BaseException:
            await self.aclose()
            raise

    async def aclose(self) -> None:
        if self._state is _State.CLOSED:
            return
        self._state = _State.CLOSED
        with trio.CancelScope(shield=True):
            for reader in self._readers:
                await reader.aclose()
            if self._writer is not None:
                await self._writer.aclose()  # after the jobs already queued, e.g. a last batch

    async def probe(self, busy_timeout: float) -> str | None:
        # A fresh connection on a worker thread: never queued behind the writer's batches.
        return await trio.to_thread.run_sync(probe_write, self.path, busy_timeout)

    # Account rows -------------------------------------------------------------------------
    async def insert_user(self, name: str, password_hash: str) -> User:
        return await self._write(_sqlite_accounts.insert_user, name, password_hash)

    async def password_hash_of(self, name: str) -> tuple[User, str] | None:
        return await self._read(_sqlite_accounts.password_hash_of, name)

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
            _sqlite_accounts.insert_token,
            user_id,
            token_hash,
            expires_at_ms,
            now_ms,
            session_id,
            device,
        )

    async def token_record(self, token_hash: str) -> tuple[User, int] | None:
        return await self._read(_sqlite_accounts.token_record, token_hash)

    async def delete_token(self, token_hash: str) -> None:
        await self._write(_sqlite_accounts.delete_token, token_hash)

    async def session_rows(self, user_id: int, now_ms: int) -> list[Session]:
        return await self._read(_sqlite_accounts.session_rows, user_id, now_ms)

    async def delete_sessions(
        self, user_id: int, session_id: str | None, keep_hash: str | None
    ) -> list[str]:
        return await self._write(_sqlite_accounts.delete_sessions, user_id, session_id, keep_hash)

    async def replace_password(
        self, user_id: int, password_hash: str, keep_hash: str | None
    ) -> list[str]:
        return await self._write(
            _sqlite_accounts.replace_password, user_id, password_hash, keep_hash
        )

    async def update_display_name(self, user_id: int, display_name: str | None) -> None:
        await self._write(_sqlite_accounts.update_display_name, user_id, display_name)

    async def profile_row(self, name: str) -> Profile | None:
        return await self._read(_sqlite_accounts.profile_row, name)

    async def touch(self, sessions: Mapping[str, int], users: Mapping[int, int]) -> None:
        await self._write(_sqlite_accounts.touch, dict(sessions), dict(users))

    # Rooms and membership -----------------------------------------------------------------
    async def get_room(self, name: str) -> Room | None:
        return await self._read(_sqlite_rooms.get_room, name)

    async def list_rooms(self, limit: int = 1000) -> list[Room]:
        return await self._read(_sqlite_rooms.list_rooms, limit)

    async def leave_room(self, room: str, user_id: int) -> bool:
        return await self._write(_sqlite_rooms.leave_room, room, user_id)

    async def is_member(self, room: str, user_id: int) -> bool:
        return await self._read(_sqlite_rooms.is_member, room, user_id)

    async def rooms_of(self, user_id: int) -> list[str]:
        return await self._read(_sqlite_rooms.rooms_of, user_id)

    async def members(self, room: str) -> list[str]:
        return await self._read(_sqlite_rooms.members, room)

    async def mark_read(self, room: str, user_id: int, seq: int) -> int:
        return await self._write(_sqlite_reads.mark_read, room, user_id, seq)

    async def read_cursors(self, user_id: int) -> dict[str, int]:
        return await self._read(_sqlite_reads.read_cursors, user_id)

    # Room administration (storage/room_admin.py) ------------------------------------------
    async def create_room(
        self, name: str, created_by: int, private: bool = False, topic: str = ""
    ) -> Room:
        return await self._write(_sqlite_rooms.create_room, name, created_by, private, topic)

    async def join_room(self, room: str, user_id: int) -> bool:
        return await self._write(_sqlite_rooms.join_room, room, user_id)

    async def add_member(self, room: str, user_id: int) -> bool:
        return await self._write(_sqlite_admin.add_member, room, user_id)

    async def update_room(self, room: str, topic: str | None, slow_mode: int | None) -> Room | None:
        return await self._write(_sqlite_admin.update_room, room, topic, slow_mode)

    async def role_of(self, room: str, user_id: int) -> str | None:
        return await self._read(_sqlite_admin.role_of, room, user_id)

    async def roles_of(self, user_id: int) -> dict[str, str]:
        return await self._read(_sqlite_admin.roles_of, user_id)

    async def member_roles(self, room: str) -> list[Member]:
        return await self._read(_sqlite_admin.member_roles, room)

    async def set_role(self, room: str, user_id: int, role: str) -> bool:
        return await self._write(_sqlite_admin.set_role, room, user_id, role)

    async def transfer_owner(self, room: str, from_id: int, to_id: int) -> bool:
        return await self._write(_sqlite_admin.transfer_owner, room, from_id, to_id)

    async def ban(self, room: str, user_id: int, by: int) -> bool:
        return await self._write(_sqlite_admin.ban, room, user_id, by)

    async def unban(self, room: str, user_id: int) -> bool:
        return await self._write(_sqlite_admin.unban, room, user_id)

    # Messages -----------------------------------------------------------------------------
    async def append_batch(self, batch: Sequence[NewMessage]) -> list[Appended]:
        if not batch:
            await trio.lowlevel.checkpoint()
            return []
        appends = self._open_appends()
        messages = tuple(batch)  # the one write without foreign-key checks: it checks itself
        await trio.lowlevel.checkpoint_if_cancelled()  # (else the thread's wait is the yield)
        here = appends.now(messages)
        return here if here is not None else await appends.on_thread(messages)

    def append_now(self, batch: Sequence[NewMessage]) -> list[Appended] | None:
        """`append_batch` without yielding, if it may commit on the loop now (else None: call
        `append_batch`): the writer commits a lone send in its reader's turn with it."""
        if self._state is not _State.OPEN or self._appends is None:
            return None
        return self._appends.now(tuple(batch))

    def _open_appends(self) -> Appends:
        if self._state is not _State.OPEN or self._appends is None:
            raise StorageError(f"the store is {self._state.value}, not open")
        return self._appends

    async def history(
        self, room: str, before_seq: int | None, limit: int
    ) -> tuple[list[Message], bool]:
        before = _MAX_SEQ if before_seq is None else before_seq
        return await self._read(_sqlite_messages.history, room, before, limit)

    async def messages_after(self, room: str, after_seq: int, limit: int) -> list[RoomEntry]:
        return await self._read(_sqlite_messages.messages_after, room, after_seq, limit)

    async def message(self, room: str, message_id: int) -> Message | None:
        return await self._read(_sqlite_messages.message, room, message_id)

    async def last_seq(self, room: str) -> int:
        return await self._read(_sqlite_rooms.last_seq, room)

    async def last_seqs(self, rooms: Collection[str]) -> dict[str, int]:
        if not rooms:
            return {}
        return await self._read(_sqlite_rooms.last_seqs, tuple(rooms))

    async def unread_count(self, room: str, read_seq: int, last_seq: int, user_id: int) -> int:
        return await self._read(_sqlite_reads.unread_count, room, read_seq, last_seq, user_id)

    async def search(
        self, rooms: Collection[str], words: Sequence[str], before_id: int, limit: int
    ) -> tuple[list[Message], bool]:
        if not rooms or not words:
            return [], False
        if await self._read(_sqlite_search.behind):  # read your writes: index them first
            await self._call(self._writer, _sqlite_search.index_pending, _sqlite_search.INDEX_BATCH)
        return await self._read(_sqlite_search.search, list(rooms), list(words), before_id, limit)

    async def index_search(self) -> int:
        """Index what committed since the last call, a batch per write transaction (none,
        and no write lock taken, when nothing is pending)."""
        moved = 0
        if not await self._read(_sqlite_search.behind):
            return 0
        while step := await self._call(self._writer, _sqlite_search.index_pending):
            moved += step
        return moved

    # The event stream's outbox -------------------------------------------------------------
    async def messages_since_id(self, after_id: int, limit: int) -> list[Message]:
        return await self._read(_sqlite_events.messages_since_id, after_id, limit)

    async def last_message_id(self) -> int:
        return await self._read(_sqlite_events.last_message_id)

    async def event_cursors(self) -> dict[int, int]:
        return await self._read(_sqlite_events.event_cursors)

    async def advance_event_cursors(self, cursors: Mapping[int, int]) -> None:
        await self._write(_sqlite_events.advance_event_cursors, dict(cursors))

    async def messages_for_stream(
        self, gaps: Sequence[tuple[int, int]], after_id: int, limit: int
    ) -> StreamRead:
        return await self._read(_sqlite_events.messages_for_stream, list(gaps), after_id, limit)

    def appender_lease(self) -> AppenderLease:
        return _sqlite_events.FileLease(self.path)

    # Plumbing -----------------------------------------------------------------------------
    async def _write(self, fn: Callable[[sqlite3.Connection, *Ts], T], *args: *Ts) -> T:
        return await self._call(self._writer, enforcing_foreign_keys(fn), *args)

    async def _read(self, fn: Callable[[sqlite3.Connection, *Ts], T], *args: *Ts) -> T:
        idlest = min(self._readers, key=lambda r: r.pending) if self._readers else None
        return await self._call(idlest, fn, *args)

    async def _call(
        self,
        thread: ConnectionThread | None,
        fn: Callable[[sqlite3.Connection, *Ts], T],
        *args: *Ts,
    ) -> T:
        if self._state is not _State.OPEN or thread is None:
            raise StorageError(f"the store is {self._state.value}, not open")
        try:
            with sqlite_errors():
                if thread is self._writer:
                    return await thread.run(self._busy.waiting(fn), *args)
                return await thread.run(fn, *args)
        except trio.ClosedResourceError as exc:
            raise StorageError("the store was closed") from exc
