"""The SQLite backend: one writer thread (group commit), a few reader threads, WAL.

WAL lets readers work on a snapshot while the writer commits, so reads never wait for writes.
Every write goes through the single writer thread; the blocking jobs live in `_sqlite_accounts`,
`_sqlite_rooms` and `_sqlite_messages`, the connection set-up in `_sqlite_connection`.

Reads of an unknown room return nothing (None, [], False) rather than raise; only the calls whose
contract says so (`join_room`, `append_batch`, `last_seq`) raise `NotFound`.
"""

from __future__ import annotations

import enum
import os
import sqlite3
from collections.abc import Callable, Sequence
from functools import partial
from types import TracebackType
from typing import Self, TypeVar, TypeVarTuple

import trio

from protocol import Message

from . import _schema, _sqlite_accounts, _sqlite_messages, _sqlite_rooms, passwords
from ._sqlite_connection import (
    SYNCHRONOUS_MODES,
    connect,
    enforcing_foreign_keys,
    opening_errors,
    sqlite_errors,
)
from ._threads import ConnectionThread
from .interface import Appended, NewMessage, Room, StorageError, User

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

_MAX_SEQ = 2**63 - 1


class _State(enum.Enum):
    NEW = "new"
    OPEN = "open"
    CLOSED = "closed"


class SQLiteStore:
    """`storage.Store` on a SQLite file. Use `async with SQLiteStore(path) as store:`, or call
    `open()` and `aclose()`; the threads are not daemons, so a store left open keeps the
    process alive. One store per file: the writer's counters assume it is the only writer
    (another one's batches fail, then the counters reload, rather than corrupt numbering).

    `synchronous` is SQLite's durability setting: with FULL (the default) every committed batch
    survives a power cut. `readers` is the number of reader threads. `scrypt_n` is the scrypt
    cost of new password hashes (lower it only in tests).
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        synchronous: str = "FULL",
        readers: int = 2,
        scrypt_n: int = passwords.DEFAULT_N,
    ) -> None:
        if synchronous.upper() not in SYNCHRONOUS_MODES:
            raise ValueError(f"synchronous must be one of {sorted(SYNCHRONOUS_MODES)}")
        if readers < 1:
            raise ValueError("readers must be at least 1")
        passwords.check_cost(scrypt_n)
        self.path = os.fspath(path)
        self._synchronous = synchronous.upper()
        self._reader_count = readers
        self._scrypt_n = scrypt_n
        self._state = _State.NEW
        self._writer: ConnectionThread | None = None
        self._readers: list[ConnectionThread] = []
        self._cursors = _sqlite_messages.WriterCursors()
        self._kdf_limiter: trio.CapacityLimiter | None = None
        self._dummy_hash = ""

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
                for i in range(self._reader_count):
                    reader = ConnectionThread(
                        f"hibiki-sqlite-reader-{i}",
                        partial(connect, self.path, self._synchronous, writer=False),
                    )
                    self._readers.append(reader)
                    await reader.start()
            self._kdf_limiter = trio.CapacityLimiter(os.cpu_count() or 1)
            # check_password verifies unknown users against this, so both cases cost the same.
            self._dummy_hash = await self._kdf(
                partial(passwords.hash_password, passwords.new_token(), n=self._scrypt_n)
            )
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

    # Accounts -----------------------------------------------------------------------------
    async def create_user(self, name: str, password: str) -> User:
        encoded = await self._kdf(partial(passwords.hash_password, password, n=self._scrypt_n))
        return await self._write(_sqlite_accounts.create_user, name, encoded)

    async def check_password(self, name: str, password: str) -> User | None:
        found = await self._read(_sqlite_accounts.user_and_hash, name)
        encoded = found[1] if found is not None else self._dummy_hash
        matches = await self._kdf(passwords.verify_password, password, encoded)
        return found[0] if found is not None and matches else None

    async def create_token(self, user_id: int, ttl_seconds: float) -> str:
        token = passwords.new_token()
        ttl_ms = round(ttl_seconds * 1000)
        await self._write(
            _sqlite_accounts.create_token, passwords.token_hash(token), user_id, ttl_ms
        )
        return token

    async def user_for_token(self, token: str) -> User | None:
        return await self._read(_sqlite_accounts.user_for_token, passwords.token_hash(token))

    async def revoke_token(self, token: str) -> None:
        await self._write(_sqlite_accounts.revoke_token, passwords.token_hash(token))

    # Rooms and membership -----------------------------------------------------------------
    async def create_room(self, name: str, created_by: int) -> Room:
        return await self._write(_sqlite_rooms.create_room, name, created_by)

    async def get_room(self, name: str) -> Room | None:
        return await self._read(_sqlite_rooms.get_room, name)

    async def list_rooms(self, limit: int = 1000) -> list[Room]:
        return await self._read(_sqlite_rooms.list_rooms, _check_limit(limit))

    async def join_room(self, room: str, user_id: int) -> bool:
        return await self._write(_sqlite_rooms.join_room, room, user_id)

    async def leave_room(self, room: str, user_id: int) -> bool:
        return await self._write(_sqlite_rooms.leave_room, room, user_id)

    async def is_member(self, room: str, user_id: int) -> bool:
        return await self._read(_sqlite_rooms.is_member, room, user_id)

    async def rooms_of(self, user_id: int) -> list[str]:
        return await self._read(_sqlite_rooms.rooms_of, user_id)

    async def members(self, room: str) -> list[str]:
        return await self._read(_sqlite_rooms.members, room)

    # Messages -----------------------------------------------------------------------------
    async def append_batch(self, batch: Sequence[NewMessage]) -> list[Appended]:
        if not batch:
            await trio.lowlevel.checkpoint()
            return []
        # The one write without foreign-key enforcement: it checks its references itself.
        return await self._call(
            self._writer, _sqlite_messages.append_batch, self._cursors, tuple(batch)
        )

    async def history(
        self, room: str, before_seq: int | None, limit: int
    ) -> tuple[list[Message], bool]:
        before = _MAX_SEQ if before_seq is None else before_seq
        return await self._read(_sqlite_messages.history, room, before, _check_limit(limit))

    async def messages_after(self, room: str, after_seq: int, limit: int) -> list[Message]:
        return await self._read(
            _sqlite_messages.messages_after, room, after_seq, _check_limit(limit)
        )

    async def last_seq(self, room: str) -> int:
        return await self._read(_sqlite_rooms.last_seq, room)

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
                return await thread.run(fn, *args)
        except trio.ClosedResourceError as exc:
            raise StorageError("the store was closed") from exc

    async def _kdf(self, fn: Callable[[*Ts], T], *args: *Ts) -> T:
        # scrypt releases the GIL and takes ~16 MiB: run a few at a time, never on a DB thread.
        return await trio.to_thread.run_sync(fn, *args, limiter=self._kdf_limiter)


def _check_limit(limit: int) -> int:
    if limit < 0:
        raise ValueError(f"limit must be >= 0, not {limit}")
    return limit
