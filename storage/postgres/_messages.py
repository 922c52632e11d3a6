"""Blocking jobs for messages: the group-commit append, and the history pages.

Any number of stores, on any number of hosts, may append at once. Each batch is one
transaction that first locks its rooms' rows (`FOR UPDATE`, in room-id order, so two writers
whose batches share rooms queue on the first shared one and can never deadlock); under those
locks it reads each room's `last_seq`, numbers the new messages gap-free, inserts them with one
multi-row statement and moves `last_seq` on. A room's seqs therefore come from one writer at a
time and never interleave; a rolled-back batch leaves no hole, since `last_seq` rolls back with
it (never a sequence for seqs). Ids come from the identity column, in batch order.

The insert is optimistic, as in the SQLite backend: duplicates within the batch are resolved in
memory, and the insert runs in a savepoint as if no client id were stored yet; a unique
violation (rare: a resend after a lost ack) rolls the savepoint back, the stored originals are
looked up, and the batch is numbered and inserted once more. (Measured: a plain insert in a
savepoint costs ~15-25% less than `ON CONFLICT DO NOTHING`, whose speculative insertion probes
the client_id index twice per row.) Messages carry no foreign keys
(schema migration 2): the rooms are the rows the batch locked, and its distinct users are
checked once per batch unless already known (`KnownUsers`); nothing deletes rooms or users.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field

import psycopg.errors

from protocol import Message, RoomEntry
from storage.entries import ENTRY_COLUMNS, entry, entry_from_row, message_from_row
from storage.postgres._connection import Connection, now_ms
from storage.protocols import KIND_DELETE, KIND_EDIT, Appended, NewMessage, NotFound, StorageError

_ClientKey = tuple[int, int, str]
# Bounds the memory of user ids known to exist (~60 bytes each); past it, it starts again.
KNOWN_USERS_LIMIT = 100_000

_ROOM_ID = "(SELECT id FROM rooms WHERE name = %s)"
_LOCK_ROOMS = "SELECT id, name, last_seq FROM rooms WHERE name = ANY(%s) ORDER BY id FOR UPDATE"


# LATERAL: one probe of the client_id index per key (a join would hash the whole table).
def find_client_ids(table: str) -> str:
    """Stored (room, user, client_id) rows of `table`, one index probe per key (LATERAL): a
    plain join hashed the whole table."""
    return (
        "SELECT m.room_id, m.user_id, m.client_id, m.id, m.seq, m.user_name, m.text, m.ts,"
        " m.kind, m.target FROM unnest(%b::int8[], %b::int8[], %b::text[])"
        " AS k(room_id, user_id, client_id)"
        f" CROSS JOIN LATERAL (SELECT * FROM {table} WHERE client_id = k.client_id"
        " AND room_id = k.room_id AND user_id = k.user_id) AS m"
    )


_FIND_CLIENT_IDS = find_client_ids("messages")

# One statement per batch: the rows (ordered by their place in the batch, so ids follow it) and
# the rooms' new last_seq. Parameters go binary (%b): ~20% less work than array literals.
_INSERT_MESSAGES = (
    "WITH new AS (INSERT INTO messages (room_id, seq, user_id, user_name, text, ts, client_id)"
    " SELECT r, s, u, n, t, %b, c FROM unnest(%b::int8[], %b::int8[], %b::int8[],"
    " %b::text[], %b::text[], %b::text[]) WITH ORDINALITY AS v(r, s, u, n, t, c, o) ORDER BY o"
    " RETURNING id, room_id, seq),"
    " moved AS (UPDATE rooms SET last_seq = v.s FROM unnest(%b::int8[], %b::int8[]) AS v(id, s)"
    " WHERE rooms.id = v.id)"
    " SELECT id, room_id, seq FROM new"
)
# The same for a batch holding edits or deletes (rare: the hot path keeps its seven arrays).
_INSERT_ENTRIES = (
    "WITH new AS (INSERT INTO messages (room_id, seq, user_id, user_name, text, ts, client_id,"
    " kind, target) SELECT r, s, u, n, t, %b, c, k, g FROM unnest(%b::int8[], %b::int8[],"
    " %b::int8[], %b::text[], %b::text[], %b::text[], %b::int2[], %b::int8[])"
    " WITH ORDINALITY AS v(r, s, u, n, t, c, k, g, o) ORDER BY o RETURNING id, room_id, seq),"
    " moved AS (UPDATE rooms SET last_seq = v.s FROM unnest(%b::int8[], %b::int8[]) AS v(id, s)"
    " WHERE rooms.id = v.id)"
    " SELECT id, room_id, seq FROM new"
)


def change_statements(table: str) -> tuple[str, str, str]:
    """What applies an edit, a delete, and a delete's erasure of its message's edits, to the
    rows of `table` (`messages`, or a shard's `shard_messages`)."""
    return (
        f"UPDATE {table} SET text = %s, edited_at = %s WHERE id = %s AND room_id = %s"
        " AND kind = 0 AND NOT deleted",
        f"UPDATE {table} SET text = '', deleted = true WHERE id = %s AND room_id = %s AND kind = 0",
        f"UPDATE {table} SET text = '' WHERE target = %s AND room_id = %s",
    )


_CHANGES = change_statements("messages")


def apply_changes(conn: Connection, statements: tuple[str, str, str], n: _Numbering) -> None:
    """Apply the numbered edits and deletes to their messages, in seq order."""
    edit, delete, erase = statements
    for room_id, kind, target, text in zip(n.room, n.kind, n.target, n.text, strict=True):
        if kind == KIND_EDIT:
            conn.execute(edit, (text, n.ts, target, room_id))
        elif kind == KIND_DELETE:
            conn.execute(delete, (target, room_id))
            conn.execute(erase, (target, room_id))


class KnownUsers:
    """User ids known to exist, shared by the store's worker threads (hence the lock)."""

    def __init__(self) -> None:
        self._ids: set[int] = set()
        self._lock = threading.Lock()

    def check(self, conn: Connection, user_ids: set[int]) -> None:
        """Raise `StorageError` unless every id is a stored user: what a foreign key would do."""
        with self._lock:
            unknown = user_ids - self._ids
        if not unknown:
            return
        rows = conn.execute("SELECT id FROM users WHERE id = ANY(%b::int8[])", (list(unknown),))
        found = {int(user_id) for (user_id,) in rows}
        if missing := unknown - found:
            raise StorageError(f"unknown user id {min(missing)} in a batch")
        with self._lock:
            if len(self._ids) + len(found) > KNOWN_USERS_LIMIT:
                self._ids.clear()
            self._ids |= found


def history(conn: Connection, room: str, before_seq: int, limit: int) -> tuple[list[Message], bool]:
    rows = conn.execute(
        f"SELECT {ENTRY_COLUMNS} FROM messages WHERE room_id = {_ROOM_ID} AND seq < %s"
        " AND kind = 0 ORDER BY seq DESC LIMIT %s",
        (room, before_seq, limit + 1),  # one more than asked: tells whether older ones exist
    ).fetchall()
    has_more = len(rows) > limit
    del rows[limit:]
    rows.reverse()
    return [message_from_row(room, row) for row in rows], has_more


def messages_after(conn: Connection, room: str, after_seq: int, limit: int) -> list[RoomEntry]:
    rows = conn.execute(
        f"SELECT {ENTRY_COLUMNS} FROM messages WHERE room_id = {_ROOM_ID} AND seq > %s"
        " ORDER BY seq LIMIT %s",
        (room, after_seq, limit),
    )
    return [entry_from_row(room, row) for row in rows]


def message(conn: Connection, room: str, message_id: int) -> Message | None:
    row = conn.execute(
        f"SELECT {ENTRY_COLUMNS} FROM messages WHERE id = %s AND room_id = {_ROOM_ID} AND kind = 0",
        (message_id, room),
    ).fetchone()
    return None if row is None else message_from_row(room, row)


def append_batch(
    conn: Connection, known_users: KnownUsers, batch: Sequence[NewMessage]
) -> list[Appended]:
    """The `Store.append_batch` job: one transaction, results in the batch's order."""
    with conn.transaction():
        names = sorted({m.room for m in batch})
        locked = conn.execute(_LOCK_ROOMS, (names,)).fetchall()
        if len(locked) != len(names):
            missing = sorted(set(names) - {name for _, name, _ in locked})
            raise NotFound(f"no room named {missing[0]!r}")
        room_ids: dict[str, int] = {name: id_ for id_, name, _ in locked}
        last_seqs: dict[int, int] = {id_: last for id_, _, last in locked}
        known_users.check(conn, {m.user_id for m in batch})
        numbering = _Numbering(room_ids, dict(last_seqs), now_ms())
        numbering.number(batch, {})
        ids = _insert_optimistically(conn, numbering)
        if ids is None:  # a client id was already stored: number the batch again
            numbering = _Numbering(room_ids, dict(last_seqs), numbering.ts)
            numbering.number(batch, stored_duplicates(conn, _FIND_CLIENT_IDS, batch, room_ids))
            ids = _insert(conn, numbering)  # a second conflict is a bug: it propagates
        if numbering.changes:
            apply_changes(conn, _CHANGES, numbering)
        return numbering.results(batch, ids)


def _insert_optimistically(conn: Connection, n: _Numbering) -> dict[tuple[int, int], int] | None:
    """`_insert` as if no client id were stored yet; None (and nothing done) if one was."""
    if all(client_id is None for client_id in n.client_id):
        return _insert(conn, n)
    try:
        with conn.transaction():  # a savepoint: a conflict undoes only the insert
            return _insert(conn, n)
    except psycopg.errors.UniqueViolation:
        return None


def _insert(conn: Connection, n: _Numbering) -> dict[tuple[int, int], int]:
    """Insert the numbered rows and move their rooms' last_seq: (room id, seq) -> id."""
    if not n.seq:
        return {}
    rooms = sorted(set(n.room))
    last_seqs = [n.last_seqs[room_id] for room_id in rooms]
    if n.changes:
        columns = (n.room, n.seq, n.user, n.user_name, n.text, n.client_id, n.kind, n.target)
        rows = conn.execute(_INSERT_ENTRIES, (n.ts, *columns, rooms, last_seqs))
    else:
        params = (n.ts, n.room, n.seq, n.user, n.user_name, n.text, n.client_id, rooms, last_seqs)
        rows = conn.execute(_INSERT_MESSAGES, params)
    return {(room_id, seq): id_ for id_, room_id, seq in rows}


@dataclass(slots=True)
class _Numbering:
    """One batch's new rows as columns (for the multi-row insert), seqs from `last_seqs`."""

    room_ids: dict[str, int]
    last_seqs: dict[int, int]
    ts: int
    room: list[int] = field(default_factory=list)
    seq: list[int] = field(default_factory=list)
    user: list[int] = field(default_factory=list)
    user_name: list[str] = field(default_factory=list)
    text: list[str] = field(default_factory=list)
    client_id: list[str | None] = field(default_factory=list)
    kind: list[int] = field(default_factory=list)
    target: list[int | None] = field(default_factory=list)
    changes: bool = False  # whether an edit or delete was numbered
    # Per message of the batch: (room id, seq) of the row it is or repeats, or the stored original.
    outcome: list[tuple[int, int] | RoomEntry] = field(default_factory=list)
    new: list[bool] = field(default_factory=list)

    def number(self, batch: Sequence[NewMessage], stored: dict[_ClientKey, RoomEntry]) -> None:
        first: dict[_ClientKey, tuple[int, int]] = {}  # client key -> its new row in this batch
        for m in batch:
            room_id = self.room_ids[m.room]
            key = None if m.client_id is None else (room_id, m.user_id, m.client_id)
            if key is not None and (original := stored.get(key) or first.get(key)):
                self.outcome.append(original)
                self.new.append(False)
                continue
            seq = self.last_seqs[room_id] = self.last_seqs[room_id] + 1
            self.room.append(room_id)
            self.seq.append(seq)
            self.user.append(m.user_id)
            self.user_name.append(m.user_name)
            self.text.append(m.text)
            self.client_id.append(m.client_id)
            self.kind.append(m.kind)
            self.target.append(m.target)
            self.changes = self.changes or m.kind != 0
            self.outcome.append((room_id, seq))
            self.new.append(True)
            if key is not None:
                first[key] = (room_id, seq)

    def results(
        self, batch: Sequence[NewMessage], ids: dict[tuple[int, int], int]
    ) -> list[Appended]:
        built: dict[tuple[int, int], RoomEntry] = {}  # a repeat within the batch follows its row
        out: list[Appended] = []
        for m, outcome, new in zip(batch, self.outcome, self.new, strict=True):
            if not isinstance(outcome, tuple):
                out.append(Appended(outcome, True))
                continue
            message = built.get(outcome)
            if message is None:
                id_, seq, ts = ids[outcome], outcome[1], self.ts
                message = built[outcome] = (
                    entry(m.room, id_, seq, m.user_name, m.text, ts, m.client_id, m.kind, m.target)
                    if m.kind
                    else Message(m.room, id_, seq, m.user_name, m.text, ts, m.client_id)
                )
            out.append(Appended(message, not new))
        return out


def stored_duplicates(
    conn: Connection, query: str, batch: Sequence[NewMessage], room_ids: dict[str, int]
) -> dict[_ClientKey, RoomEntry]:
    """The batch's keyed messages already stored (resends), by (room id, user, client_id);
    `query` is `find_client_ids` of the table they are in."""
    keyed = [m for m in batch if m.client_id is not None]
    if not keyed:
        return {}
    names = {room_id: name for name, room_id in room_ids.items()}
    rows = conn.execute(
        query,
        (
            [room_ids[m.room] for m in keyed],
            [m.user_id for m in keyed],
            [m.client_id for m in keyed],
        ),
    )
    return {
        (room_id, user_id, client_id): entry(
            names[room_id], id_, seq, user_name, text, ts, client_id, kind, target
        )
        for room_id, user_id, client_id, id_, seq, user_name, text, ts, kind, target in rows
    }
