"""Blocking jobs for messages: the writer's group-commit append, and the readers' pages.

Every write of this store goes through its writer thread, but other processes may write the same
file (`hibiki serve --workers N`): each batch therefore reads its rooms' `last_seq` and the last
message id inside its `BEGIN IMMEDIATE` transaction, which holds the file's write lock, so two
writers never give out the same seq or id. That read is one indexed lookup per room of the batch
and one for max(id), not per message (measured: within noise of trusting in-memory counters).

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
    """What the writer thread knows of the database; only jobs running on that thread touch it.

    Room ids and known users are cached (never renamed or deleted); `last_seqs` and `last_id`
    are re-read inside each batch's transaction (`reload`), since another process may have
    written since. All of it is forgotten whenever a transaction rolls back.
    """

    __slots__ = ("last_id", "last_seqs", "room_ids", "user_ids")

    def __init__(self) -> None:
        self.room_ids: dict[str, int] = {}  # room name -> id; rooms are never renamed
        self.last_seqs: dict[int, int] = {}  # room id -> last seq assigned
        self.last_id: int | None = None
        self.user_ids: set[int] = set()  # users known to exist (none is ever deleted)

    def forget(self) -> None:
        self.room_ids.clear()
        self.last_seqs.clear()
        self.last_id = None
        self.user_ids.clear()

    def room_id(self, conn: sqlite3.Connection, name: str) -> int:
        room_id = self.room_ids.get(name)
        if room_id is None:
            row = conn.execute("SELECT id, last_seq FROM rooms WHERE name = ?", (name,)).fetchone()
            if row is None:
                raise NotFound(f"no room named {name!r}")
            room_id = self.room_ids[name] = row[0]
            self.last_seqs[room_id] = row[1]
        return room_id

    def reload(self, conn: sqlite3.Connection, room_ids: Iterable[int]) -> None:
        """The rooms' last seqs and the last message id as committed: call inside the batch's
        write transaction, which no other writer can interleave with."""
        rows = conn.execute(
            "SELECT id, last_seq FROM rooms WHERE id IN (SELECT value FROM json_each(?))",
            (msgspec.json.encode(sorted(room_ids)).decode(),),
        )
        self.last_seqs.update(rows)
        self.last_id = conn.execute("SELECT coalesce(max(id), 0) FROM messages").fetchone()[0]

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


_INSERT_MESSAGE = (
    "INSERT INTO messages (id, room_id, seq, user_id, user_name, text, ts, client_id, kind,"
    " target) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
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


def append_batch(
    conn: sqlite3.Connection, cursors: WriterCursors, batch: tuple[NewMessage, ...]
) -> list[Appended]:
    """The `Store.append_batch` job: one transaction, results in the batch's order."""
    try:
        with transaction(conn):
            return _append_in_transaction(conn, cursors, batch)
    except BaseException:
        cursors.forget()  # rolled back: what was assigned in memory never happened
        raise


def _append_in_transaction(
    conn: sqlite3.Connection, cursors: WriterCursors, batch: tuple[NewMessage, ...]
) -> list[Appended]:
    room_ids = {name: cursors.room_id(conn, name) for name in {m.room for m in batch}}
    cursors.check_users(conn, {m.user_id for m in batch})
    cursors.reload(conn, room_ids.values())
    numbering = _Numbering(cursors, room_ids, now_ms())
    # Optimistic: every message is new. The client_id index is probed by the insert anyway, so
    # a separate lookup would double that work for the rare re-sent message; a conflict (with
    # a stored message or within the batch) undoes the inserts and the batch is numbered again,
    # duplicates first resolved.
    rows, results = numbering.number_all(batch)
    conn.execute("SAVEPOINT optimistic")
    try:
        conn.executemany(_INSERT_MESSAGE, rows)
    except sqlite3.IntegrityError:
        conn.execute("ROLLBACK TO optimistic")
        numbering = _Numbering(cursors, room_ids, numbering.ts)
        rows, results = numbering.number(batch, _stored_duplicates(conn, batch, room_ids))
        conn.executemany(_INSERT_MESSAGE, rows)  # a second conflict is a bug: it propagates
    conn.execute("RELEASE optimistic")
    if numbering.changes:
        _apply_changes(conn, rows)
    conn.executemany(
        "UPDATE rooms SET last_seq = ? WHERE id = ?",
        [(seq, room_id) for room_id, seq in numbering.last_seqs.items()],
    )
    cursors.last_seqs.update(numbering.last_seqs)
    cursors.last_id = numbering.last_id
    return results


class _Numbering:
    """Assigns ids and seqs to one batch, from the writer's counters, without touching them."""

    def __init__(self, cursors: WriterCursors, room_ids: dict[str, int], ts: int) -> None:
        assert cursors.last_id is not None
        self.room_ids = room_ids
        self.last_seqs = {room_id: cursors.last_seqs[room_id] for room_id in room_ids.values()}
        self.last_id = cursors.last_id
        self.ts = ts
        self.changes = False  # whether an edit or delete was numbered

    def number_all(
        self, batch: tuple[NewMessage, ...]
    ) -> tuple[list[tuple[Any, ...]], list[Appended]]:
        """Rows and results as if no message were a duplicate: the hot path, kept lean."""
        room_ids, last_seqs, ts = self.room_ids, self.last_seqs, self.ts
        id_ = self.last_id
        rows: list[tuple[Any, ...]] = []
        results: list[Appended] = []
        add_row, add_result = rows.append, results.append
        for m in batch:
            room = m.room
            room_id = room_ids[room]
            seq = last_seqs[room_id] + 1
            last_seqs[room_id] = seq
            id_ += 1
            user_name, text, client_id, kind = m.user_name, m.text, m.client_id, m.kind
            add_row((id_, room_id, seq, m.user_id, user_name, text, ts, client_id, kind, m.target))
            if kind:
                self.changes = True
                add_result(Appended(entry(room, id_, seq, *_rest(m, ts)), False))
            else:
                add_result(Appended(Message(room, id_, seq, user_name, text, ts, client_id), False))
        self.last_id = id_
        return rows, results

    def number(
        self, batch: tuple[NewMessage, ...], seen: dict[_ClientKey, RoomEntry]
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
            row = (last_id, room_id, seq, m.user_id, m.user_name, m.text, ts, client_id)
            rows.append((*row, m.kind, m.target))
            self.changes = self.changes or m.kind != 0
            message = entry(m.room, last_id, seq, *_rest(m, ts))
            if client_id is not None:
                seen[key] = message
            results.append(Appended(message, False))
        self.last_id = last_id
        return rows, results


def _rest(m: NewMessage, ts: int) -> tuple[str, str, int, str | None, int, int | None]:
    return m.user_name, m.text, ts, m.client_id, m.kind, m.target


_EDIT = (
    "UPDATE messages SET text = ?, edited_at = ? WHERE id = ? AND room_id = ? AND kind = 0"
    " AND deleted = 0"
)
_DELETE = "UPDATE messages SET text = '', deleted = 1 WHERE id = ? AND room_id = ? AND kind = 0"
_ERASE_EDITS = "UPDATE messages SET text = '' WHERE target = ? AND room_id = ?"


def _apply_changes(conn: sqlite3.Connection, rows: list[tuple[Any, ...]]) -> None:
    """Apply the batch's edits and deletes to their messages, in seq order (rows are)."""
    for _id, room_id, _seq, _user, _name, text, ts, _cid, kind, target in rows:
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
