"""The SQLite backend: one writer thread (group commit), a few reader threads, WAL.

WAL lets readers work on a snapshot while the writer commits, so reads never wait for writes.
Every write goes through the single writer thread, which therefore owns the per-room sequence
counters and the next message id in memory and assigns them without reading them back.

Reads of an unknown room return nothing (None, [], False) rather than raise; only the calls whose
contract says so (`join_room`, `append_batch`, `last_seq`) raise `NotFound`.
"""

from __future__ import annotations

import contextlib
import enum
import os
import sqlite3
import time
from collections.abc import Callable, Iterator, Sequence
from functools import partial
from types import TracebackType
from typing import Any, Self, TypeVar, TypeVarTuple

import msgspec
import trio

from protocol import Message

from . import _schema, passwords
from ._threads import ConnectionThread
from .interface import Appended, Conflict, NewMessage, NotFound, Room, StorageError, User

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

SYNCHRONOUS_MODES = frozenset({"OFF", "NORMAL", "FULL", "EXTRA"})
BUSY_TIMEOUT_MS = 5_000
CACHE_KIB = 64 * 1024  # page cache per connection
# Checkpoint every ~40 MiB of WAL instead of SQLite's 4 MiB: each batch rewrites the tail pages
# of every busy room's indexes, so rarer checkpoints copy each hot page once, not every few
# batches (measured: ~+20% messages/s, about the same worst-case commit stall).
WAL_AUTOCHECKPOINT_PAGES = 10_000
WAL_SIZE_LIMIT = 64 * 1024 * 1024  # the WAL file is truncated back to this after a checkpoint
# Readers map the file (SQLite caps this at 2 GiB): a history page touches ~50 scattered table
# pages, and a mapped page costs a memory access where an unmapped one costs a pread() syscall
# (measured on 10M messages, the query alone: p99 0.5 ms -> 0.3 ms for a 50-message page).
READER_MMAP_BYTES = 2**31
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
        self._cursors = _WriterCursors()
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
            with _sqlite_errors():
                self._writer = ConnectionThread(
                    "hibiki-sqlite-writer", partial(_connect, self.path, self._synchronous, True)
                )
                await self._writer.start()
                await self._writer.run(_schema.migrate)
                for i in range(self._reader_count):
                    reader = ConnectionThread(
                        f"hibiki-sqlite-reader-{i}",
                        partial(_connect, self.path, self._synchronous, False),
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
        return await self._write(_create_user, name, encoded)

    async def check_password(self, name: str, password: str) -> User | None:
        found = await self._read(_user_and_hash, name)
        encoded = found[1] if found is not None else self._dummy_hash
        matches = await self._kdf(passwords.verify_password, password, encoded)
        return found[0] if found is not None and matches else None

    async def create_token(self, user_id: int, ttl_seconds: float) -> str:
        token = passwords.new_token()
        ttl_ms = round(ttl_seconds * 1000)
        await self._write(_create_token, passwords.token_hash(token), user_id, ttl_ms)
        return token

    async def user_for_token(self, token: str) -> User | None:
        return await self._read(_user_for_token, passwords.token_hash(token))

    async def revoke_token(self, token: str) -> None:
        await self._write(_revoke_token, passwords.token_hash(token))

    # Rooms and membership -----------------------------------------------------------------
    async def create_room(self, name: str, created_by: int) -> Room:
        return await self._write(_create_room, name, created_by)

    async def get_room(self, name: str) -> Room | None:
        return await self._read(_get_room, name)

    async def list_rooms(self, limit: int = 1000) -> list[Room]:
        return await self._read(_list_rooms, _check_limit(limit))

    async def join_room(self, room: str, user_id: int) -> bool:
        return await self._write(_join_room, room, user_id)

    async def leave_room(self, room: str, user_id: int) -> bool:
        return await self._write(_leave_room, room, user_id)

    async def is_member(self, room: str, user_id: int) -> bool:
        return await self._read(_is_member, room, user_id)

    async def rooms_of(self, user_id: int) -> list[str]:
        return await self._read(_rooms_of, user_id)

    async def members(self, room: str) -> list[str]:
        return await self._read(_members, room)

    # Messages -----------------------------------------------------------------------------
    async def append_batch(self, batch: Sequence[NewMessage]) -> list[Appended]:
        if not batch:
            await trio.lowlevel.checkpoint()
            return []
        return await self._write(_append_batch, self._cursors, tuple(batch))

    async def history(
        self, room: str, before_seq: int | None, limit: int
    ) -> tuple[list[Message], bool]:
        before = _MAX_SEQ if before_seq is None else before_seq
        return await self._read(_history, room, before, _check_limit(limit))

    async def messages_after(self, room: str, after_seq: int, limit: int) -> list[Message]:
        return await self._read(_messages_after, room, after_seq, _check_limit(limit))

    async def last_seq(self, room: str) -> int:
        return await self._read(_last_seq, room)

    # Plumbing -----------------------------------------------------------------------------
    async def _write(self, fn: Callable[[sqlite3.Connection, *Ts], T], *args: *Ts) -> T:
        return await self._call(self._writer, fn, *args)

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
            with _sqlite_errors():
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


@contextlib.contextmanager
def _sqlite_errors() -> Iterator[None]:
    """sqlite3 errors reaching the caller are ours (bugs, disk, corruption): say so by type."""
    try:
        yield
    except sqlite3.Error as exc:
        raise StorageError(f"{type(exc).__name__}: {exc}") from exc


def _connect(path: str, synchronous: str, writer: bool) -> sqlite3.Connection:
    conn = sqlite3.connect(path, isolation_level=None, cached_statements=64)
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS:d}")
        if writer:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode != "wal":
                raise StorageError(f"{path}: cannot use WAL (journal_mode is {mode})")
            conn.execute(f"PRAGMA wal_autocheckpoint = {WAL_AUTOCHECKPOINT_PAGES:d}")
            conn.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT:d}")
        conn.execute(f"PRAGMA synchronous = {synchronous}")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute(f"PRAGMA cache_size = {-CACHE_KIB:d}")
        if not writer:
            conn.execute("PRAGMA query_only = ON")
            conn.execute(f"PRAGMA mmap_size = {READER_MMAP_BYTES:d}")
    except BaseException:
        conn.close()
        raise
    return conn


@contextlib.contextmanager
def _transaction(conn: sqlite3.Connection) -> Iterator[None]:
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise


def _now_ms() -> int:
    return time.time_ns() // 1_000_000


def _constraint_error(exc: sqlite3.IntegrityError, taken: str) -> StorageError:
    if exc.sqlite_errorname in ("SQLITE_CONSTRAINT_UNIQUE", "SQLITE_CONSTRAINT_PRIMARYKEY"):
        return Conflict(f"{taken} is taken")
    if exc.sqlite_errorname == "SQLITE_CONSTRAINT_FOREIGNKEY":
        return NotFound("unknown user id")
    return StorageError(f"{type(exc).__name__}: {exc}")


# Blocking functions: each runs on a connection's own thread, never on the trio thread. --------


def _create_user(conn: sqlite3.Connection, name: str, password_hash: str) -> User:
    try:
        cur = conn.execute(
            "INSERT INTO users (name, password_hash, created_at) VALUES (?, ?, ?)",
            (name, password_hash, _now_ms()),
        )
    except sqlite3.IntegrityError as exc:
        raise _constraint_error(exc, f"user name {name!r}") from exc
    assert cur.lastrowid is not None
    return User(cur.lastrowid, name)


def _user_and_hash(conn: sqlite3.Connection, name: str) -> tuple[User, str] | None:
    row = conn.execute("SELECT id, name, password_hash FROM users WHERE name = ?", (name,))
    found = row.fetchone()
    return None if found is None else (User(found[0], found[1]), found[2])


def _create_token(conn: sqlite3.Connection, token_hash: str, user_id: int, ttl_ms: int) -> None:
    now = _now_ms()
    with _transaction(conn):
        # Expired tokens are useless: dropping the user's on each login keeps the table small.
        conn.execute("DELETE FROM tokens WHERE user_id = ? AND expires_at <= ?", (user_id, now))
        try:
            conn.execute(
                "INSERT INTO tokens (token_hash, user_id, expires_at) VALUES (?, ?, ?)",
                (token_hash, user_id, now + ttl_ms),
            )
        except sqlite3.IntegrityError as exc:
            raise _constraint_error(exc, "token") from exc


def _user_for_token(conn: sqlite3.Connection, token_hash: str) -> User | None:
    row = conn.execute(
        "SELECT u.id, u.name FROM tokens AS t JOIN users AS u ON u.id = t.user_id"
        " WHERE t.token_hash = ? AND t.expires_at > ?",
        (token_hash, _now_ms()),
    ).fetchone()
    return None if row is None else User(row[0], row[1])


def _revoke_token(conn: sqlite3.Connection, token_hash: str) -> None:
    conn.execute("DELETE FROM tokens WHERE token_hash = ?", (token_hash,))


def _create_room(conn: sqlite3.Connection, name: str, created_by: int) -> Room:
    now = _now_ms()
    with _transaction(conn):
        try:
            cur = conn.execute(
                "INSERT INTO rooms (name, created_by, created_at) VALUES (?, ?, ?)",
                (name, created_by, now),
            )
            conn.execute(
                "INSERT INTO memberships (room_id, user_id, joined_at) VALUES (?, ?, ?)",
                (cur.lastrowid, created_by, now),
            )
        except sqlite3.IntegrityError as exc:
            raise _constraint_error(exc, f"room name {name!r}") from exc
    assert cur.lastrowid is not None
    return Room(cur.lastrowid, name, created_by, 0)


_ROOM_COLUMNS = "id, name, created_by, last_seq"


def _get_room(conn: sqlite3.Connection, name: str) -> Room | None:
    row = conn.execute(f"SELECT {_ROOM_COLUMNS} FROM rooms WHERE name = ?", (name,)).fetchone()
    return None if row is None else Room(*row)


def _list_rooms(conn: sqlite3.Connection, limit: int) -> list[Room]:
    rows = conn.execute(f"SELECT {_ROOM_COLUMNS} FROM rooms ORDER BY name LIMIT ?", (limit,))
    return [Room(*row) for row in rows]


def _join_room(conn: sqlite3.Connection, room: str, user_id: int) -> bool:
    row = conn.execute("SELECT id FROM rooms WHERE name = ?", (room,)).fetchone()
    if row is None:
        raise NotFound(f"no room named {room!r}")
    try:
        cur = conn.execute(
            "INSERT OR IGNORE INTO memberships (room_id, user_id, joined_at) VALUES (?, ?, ?)",
            (row[0], user_id, _now_ms()),
        )
    except sqlite3.IntegrityError as exc:
        raise _constraint_error(exc, "membership") from exc
    return cur.rowcount == 1


def _leave_room(conn: sqlite3.Connection, room: str, user_id: int) -> bool:
    cur = conn.execute(
        "DELETE FROM memberships"
        " WHERE room_id = (SELECT id FROM rooms WHERE name = ?) AND user_id = ?",
        (room, user_id),
    )
    return cur.rowcount == 1


def _is_member(conn: sqlite3.Connection, room: str, user_id: int) -> bool:
    row = conn.execute(
        "SELECT 1 FROM memberships"
        " WHERE room_id = (SELECT id FROM rooms WHERE name = ?) AND user_id = ?",
        (room, user_id),
    ).fetchone()
    return row is not None


def _rooms_of(conn: sqlite3.Connection, user_id: int) -> list[str]:
    rows = conn.execute(
        "SELECT r.name FROM memberships AS m JOIN rooms AS r ON r.id = m.room_id"
        " WHERE m.user_id = ? ORDER BY r.name",
        (user_id,),
    )
    return [name for (name,) in rows]


def _members(conn: sqlite3.Connection, room: str) -> list[str]:
    rows = conn.execute(
        "SELECT u.name FROM memberships AS m JOIN users AS u ON u.id = m.user_id"
        " WHERE m.room_id = (SELECT id FROM rooms WHERE name = ?) ORDER BY u.name",
        (room,),
    )
    return [name for (name,) in rows]


def _last_seq(conn: sqlite3.Connection, room: str) -> int:
    row = conn.execute("SELECT last_seq FROM rooms WHERE name = ?", (room,)).fetchone()
    if row is None:
        raise NotFound(f"no room named {room!r}")
    last: int = row[0]
    return last


# Message columns in `Message` field order after `room`, so `Message(room, *row)` builds one.
_MESSAGE_COLUMNS = "id, seq, user_name, text, ts, client_id"
_ROOM_ID = "(SELECT id FROM rooms WHERE name = ?)"


def _history(
    conn: sqlite3.Connection, room: str, before_seq: int, limit: int
) -> tuple[list[Message], bool]:
    rows = conn.execute(
        f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE room_id = {_ROOM_ID} AND seq < ?"
        " ORDER BY seq DESC LIMIT ?",
        (room, before_seq, limit + 1),  # one more than asked: tells whether older ones exist
    ).fetchall()
    has_more = len(rows) > limit
    del rows[limit:]
    rows.reverse()
    return [Message(room, *row) for row in rows], has_more


def _messages_after(
    conn: sqlite3.Connection, room: str, after_seq: int, limit: int
) -> list[Message]:
    rows = conn.execute(
        f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE room_id = {_ROOM_ID} AND seq > ?"
        " ORDER BY seq LIMIT ?",
        (room, after_seq, limit),
    )
    return [Message(room, *row) for row in rows]


class _WriterCursors:
    """What the writer thread has assigned so far; only jobs running on that thread touch it.

    Loaded lazily from the database, and forgotten whenever a transaction rolls back, so the
    database stays the single source of truth.
    """

    __slots__ = ("last_id", "last_seqs", "room_ids")

    def __init__(self) -> None:
        self.room_ids: dict[str, int] = {}  # room name -> id; rooms are never renamed
        self.last_seqs: dict[int, int] = {}  # room id -> last seq assigned
        self.last_id: int | None = None

    def forget(self) -> None:
        self.room_ids.clear()
        self.last_seqs.clear()
        self.last_id = None

    def room_id(self, conn: sqlite3.Connection, name: str) -> int:
        room_id = self.room_ids.get(name)
        if room_id is None:
            row = conn.execute("SELECT id, last_seq FROM rooms WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise NotFound(f"no room named {name!r}")
            room_id = self.room_ids[name] = row[0]
            self.last_seqs[room_id] = row[1]
        return room_id


_INSERT_MESSAGE = (
    "INSERT INTO messages (id, room_id, seq, user_id, user_name, text, ts, client_id)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?)"
)
# One statement finds every stored duplicate of the batch: the keys go in as a JSON array of
# [room_id, user_id, client_id] and each probes the partial unique index.
_FIND_CLIENT_IDS = (
    "SELECT m.room_id, m.user_id, m.client_id, m.id, m.seq, m.user_name, m.text, m.ts"
    " FROM json_each(?) AS k CROSS JOIN messages AS m"
    " WHERE m.room_id = k.value ->> 0 AND m.user_id = k.value ->> 1"
    " AND m.client_id = k.value ->> 2"
)
_ClientKey = tuple[int, int, str]


def _append_batch(
    conn: sqlite3.Connection, cursors: _WriterCursors, batch: tuple[NewMessage, ...]
) -> list[Appended]:
    try:
        with _transaction(conn):
            return _append_in_transaction(conn, cursors, batch)
    except BaseException:
        cursors.forget()  # rolled back: what was assigned in memory never happened
        raise


def _append_in_transaction(
    conn: sqlite3.Connection, cursors: _WriterCursors, batch: tuple[NewMessage, ...]
) -> list[Appended]:
    room_ids = {name: cursors.room_id(conn, name) for name in {m.room for m in batch}}
    if cursors.last_id is None:
        cursors.last_id = conn.execute("SELECT coalesce(max(id), 0) FROM messages").fetchone()[0]
    numbering = _Numbering(cursors, room_ids, _now_ms())
    rows, results = numbering.number(batch, {})
    # Optimistic: inserting probes the client_id index anyway, so a separate duplicate lookup
    # would double that work for the rare re-sent message. A conflict undoes the inserts.
    conn.execute("SAVEPOINT optimistic")
    try:
        conn.executemany(_INSERT_MESSAGE, rows)
    except sqlite3.IntegrityError:
        conn.execute("ROLLBACK TO optimistic")
        numbering = _Numbering(cursors, room_ids, numbering.ts)
        rows, results = numbering.number(batch, _stored_duplicates(conn, batch, room_ids))
        conn.executemany(_INSERT_MESSAGE, rows)  # a second conflict is a bug: it propagates
    conn.execute("RELEASE optimistic")
    conn.executemany(
        "UPDATE rooms SET last_seq = ? WHERE id = ?",
        [(seq, room_id) for room_id, seq in numbering.last_seqs.items()],
    )
    cursors.last_seqs.update(numbering.last_seqs)
    cursors.last_id = numbering.last_id
    return results


class _Numbering:
    """Assigns ids and seqs to one batch, from the writer's counters, without touching them."""

    def __init__(self, cursors: _WriterCursors, room_ids: dict[str, int], ts: int) -> None:
        assert cursors.last_id is not None
        self.room_ids = room_ids
        self.last_seqs = {room_id: cursors.last_seqs[room_id] for room_id in room_ids.values()}
        self.last_id = cursors.last_id
        self.ts = ts

    def number(
        self, batch: tuple[NewMessage, ...], seen: dict[_ClientKey, Message]
    ) -> tuple[list[tuple[Any, ...]], list[Appended]]:
        """Rows to insert and the results; `seen` maps client keys to messages already stored."""
        room_ids, last_seqs, ts = self.room_ids, self.last_seqs, self.ts
        last_id = self.last_id
        rows: list[tuple[Any, ...]] = []
        results: list[Appended] = []
        for m in batch:
            room_id = room_ids[m.room]
            client_id = m.client_id
            if client_id is not None:
                key = (room_id, m.user_id, client_id)
                original = seen.get(key)
                if original is not None:
                    results.append(Appended(original, True))
                    continue
            last_id += 1
            seq = last_seqs[room_id] = last_seqs[room_id] + 1
            rows.append((last_id, room_id, seq, m.user_id, m.user_name, m.text, ts, client_id))
            message = Message(m.room, last_id, seq, m.user_name, m.text, ts, client_id)
            if client_id is not None:
                seen[key] = message
            results.append(Appended(message, False))
        self.last_id = last_id
        return rows, results


def _stored_duplicates(
    conn: sqlite3.Connection, batch: tuple[NewMessage, ...], room_ids: dict[str, int]
) -> dict[_ClientKey, Message]:
    keys = [(room_ids[m.room], m.user_id, m.client_id) for m in batch if m.client_id is not None]
    if not keys:
        return {}
    names = {room_id: name for name, room_id in room_ids.items()}
    rows = conn.execute(_FIND_CLIENT_IDS, (msgspec.json.encode(keys).decode(),))
    return {
        (room_id, user_id, client_id): Message(
            names[room_id], id_, seq, user_name, text, ts, client_id
        )
        for room_id, user_id, client_id, id_, seq, user_name, text, ts in rows
    }
