"""Blocking jobs on one shard database; each runs on a pooled connection's worker thread.

Every job checks that this database still owns the unit(s) it serves (`shard_owned`): a write
takes `FOR KEY SHARE` on the units' rows inside its transaction, so a move's `FOR UPDATE` on a
row holds that unit's writers (they wait, nothing is refused) and its delete turns them away
(`NotOwned`: the store re-reads the directory and goes to the new database). A read checks
after reading: the old copy is deleted only after ownership went, so a read that still sees
ownership afterwards read a whole copy. The append is PostgresStore's (rooms locked in id order,
duplicates found, seqs numbered gap-free), with ids the catalog handed out.
"""

from __future__ import annotations

from collections.abc import Sequence

import psycopg.errors

from protocol import Message, RoomEntry
from storage.entries import ENTRY_COLUMNS, entry_from_row, message_from_row
from storage.postgres import _search as pg_search
from storage.postgres._connection import Connection, now_ms
from storage.postgres._messages import (
    _Numbering,
    apply_changes,
    change_statements,
    find_client_ids,
    stored_duplicates,
)
from storage.protocols import Appended, NewMessage, StorageError
from storage.read_state import UNREAD_WINDOW

_ROOM_ID = "(SELECT room_id FROM shard_rooms WHERE name = %s)"
# Stream positions rise in batch order (so in seq order per room): the k-th smallest of the
# positions taken goes to the k-th row. The transaction holds an xid by then (the fence's row
# lock), which the event appender's watermark relies on (storage/routing/shard_events.py).
_INSERT = (
    "INSERT INTO shard_messages"
    " (id, room_id, seq, user_id, user_name, text, ts, client_id, kind, target, stream_pos)"
    " SELECT v.i, v.r, v.s, v.u, v.n, v.t, %s, v.c, v.k, v.g, p.pos FROM unnest(%s::bigint[],"
    " %s::bigint[], %s::bigint[], %s::bigint[], %s::text[], %s::text[], %s::text[],"
    " %s::smallint[], %s::bigint[]) WITH ORDINALITY AS v(i, r, s, u, n, t, c, k, g, o)"
    " JOIN (SELECT pos, row_number() OVER (ORDER BY pos) AS o FROM (SELECT"
    " nextval('shard_stream_positions') AS pos FROM generate_series(1, %s)) AS q) AS p"
    " ON p.o = v.o"
)
_FIND_CLIENT_IDS = find_client_ids("shard_messages")
_CHANGES = change_statements("shard_messages")
_SEARCH = pg_search.search_statement("shard_messages")


class NotOwned(StorageError):
    """This database no longer serves `units` (a move switched them): re-read the directory."""

    def __init__(self, target: str, units: Sequence[str]) -> None:
        super().__init__(f"{target} does not serve {', '.join(sorted(units))}")
        self.units = tuple(units)


def _fence(
    conn: Connection, target: str, units: Sequence[str], rooms: Sequence[str], lock: bool
) -> None:
    """`NotOwned` unless this database serves every unit, and none of `rooms` was pinned
    away from it. `away` is read from the locked row itself: a writer that waited on a move's
    lock sees the row as the move left it (a subquery would see the statement's older
    snapshot)."""
    wanted = sorted(set(units))
    query = "SELECT unit, away FROM shard_owned WHERE unit = ANY(%s) ORDER BY unit"
    rows = conn.execute(query + (" FOR KEY SHARE" if lock else ""), (wanted,)).fetchall()
    missing = set(wanted) - {str(unit) for unit, _ in rows}
    gone = {str(name) for _, away in rows for name in away} & set(rooms)
    if missing or gone:
        raise NotOwned(target, sorted(missing | {f"room:{name}" for name in gone}))


def append(
    conn: Connection,
    target: str,
    units: Sequence[str],
    rooms: dict[str, tuple[int, int]],
    batch: Sequence[NewMessage],
    ids: Sequence[int],
) -> list[Appended]:
    """One transaction on this shard: `rooms` maps name -> (catalog id, logical shard), `ids`
    are the batch's message ids in order (a duplicate leaves its id unused)."""
    try:
        with conn.transaction():
            _fence(conn, target, units, list(rooms), lock=True)
            return _append_locked(conn, rooms, batch, ids)
    except psycopg.errors.ForeignKeyViolation as exc:
        raise StorageError("a batch names a room this shard does not hold") from exc


def _append_locked(
    conn: Connection,
    rooms: dict[str, tuple[int, int]],
    batch: Sequence[NewMessage],
    ids: Sequence[int],
) -> list[Appended]:
    names = sorted(rooms)
    conn.execute(
        "INSERT INTO shard_rooms (room_id, name, logical)"
        " SELECT * FROM unnest(%s::bigint[], %s::text[], %s::integer[]) ON CONFLICT DO NOTHING",
        ([rooms[n][0] for n in names], names, [rooms[n][1] for n in names]),
    )
    locked = conn.execute(
        "SELECT room_id, last_seq FROM shard_rooms WHERE room_id = ANY(%s)"
        " ORDER BY room_id FOR UPDATE",
        ([rooms[n][0] for n in names],),
    ).fetchall()
    room_ids = {name: rooms[name][0] for name in names}
    numbering = _Numbering(room_ids, {int(r): int(s) for r, s in locked}, now_ms())
    numbering.number(batch, stored_duplicates(conn, _FIND_CLIENT_IDS, batch, room_ids))
    new_ids = [id_ for id_, new in zip(ids, numbering.new, strict=True) if new]
    if new_ids:
        n = numbering
        columns = (n.ts, new_ids, n.room, n.seq, n.user, n.user_name, n.text, n.client_id)
        conn.execute(_INSERT, (*columns, n.kind, n.target, len(new_ids)))
        if n.changes:
            apply_changes(conn, _CHANGES, n)
        changed = {room_ids[m]: numbering.last_seqs[room_ids[m]] for m in names}
        conn.execute(
            "UPDATE shard_rooms SET last_seq = v.s FROM unnest(%s::bigint[], %s::bigint[])"
            " AS v(id, s) WHERE shard_rooms.room_id = v.id",
            (list(changed), list(changed.values())),
        )
    placed = dict(zip(zip(numbering.room, numbering.seq, strict=True), new_ids, strict=True))
    return numbering.results(batch, placed)


def history(
    conn: Connection, target: str, unit: str, room: str, before_seq: int, limit: int
) -> tuple[list[Message], bool]:
    rows = conn.execute(
        f"SELECT {ENTRY_COLUMNS} FROM shard_messages WHERE room_id = {_ROOM_ID} AND seq < %s"
        " AND kind = 0 ORDER BY seq DESC LIMIT %s",
        (room, before_seq, limit + 1),
    ).fetchall()
    _fence(conn, target, [unit], [room], lock=False)
    has_more = len(rows) > limit
    del rows[limit:]
    rows.reverse()
    return [message_from_row(room, row) for row in rows], has_more


def messages_after(
    conn: Connection, target: str, unit: str, room: str, after_seq: int, limit: int
) -> list[RoomEntry]:
    rows = conn.execute(
        f"SELECT {ENTRY_COLUMNS} FROM shard_messages WHERE room_id = {_ROOM_ID} AND seq > %s"
        " ORDER BY seq LIMIT %s",
        (room, after_seq, limit),
    ).fetchall()
    _fence(conn, target, [unit], [room], lock=False)
    return [entry_from_row(room, row) for row in rows]


def message(conn: Connection, target: str, unit: str, room: str, message_id: int) -> Message | None:
    row = conn.execute(
        f"SELECT {ENTRY_COLUMNS} FROM shard_messages WHERE id = %s AND room_id = {_ROOM_ID}"
        " AND kind = 0",
        (message_id, room),
    ).fetchone()
    _fence(conn, target, [unit], [room], lock=False)
    return None if row is None else message_from_row(room, row)


def unread_count(
    conn: Connection, target: str, unit: str, room: str, read_seq: int, last_seq: int, user_id: int
) -> int:
    """Messages of others in the window after `read_seq` (storage.protocols.UNREAD_WINDOW)."""
    row = conn.execute(
        f"SELECT count(*) FROM shard_messages WHERE room_id = {_ROOM_ID}"
        " AND seq > %s AND seq <= %s AND user_id <> %s AND kind = 0 AND NOT deleted",
        (room, read_seq, min(read_seq + UNREAD_WINDOW, last_seq), user_id),
    ).fetchone()
    _fence(conn, target, [unit], [room], lock=False)
    assert row is not None
    return int(row[0])


def search(
    conn: Connection,
    target: str,
    units: Sequence[str],
    rooms: Sequence[str],
    words: Sequence[str],
    before_id: int,
    limit: int,
) -> tuple[list[Message], bool]:
    """`storage.search.MessageSearch.search` over those of `rooms` this database holds."""
    found = pg_search.search(
        conn,
        rooms,
        words,
        before_id,
        limit,
        rooms_query=pg_search.SHARD_ROOMS,
        statement=_SEARCH,
    )
    _fence(conn, target, units, rooms, lock=False)
    return found


def last_seq(conn: Connection, target: str, unit: str, room: str) -> int | None:
    """The room's counter here, or None before its first message (no row yet)."""
    row = conn.execute("SELECT last_seq FROM shard_rooms WHERE name = %s", (room,)).fetchone()
    _fence(conn, target, [unit], [room], lock=False)
    return None if row is None else int(row[0])


def last_seqs(
    conn: Connection, target: str, units: Sequence[str], rooms: Sequence[str]
) -> dict[str, int]:
    """Counters of those of `rooms` held here (a room with no message yet has no row)."""
    rows = conn.execute(
        "SELECT name, last_seq FROM shard_rooms WHERE name = ANY(%s)", (list(rooms),)
    ).fetchall()
    _fence(conn, target, units, rooms, lock=False)
    return {str(name): int(seq) for name, seq in rows}


def own(conn: Connection, units: Sequence[str], away: Sequence[str] = ()) -> None:
    """Make this database serve `units`, except the rooms `away` (pinned elsewhere): at the
    first creation and at the end of a move only."""
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO shard_owned (unit, away) VALUES (%s, %s) ON CONFLICT DO NOTHING",
            [(unit, list(away)) for unit in units],
        )
