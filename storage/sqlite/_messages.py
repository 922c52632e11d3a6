"""Blocking jobs for messages: the writer's group-commit append, and the readers' pages.

Every write of this store goes through its writer thread, but other processes may write the same
file (`hibiki serve --workers N`): each batch therefore takes its seqs and ids from the file inside
its `BEGIN IMMEDIATE` transaction, which holds the file's write lock, so two writers never give out
the same seq or id. Nothing about them is remembered between batches, so there is nothing to
re-read: one `UPDATE rooms` per batch raises each room's counter (read back in the same
transaction) and SQLite numbers the rows (the largest id + 1). A one-message batch is five
statements: BEGIN IMMEDIATE, that UPDATE, its SELECT, the INSERT, COMMIT. An edit or delete is
a row too, with its own seq and id; the same transaction then applies it to its target
(`_apply_changes`).

The append runs with foreign keys OFF (the writer connection's default, see `connect`): the
checks cost two B-tree lookups per row, ~10% of the append (measured). Both references are
checked here instead, once per batch rather than per row: room ids come from the writer's own
lookup by name, and the batch's distinct user ids are looked up unless already known. Nothing
deletes users or rooms, so a known id stays valid.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from typing import Any

import msgspec

from protocol import Message, RoomEntry
from storage.entries import ENTRY_COLUMNS, entry, entry_from_row, message_from_row
from storage.protocols import KIND_DELETE, KIND_EDIT, Appended, NewMessage, NotFound, StorageError
from storage.sqlite._connection import now_ms, transaction

_ROOM_ID = "(SELECT id FROM rooms WHERE name = ?)"
# Bounds the writer's memory of user ids known to exist (~60 bytes each); past it, it restarts.
KNOWN_USERS_LIMIT = 100_000


def history(
    conn: sqlite3.Connection, room: str, before_seq: int, limit: int
) -> tuple[list[Message], bool]:
    rows = conn.execute(
        f"SELECT {ENTRY_COLUMNS} FROM messages WHERE room_id = {_ROOM_ID} AND seq < ?"
        " AND kind = 0 ORDER BY seq DESC LIMIT ?",
        (room, before_seq, limit + 1),  # one more than asked: tells whether older ones exist
    ).fetchall()
    has_more = len(rows) > limit
    del rows[limit:]
    rows.reverse()
    return [message_from_row(room, row) for row in rows], has_more


def messages_after(
    conn: sqlite3.Connection, room: str, after_seq: int, limit: int
) -> list[RoomEntry]:
    rows = conn.execute(
        f"SELECT {ENTRY_COLUMNS} FROM messages WHERE room_id = {_ROOM_ID} AND seq > ?"
        " ORDER BY seq LIMIT ?",
        (room, after_seq, limit),
    )
    return [entry_from_row(room, row) for row in rows]


def message(conn: sqlite3.Connection, room: str, message_id: int) -> Message | None:
    row = conn.execute(
        f"SELECT {ENTRY_COLUMNS} FROM messages WHERE id = ? AND room_id = {_ROOM_ID} AND kind = 0",
        (message_id, room),
    ).fetchone()
    return None if row is None else message_from_row(room, row)


class WriterCursors:
    """What the writer thread remembers of the database; only jobs on that thread touch it.

    Room ids and known users only: neither is ever renamed or deleted, so another process's
    writes cannot make them stale. Seqs and ids are never remembered: each batch takes them from
    the file inside its write transaction (`_reserve_seqs`, SQLite's next rowid). Forgotten
    whenever a batch fails (a client_id conflict, retried, is not a failure).
    """

    __slots__ = ("_cursor", "room_ids", "user_ids")

    def __init__(self) -> None:
        self.room_ids: dict[str, int] = {}  # room name -> id; rooms are never renamed
        self.user_ids: set[int] = set()  # users known to exist (none is ever deleted)
        self._cursor: sqlite3.Cursor | None = None

    def statements(self, conn: sqlite3.Connection) -> sqlite3.Cursor:
        """One cursor of `conn` for the one-message append's five statements, where
        `conn.execute` makes and frees a cursor for each (~6.7k instructions a batch)."""
        cursor = self._cursor
        if cursor is None or cursor.connection is not conn:
            cursor = self._cursor = conn.cursor()
        return cursor

    def forget(self) -> None:
        self.room_ids.clear()
        self.user_ids.clear()

    def room_id(self, conn: sqlite3.Connection, name: str) -> int:
        room_id = self.room_ids.get(name)
        if room_id is None:
            row = conn.execute("SELECT id FROM rooms WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise NotFound(f"no room named {name!r}")
            room_id = self.room_ids[name] = row[0]
        return room_id

    def check_users(self, conn: sqlite3.Connection, user_ids: set[int]) -> None:
        """Raise `StorageError` unless every id is a stored user: what the foreign key did."""
        unknown = user_ids - self.user_ids
        if not unknown:
            return
        found = {
            user_id
            for (user_id,) in conn.execute(
                "SELECT id FROM users WHERE id IN (SELECT value FROM json_each(?))",
                (msgspec.json.encode(sorted(unknown)).decode(),),
            )
        }
        if missing := unknown - found:
            raise StorageError(f"unknown user id {min(missing)} in a batch")
        if len(self.user_ids) + len(found) > KNOWN_USERS_LIMIT:
            self.user_ids.clear()
        self.user_ids |= found


# The id is left to SQLite: the largest rowid + 1, and under the write lock nobody else
# inserts, so a batch's rows get consecutive ids, in order, ending at the last insert's rowid.
_INSERT_MESSAGE = (
    "INSERT INTO messages (room_id, seq, user_id, user_name, text, ts, client_id, kind, target)"
    " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)"
)
# A room's counter raised by the batch's count; what it then holds, less that count, is the
# last seq before the batch, as committed by whichever writer wrote last (any process). Read
# back by a SELECT in the same transaction rather than by RETURNING, which buffers its row in
# an ephemeral table (a temporary B-tree opened and closed per statement): ~15k instructions
# more per one-message batch (callgrind).
_RAISE_ONE_ROOM = "UPDATE rooms SET last_seq = last_seq + ? WHERE id = ?"
_LAST_SEQ = "SELECT last_seq FROM rooms WHERE id = ?"
_RESERVE_ROOMS = (
    "UPDATE rooms SET last_seq = last_seq + c.value ->> 1 FROM json_each(?) AS c"
    " WHERE rooms.id = c.value ->> 0 RETURNING rooms.id, rooms.last_seq"
)
# One statement finds every stored duplicate of the batch: the keys go in as a JSON array of
# [room_id, user_id, client_id] and each probes the partial unique index.
_FIND_CLIENT_IDS = (
    "SELECT m.room_id, m.user_id, m.client_id, m.id, m.seq, m.user_name, m.text, m.ts, m.kind,"
    " m.target FROM json_each(?) AS k CROSS JOIN messages AS m"
    " WHERE m.client_id = k.value ->> 2 AND m.room_id = k.value ->> 0"
    " AND m.user_id = k.value ->> 1"
)
_ClientKey = tuple[int, int, str]
_Executes = sqlite3.Connection | sqlite3.Cursor  # what runs a statement: both have `execute`


def append_batch(
    conn: sqlite3.Connection, cursors: WriterCursors, batch: tuple[NewMessage, ...]
) -> list[Appended]:
    """The `Store.append_batch` job: one transaction, results in the batch's order.

    Optimistic: every message is taken as new. The client_id index is probed by the insert
    anyway, so a separate lookup would double that work for the rare re-sent message; a
    conflict (with a stored message or within the batch) rolls the transaction back, and a
    second one resolves the duplicates first."""
    try:
        try:
            if len(batch) == 1:
                return [_append_one(conn, cursors, batch[0])]
            with transaction(conn):
                return _insert_new(conn, _room_ids(conn, cursors, batch), batch)
        except sqlite3.IntegrityError as exc:
            if exc.sqlite_errorname != "SQLITE_CONSTRAINT_UNIQUE":
                raise
        with transaction(conn):
            return _append_resolving_duplicates(conn, cursors, batch)
    except BaseException:
        cursors.forget()  # rolled back: forget what this transaction may have read
        raise


def _append_one(conn: sqlite3.Connection, cursors: WriterCursors, m: NewMessage) -> Appended:
    """A batch of one message (every batch at light load): its room and user known after the
    first, nothing is collected, and one cursor issues every statement."""
    cursor = cursors.statements(conn)
    with transaction(conn, cursor):
        room_id = cursors.room_ids.get(m.room)
        if room_id is None or m.user_id not in cursors.user_ids:
            room_id = _room_ids(conn, cursors, (m,))[m.room]
        return _insert_one(cursor, room_id, m)


def _room_ids(
    conn: sqlite3.Connection, cursors: WriterCursors, batch: tuple[NewMessage, ...]
) -> dict[str, int]:
    """The batch's room ids by name, its users checked: what the foreign keys did."""
    room_id = cursors.room_id
    room_ids = {name: room_id(conn, name) for name in {m.room for m in batch}}
    cursors.check_users(conn, {m.user_id for m in batch})
    return room_ids


def _insert_new(
    conn: sqlite3.Connection, room_ids: dict[str, int], batch: tuple[NewMessage, ...]
) -> list[Appended]:
    """Number and insert `batch`, every message new: the hot path, kept lean."""
    if len(batch) == 1:
        (m,) = batch
        return [_insert_one(conn, room_ids[m.room], m)]
    counts: dict[int, int] = {}
    for m in batch:
        room_id = room_ids[m.room]
        counts[room_id] = counts.get(room_id, 0) + 1
    seqs = _reserve_seqs(conn, counts)
    ts = now_ms()
    rows: list[tuple[Any, ...]] = []
    add_row = rows.append
    changes = False  # whether the batch holds an edit or delete
    for m in batch:
        room_id = room_ids[m.room]
        seq = seqs[room_id] = seqs[room_id] + 1
        kind = m.kind
        changes = changes or kind != 0
        add_row((room_id, seq, m.user_id, m.user_name, m.text, ts, m.client_id, kind, m.target))
    conn.executemany(_INSERT_MESSAGE, rows)
    id_ = conn.execute("SELECT last_insert_rowid()").fetchone()[0] - len(rows)
    if changes:
        _apply_changes(conn, rows)
    results: list[Appended] = []
    add_result = results.append
    for m, row in zip(batch, rows, strict=True):
        id_ += 1
        if m.kind:
            add_result(Appended(entry(m.room, id_, row[1], *_rest(m, ts)), False))
        else:
            message = Message(m.room, id_, row[1], m.user_name, m.text, ts, m.client_id)
            add_result(Appended(message, False))
    return results


def _insert_one(conn: _Executes, room_id: int, m: NewMessage) -> Appended:
    """`_insert_new` of one message (every batch at light load): no counting, no loops.
    An edit or delete is inserted the same way, then applied to its target."""
    seq = _reserve_one_room(conn, room_id, 1)
    ts = now_ms()
    kind = m.kind
    row = (room_id, seq, m.user_id, m.user_name, m.text, ts, m.client_id, kind, m.target)
    id_ = conn.execute(_INSERT_MESSAGE, row).lastrowid
    assert id_ is not None
    if kind:
        _apply_changes(conn, (row,))
        return Appended(entry(m.room, id_, seq, *_rest(m, ts)), False)
    return Appended(Message(m.room, id_, seq, m.user_name, m.text, ts, m.client_id), False)


def _reserve_one_room(conn: _Executes, room_id: int, count: int) -> int:
    """Raise the room's `last_seq` by `count`; return its new value."""
    conn.execute(_RAISE_ONE_ROOM, (count, room_id))
    (last_seq,) = conn.execute(_LAST_SEQ, (room_id,)).fetchone()
    return int(last_seq)


def _reserve_seqs(conn: sqlite3.Connection, counts: dict[int, int]) -> dict[int, int]:
    """Raise each room's `last_seq` by its count; return each room's last seq before that."""
    if len(counts) == 1:
        ((room_id, count),) = counts.items()
        return {room_id: _reserve_one_room(conn, room_id, count) - count}
    keys = msgspec.json.encode(list(counts.items())).decode()
    reserved = {
        room_id: last - counts[room_id] for room_id, last in conn.execute(_RESERVE_ROOMS, (keys,))
    }
    if len(reserved) != len(counts):  # a cached room id always exists: rooms are never deleted
        raise StorageError("a room of the batch vanished")
    return reserved


def _append_resolving_duplicates(
    conn: sqlite3.Connection, cursors: WriterCursors, batch: tuple[NewMessage, ...]
) -> list[Appended]:
    """`batch` with each re-sent client_id (stored, or earlier in the batch) answered by the
    message it first made, the rest inserted."""
    room_ids = _room_ids(conn, cursors, batch)
    seen = _stored_duplicates(conn, batch, room_ids)
    fresh: list[NewMessage] = []
    firsts: dict[_ClientKey, int] = {}  # client key -> its index in `fresh`
    plan: list[RoomEntry | int] = []  # per entry: the original it repeats, or its `fresh` index
    for m in batch:
        key = None if m.client_id is None else (room_ids[m.room], m.user_id, m.client_id)
        if key is not None and key in seen:
            plan.append(seen[key])
        elif key is not None and key in firsts:
            plan.append(-1 - firsts[key])  # negative: a duplicate of a message of this batch
        else:
            if key is not None:
                firsts[key] = len(fresh)
            plan.append(len(fresh))
            fresh.append(m)
    inserted = _insert_new(conn, room_ids, tuple(fresh)) if fresh else []
    return [
        (inserted[step] if step >= 0 else Appended(inserted[-1 - step].message, True))
        if isinstance(step, int)
        else Appended(step, True)
        for step in plan
    ]


def _rest(m: NewMessage, ts: int) -> tuple[str, str, int, str | None, int, int | None]:
    return m.user_name, m.text, ts, m.client_id, m.kind, m.target


_EDIT = (
    "UPDATE messages SET text = ?, edited_at = ? WHERE id = ? AND room_id = ? AND kind = 0"
    " AND deleted = 0"
)
_DELETE = "UPDATE messages SET text = '', deleted = 1 WHERE id = ? AND room_id = ? AND kind = 0"
_ERASE_EDITS = "UPDATE messages SET text = '' WHERE target = ? AND room_id = ?"


def _apply_changes(conn: _Executes, rows: Iterable[tuple[Any, ...]]) -> None:
    """Apply the batch's edits and deletes to their messages, in seq order (rows are)."""
    for room_id, _seq, _user, _name, text, ts, _cid, kind, target in rows:
        if kind == KIND_EDIT:
            conn.execute(_EDIT, (text, ts, target, room_id))
        elif kind == KIND_DELETE:
            conn.execute(_DELETE, (target, room_id))
            conn.execute(_ERASE_EDITS, (target, room_id))


def _stored_duplicates(
    conn: sqlite3.Connection, batch: tuple[NewMessage, ...], room_ids: dict[str, int]
) -> dict[_ClientKey, RoomEntry]:
    keys = [(room_ids[m.room], m.user_id, m.client_id) for m in batch if m.client_id is not None]
    if not keys:
        return {}
    names = {room_id: name for name, room_id in room_ids.items()}
    rows = conn.execute(_FIND_CLIENT_IDS, (msgspec.json.encode(keys).decode(),))
    return {
        (room_id, user_id, client_id): entry(
            names[room_id], id_, seq, user_name, text, ts, client_id, kind, target
        )
        for room_id, user_id, client_id, id_, seq, user_name, text, ts, kind, target in rows
    }
