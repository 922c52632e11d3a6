"""Blocking jobs for messages: the group-commit append, and the history pages.

Any number of stores, on any number of hosts, may append at once. Each batch is one
transaction that first locks its rooms' rows (`FOR UPDATE`, in room-id order, so two writers
whose batches share rooms queue on the first shared one and can never deadlock); under those
locks it reads each room's `last_seq`, finds stored duplicates of its client ids, numbers the
new messages gap-free, inserts them with one multi-row statement and moves `last_seq` on.
A room's seqs therefore come from one writer at a time and never interleave. Ids come from the
identity column, in batch order. Nothing is a sequence of seqs: a rolled-back batch leaves no
hole, since `last_seq` rolls back with it.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import psycopg
import psycopg.errors

from protocol import Message
from storage.postgres._connection import Connection, now_ms
from storage.protocols import Appended, NewMessage, NotFound, StorageError

_ClientKey = tuple[int, int, str]

# Message columns in `Message` field order after `room`, so `Message(room, *row)` builds one.
_MESSAGE_COLUMNS = "id, seq, user_name, text, ts, client_id"
_ROOM_ID = "(SELECT id FROM rooms WHERE name = %s)"
_LOCK_ROOMS = "SELECT id, name, last_seq FROM rooms WHERE name = ANY(%s) ORDER BY id FOR UPDATE"
_FIND_CLIENT_IDS = (
    "SELECT m.room_id, m.user_id, m.client_id, m.id, m.seq, m.user_name, m.text, m.ts"
    " FROM unnest(%s::bigint[], %s::bigint[], %s::text[]) AS k(room_id, user_id, client_id)"
    " JOIN messages AS m ON m.client_id = k.client_id AND m.room_id = k.room_id"
    " AND m.user_id = k.user_id"
)
# One statement per batch; ORDER BY the input's position so ids follow the batch's order.
_INSERT_MESSAGES = (
    "INSERT INTO messages (room_id, seq, user_id, user_name, text, ts, client_id)"
    " SELECT r, s, u, n, t, %s, c FROM unnest(%s::bigint[], %s::bigint[], %s::bigint[],"
    " %s::text[], %s::text[], %s::text[]) WITH ORDINALITY AS v(r, s, u, n, t, c, o)"
    " ORDER BY o RETURNING id, room_id, seq"
)
_SET_LAST_SEQS = (
    "UPDATE rooms SET last_seq = v.s FROM unnest(%s::bigint[], %s::bigint[]) AS v(id, s)"
    " WHERE rooms.id = v.id"
)


def history(conn: Connection, room: str, before_seq: int, limit: int) -> tuple[list[Message], bool]:
    rows = conn.execute(
        f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE room_id = {_ROOM_ID} AND seq < %s"
        " ORDER BY seq DESC LIMIT %s",
        (room, before_seq, limit + 1),  # one more than asked: tells whether older ones exist
    ).fetchall()
    has_more = len(rows) > limit
    del rows[limit:]
    rows.reverse()
    return [Message(room, *row) for row in rows], has_more


def messages_after(conn: Connection, room: str, after_seq: int, limit: int) -> list[Message]:
    rows = conn.execute(
        f"SELECT {_MESSAGE_COLUMNS} FROM messages WHERE room_id = {_ROOM_ID} AND seq > %s"
        " ORDER BY seq LIMIT %s",
        (room, after_seq, limit),
    )
    return [Message(room, *row) for row in rows]


def append_batch(conn: Connection, batch: Sequence[NewMessage]) -> list[Appended]:
    """The `Store.append_batch` job: one transaction, results in the batch's order."""
    try:
        with conn.transaction():
            return _append_in_transaction(conn, batch)
    except psycopg.errors.ForeignKeyViolation as exc:
        raise StorageError("unknown user id in a batch") from exc


def _append_in_transaction(conn: Connection, batch: Sequence[NewMessage]) -> list[Appended]:
    names = sorted({m.room for m in batch})
    locked = conn.execute(_LOCK_ROOMS, (names,)).fetchall()
    if len(locked) != len(names):
        missing = sorted(set(names) - {str(name) for _, name, _ in locked})
        raise NotFound(f"no room named {missing[0]!r}")
    room_ids: dict[str, int] = {str(name): int(id_) for id_, name, _ in locked}
    last_seqs: dict[int, int] = {int(id_): int(last) for id_, _, last in locked}
    numbering = _Numbering(room_ids, last_seqs, now_ms())
    numbering.number(batch, _stored_duplicates(conn, batch, room_ids))
    if numbering.seq:
        cols = numbering
        inserted = conn.execute(
            _INSERT_MESSAGES,
            (cols.ts, cols.room, cols.seq, cols.user, cols.user_name, cols.text, cols.client_id),
        ).fetchall()
        ids = {(int(r), int(s)): int(i) for i, r, s in inserted}
        changed = {room_ids[m]: numbering.last_seqs[room_ids[m]] for m in names}
        conn.execute(_SET_LAST_SEQS, (list(changed), list(changed.values())))
    else:
        ids = {}
    return numbering.results(batch, ids)


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
    # Per message of the batch: (room id, seq) of the row it is or repeats, or the stored original.
    outcome: list[tuple[int, int] | Message] = field(default_factory=list)
    new: list[bool] = field(default_factory=list)

    def number(self, batch: Sequence[NewMessage], stored: dict[_ClientKey, Message]) -> None:
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
            self.outcome.append((room_id, seq))
            self.new.append(True)
            if key is not None:
                first[key] = (room_id, seq)

    def results(
        self, batch: Sequence[NewMessage], ids: dict[tuple[int, int], int]
    ) -> list[Appended]:
        built: dict[tuple[int, int], Message] = {}  # a repeat within the batch follows its row
        out: list[Appended] = []
        for m, outcome, new in zip(batch, self.outcome, self.new, strict=True):
            if isinstance(outcome, Message):
                out.append(Appended(outcome, True))
                continue
            message = built.get(outcome)
            if message is None:
                message = built[outcome] = Message(
                    m.room, ids[outcome], outcome[1], m.user_name, m.text, self.ts, m.client_id
                )
            out.append(Appended(message, not new))
        return out


def _stored_duplicates(
    conn: Connection, batch: Sequence[NewMessage], room_ids: dict[str, int]
) -> dict[_ClientKey, Message]:
    keyed = [m for m in batch if m.client_id is not None]
    if not keyed:
        return {}
    names = {room_id: name for name, room_id in room_ids.items()}
    rows = conn.execute(
        _FIND_CLIENT_IDS,
        (
            [room_ids[m.room] for m in keyed],
            [m.user_id for m in keyed],
            [m.client_id for m in keyed],
        ),
    )
    return {
        (room_id, user_id, client_id): Message(
            names[room_id], id_, seq, user_name, text, ts, client_id
        )
        for room_id, user_id, client_id, id_, seq, user_name, text, ts in rows
    }
