"""The event stream's outbox on each shard database: one elected appender per shard database.

With `[storage] shards` a room's messages commit on its shard, so each shard database is an
outbox of its own (`ShardOutbox`, an `EventOutbox`), with its own cursors
(`shard_events_cursor`) and its own appender lease (an advisory lock on that database), and the
server runs one appender per shard database (server/events/sharded.py).

Why not the message ids: they come from the catalog's sequence, taken in a catalog transaction
that commits before the shard transaction that writes them begins. The watermark
(server/events/_watermark.py) trusts that every id missing from a read belongs to a
transaction already running on the database read; a catalog id whose shard transaction has not
started yet breaks that, and would be skipped once the gap's tag passed. So each shard numbers
its own commits: `shard_messages.stream_pos` comes from the shard's own sequence, taken in the
batch's shard transaction after its first statement (the fence's row lock) gave it a
transaction id: exactly the single-database argument, on each shard. The appender reads, orders
and keeps its cursor by position (`StreamRead.positions`); the events carry the global ids.

A row without a position is not this database's to append: rows from before the schema version
that added positions (the stream was refused with shards then), and rows a move copied in that
the source had appended already (storage/routing/move.py, `carry_stream`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from protocol import Message
from storage.postgres._connection import Connection
from storage.postgres._events import _XMAX, _XMIN, AdvisoryLease
from storage.postgres._threads import PoolThreads
from storage.protocols import AppenderLease, StreamRead

# Any fixed 64-bit key, not the primary's appender's (a shard may live in the primary database).
SHARD_APPENDER_LOCK_KEY = 0x68696269_6B690015

_COLUMNS = "r.name, m.id, m.seq, m.user_name, m.text, m.ts, m.client_id, m.stream_pos"
_SINCE = (
    f"SELECT {_COLUMNS} FROM shard_messages AS m JOIN shard_rooms AS r USING (room_id)"
    " WHERE m.stream_pos > %s AND m.kind = 0 ORDER BY m.stream_pos LIMIT %s"  # edits: not yet
)
_IN_GAPS = (
    f"SELECT {_COLUMNS} FROM unnest(%s::int8[], %s::int8[]) AS g(lo, hi)"
    " JOIN shard_messages AS m ON m.stream_pos BETWEEN g.lo AND g.hi"
    " JOIN shard_rooms AS r USING (room_id)"
    " WHERE m.kind = 0"  # an edit's or delete's position is a hole to the stream, like a resend's
)
_ADVANCE = (
    "INSERT INTO shard_events_cursor (partition, last_pos) VALUES (%s, %s)"
    " ON CONFLICT (partition) DO UPDATE"
    " SET last_pos = greatest(shard_events_cursor.last_pos, excluded.last_pos)"
)


def _rows(rows: Iterable[tuple[Any, ...]]) -> list[tuple[int, Message]]:
    return [
        (int(pos), Message(name, int(i), int(seq), user, text, int(ts), cid))
        for name, i, seq, user, text, ts, cid, pos in rows
    ]


def _scalar(conn: Connection, sql: str) -> int:
    row = conn.execute(sql).fetchone()
    assert row is not None
    return int(row[0])


def since_position(conn: Connection, after: int, limit: int) -> list[Message]:
    return [m for _, m in _rows(conn.execute(_SINCE, (after, limit)))]


def for_stream(
    conn: Connection, gaps: Sequence[tuple[int, int]], after: int, limit: int
) -> StreamRead:
    # Autocommit: each statement has a snapshot of its own, each later than the one before.
    xmin = _scalar(conn, _XMIN)
    found: list[tuple[int, Message]] = []
    if gaps:
        found = _rows(conn.execute(_IN_GAPS, ([lo for lo, _ in gaps], [hi for _, hi in gaps])))
    found += _rows(conn.execute(_SINCE, (after, limit)))
    found.sort(key=lambda row: row[0])
    return StreamRead([m for _, m in found], (xmin, _scalar(conn, _XMAX)), [p for p, _ in found])


def last_position(conn: Connection) -> int:
    return _scalar(conn, "SELECT coalesce(max(stream_pos), 0) FROM shard_messages")


def cursors(conn: Connection) -> dict[int, int]:
    rows = conn.execute("SELECT partition, last_pos FROM shard_events_cursor")
    return {int(partition): int(last) for partition, last in rows}


def advance(conn: Connection, raised: Mapping[int, int]) -> None:
    with conn.transaction():
        for partition, last in sorted(raised.items()):
            conn.execute(_ADVANCE, (partition, last))


class ShardOutbox:
    """`EventOutbox` of one shard database, by stream position (see the module docstring): the
    `*_id` names of the protocol mean positions here."""

    def __init__(self, threads: PoolThreads) -> None:
        self._threads = threads
        self.target = threads.settings.target

    async def messages_since_id(self, after_id: int, limit: int) -> list[Message]:
        """Committed messages with a position above `after_id`, in position order."""
        return await self._threads.read(since_position, after_id, limit)

    async def last_message_id(self) -> int:
        """The newest position (0: none): where this database's stream begins."""
        return await self._threads.read(last_position)

    async def event_cursors(self) -> dict[int, int]:
        return await self._threads.read(cursors)

    async def advance_event_cursors(self, cursors: Mapping[int, int]) -> None:
        await self._threads.write(advance, dict(cursors))

    async def messages_for_stream(
        self, gaps: Sequence[tuple[int, int]], after_id: int, limit: int
    ) -> StreamRead:
        return await self._threads.read(for_stream, list(gaps), after_id, limit)

    def appender_lease(self) -> AppenderLease:
        return AdvisoryLease(self._threads.settings, SHARD_APPENDER_LOCK_KEY)


class ShardOutboxes:
    """Every shard database's outbox, and which database a room's commits land on now (the
    appender of that database is the one to wake after a commit)."""

    def __init__(self, outboxes: Mapping[str, ShardOutbox], home: Callable[[str], str]) -> None:
        self.outboxes = dict(outboxes)
        self._home = home

    def home_of(self, room: str) -> str:
        return self._home(room)


_CARRY = (
    "UPDATE shard_messages AS m SET stream_pos = p.pos FROM (SELECT o.id, q.pos FROM"
    " (SELECT id, row_number() OVER (ORDER BY room_id, seq) AS k FROM shard_messages"
    " WHERE id = ANY(%s)) AS o JOIN (SELECT pos, row_number() OVER (ORDER BY pos) AS k FROM"
    " (SELECT nextval('shard_stream_positions') AS pos FROM generate_series(1, %s)) AS s) AS q"
    " USING (k)) AS p WHERE m.id = p.id"
)


def carry_stream(src: Connection, dst: Connection, room_ids: Sequence[int]) -> int:
    """A move's hand-over of the event stream, run while the rooms' writers are held and after
    their rows are copied (without positions) to `dst`: the copied rows the source's appender
    may not have appended yet get positions on `dst`, so that its appender appends them; how
    many.

    Those are the rows above the lowest cursor the source stored (everything at or below it is
    appended; above it, some may be too, and are appended again: repeats that consumers drop).
    The source keeps appending what it holds until its copy is deleted, so nothing is lost
    between the two. A source with no cursor never ran the stream: nothing to hand over. A
    `dst` with no cursor yet gets them at its newest position (what its first start would do),
    below the positions given here."""
    marks = cursors(src)
    if not marks:
        return 0
    rows = src.execute(
        "SELECT id FROM shard_messages WHERE room_id = ANY(%s) AND stream_pos > %s",
        (list(room_ids), min(marks.values())),
    ).fetchall()
    ids = [int(row[0]) for row in rows]
    with dst.transaction():
        dst.execute("SELECT pg_current_xact_id()")  # an xid before the positions (the watermark)
        if not cursors(dst):
            newest = last_position(dst)
            for partition in sorted(marks):
                dst.execute(_ADVANCE, (partition, newest))
        if ids:
            dst.execute(_CARRY, (ids, len(ids)))
    return len(ids)
