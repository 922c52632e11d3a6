"""`hibiki shards move L --to URL`: a logical shard moved to another database while it serves.

1. Bulk copy: the shard's rooms and messages, from one REPEATABLE READ snapshot of the source,
   by COPY; then verified (per room: count, first and last seq, contiguity, ordered checksum)
   while writers go on.
2. Hold: `SELECT ... FOR UPDATE` on the source's `shard_owned` row of the unit. Every writer
   of the unit takes `FOR KEY SHARE` on that row in its batch transaction, so from here they
   wait (on every node; nothing is refused). The delta (seqs past the snapshot's, and rooms
   new since) is copied and verified the same way, and the row is deleted: committing releases
   the waiters, who find the unit gone (`NotOwned`).
3. Switch: the target is given the unit, then the directory points at it (version + 1). A
   writer that was turned away re-reads the directory and retries there; until the switch it
   retries with a short backoff (still waiting, not refused).
4. Only then the source's copy is deleted.

Messages are never changed once stored, so the bulk range verified in step 1 is still right in
step 2. If the move stops part way: before the fence commits, the source still serves and a new
run starts over (it clears the target's partial copy first); after it, nobody serves the unit
and writers wait: run the same move again, which finds the unit unowned and finishes it.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from storage.postgres._connection import Connection, Settings, postgres_errors, target_of
from storage.protocols import StorageError
from storage.routing import _shard_jobs as jobs
from storage.routing import directory as catalog
from storage.routing._shard_schema import SHARD_LOCK_KEY, SHARD_MIGRATIONS, SHARD_VERSION_TABLE
from storage.routing._shard_schema import apply as apply_schema

# (room_id, name, last_seq) of the unit's rooms; seqs copied and verified: (after, upto]
_RoomRow = tuple[int, str, int]
_PINNED_HERE = "'room:' || name IN (SELECT unit FROM shard_owned)"
_RANGE = "unnest(%s::bigint[], %s::bigint[], %s::bigint[]) AS w(room_id, after, upto)"
_COPY_OUT = (
    "COPY (SELECT m.id, m.room_id, m.seq, m.user_id, m.user_name, m.text, m.ts, m.client_id,"
    " m.kind, m.target, m.edited_at, m.deleted"
    f" FROM shard_messages AS m JOIN {_RANGE} USING (room_id)"
    " WHERE m.seq > w.after AND m.seq <= w.upto) TO STDOUT"
)
_COPY_IN = (
    "COPY shard_messages (id, room_id, seq, user_id, user_name, text, ts, client_id, kind,"
    " target, edited_at, deleted) FROM STDIN"
)
_SUMMARY = (
    "SELECT w.room_id, count(m.seq), min(m.seq), max(m.seq), md5(coalesce(string_agg("
    "json_build_array(m.id, m.seq, m.user_id, m.user_name, m.text, m.client_id, m.ts, m.kind,"
    " m.target, m.edited_at, m.deleted)::text,"
    f" E'\\n' ORDER BY m.seq), '')) FROM {_RANGE}"
    " LEFT JOIN shard_messages AS m ON m.room_id = w.room_id AND m.seq > w.after"
    " AND m.seq <= w.upto GROUP BY w.room_id ORDER BY w.room_id"
)


@dataclass(frozen=True, slots=True)
class Scope:
    """The rooms a move takes from a shard database: a logical shard's, except those pinned
    there (they have a unit of their own), or one room (a pin)."""

    logical: int
    room: str | None = None

    @property
    def where(self) -> str:
        if self.room is not None:
            return "name = %s"
        return f"logical = %s AND NOT {_PINNED_HERE}"

    @property
    def params(self) -> tuple[object, ...]:
        return (self.logical,) if self.room is None else (self.room,)

    def rooms(self, conn: Connection) -> list[_RoomRow]:
        rows = conn.execute(
            f"SELECT room_id, name, last_seq FROM shard_rooms WHERE {self.where} ORDER BY room_id",
            self.params,
        ).fetchall()
        return [(int(a), str(b), int(c)) for a, b, c in rows]


# Run inside the hold: turn the unit's (or the room's) writers away; the `away` list the new
# home's unit row must carry on.
Fence = Callable[[Connection], list[str]]


class MoveFailed(StorageError):
    """The move stopped; the message says where, and what a rerun does."""


@dataclass(frozen=True, slots=True)
class MoveResult:
    logical: int
    source: str
    target: str
    rooms: int
    messages: int
    delta: int  # messages copied while writers were held
    hold_seconds: float
    seconds: float
    version: int


def move_logical(
    catalog_url: str, shard_urls: Mapping[str, str], logical: int, to_url: str
) -> MoveResult:
    """Move logical shard `logical` to the database at `to_url` (blocking). `shard_urls`:
    target (host:port/db) -> URL of every shard database the directory may name."""
    unit = catalog.unit_of_logical(logical)
    with postgres_errors(catalog_url), _connect(catalog_url) as cat:
        source = catalog.read_directory(cat).logical[logical]

        def fence(src: Connection) -> list[str]:
            row = src.execute(
                "DELETE FROM shard_owned WHERE unit = %s RETURNING away", (unit,)
            ).fetchone()
            return [] if row is None else list(row[0])

        return run_move(cat, shard_urls, Scope(logical), (source, unit), (to_url, unit), fence)


def run_move(
    cat: Connection,
    shard_urls: Mapping[str, str],
    scope: Scope,
    source: tuple[str, str],
    dest: tuple[str, str],
    fence: Fence,
) -> MoveResult:
    """Move `scope` from `source` (target, the unit it serves it by) to `dest` (URL, the unit
    it will serve it by), then switch the directory's entry for the dest unit."""
    started = time.perf_counter()
    (home, unit), (to_url, new_unit) = source, dest
    target = target_of(to_url)
    if home == target:
        raise MoveFailed(f"{scope.room or f'logical shard {scope.logical}'} is already on {target}")
    if home not in shard_urls:
        raise MoveFailed(f"{home} (the current home of {unit}) is not in [storage] shards")
    with _connect(shard_urls[home]) as src, _connect(to_url) as dst:
        apply_schema(dst, SHARD_VERSION_TABLE, SHARD_MIGRATIONS, SHARD_LOCK_KEY)
        if _owns(dst, new_unit):
            if scope.room is None and _owns(src, unit):
                raise MoveFailed(f"{home} and {target} both serve {unit}: fix by hand")
            version = catalog.switch(cat, new_unit, target)  # a move that stopped before this
            _clear(src, scope)
            return MoveResult(scope.logical, home, target, 0, 0, 0, 0.0, 0.0, version)
        _clear(dst, scope)
        copied = _bulk(src, dst, scope)
        held, delta, hold, away = _hold_and_finish(src, dst, scope, unit, copied, fence)
        jobs.own(dst, [new_unit], away)
        version = catalog.switch(cat, new_unit, target)
        _clear(src, scope)
    messages = sum(last for _, _, last in held)
    seconds = time.perf_counter() - started
    return MoveResult(
        scope.logical, home, target, len(held), messages, delta, hold, seconds, version
    )


def _connect(url: str) -> Connection:
    return Settings(url, statement_timeout=600.0).connect()


def _owns(conn: Connection, unit: str) -> bool:
    return conn.execute("SELECT 1 FROM shard_owned WHERE unit = %s", (unit,)).fetchone() is not None


def _bulk(src: Connection, dst: Connection, scope: Scope) -> dict[int, int]:
    """Copy the scope's rooms and messages as of one snapshot, verify them; seq copied per
    room."""
    with src.transaction():
        src.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        rooms = scope.rooms(src)
        ranges = {room_id: (0, last) for room_id, _, last in rooms}
        _copy(src, dst, scope.logical, rooms, ranges)
    _verify(src, dst, ranges)
    return {room_id: upto for room_id, (_, upto) in ranges.items()}


def _hold_and_finish(
    src: Connection, dst: Connection, scope: Scope, unit: str, copied: dict[int, int], fence: Fence
) -> tuple[list[_RoomRow], int, float, list[str]]:
    """Hold the unit's writers, copy and verify the delta, fence the source; (rooms, delta
    messages, seconds held, the unit's `away` list for the new home)."""
    with src.transaction():
        owned = src.execute(
            "SELECT unit FROM shard_owned WHERE unit = %s FOR UPDATE", (unit,)
        ).fetchone()
        held_at = time.perf_counter()  # every writer of the unit waits from here
        if owned is None and scope.room is not None:
            raise MoveFailed(f"the source does not serve {unit}")
        # owned is None for a logical shard: a rerun after a move stopped past its fence
        rooms = scope.rooms(src)
        ranges = {room_id: (copied.get(room_id, 0), last) for room_id, _, last in rooms}
        _copy(src, dst, scope.logical, rooms, ranges)
        _verify(src, dst, ranges)
        away = fence(src)
    hold = time.perf_counter() - held_at
    return rooms, sum(upto - after for after, upto in ranges.values()), hold, away


def _copy(
    src: Connection,
    dst: Connection,
    logical: int,
    rooms: Sequence[tuple[Any, ...]],
    ranges: dict[int, tuple[int, int]],
) -> None:
    ids = list(ranges)
    with dst.transaction():
        with dst.cursor() as cur:
            cur.executemany(
                "INSERT INTO shard_rooms (room_id, name, logical, last_seq) VALUES (%s, %s, %s, %s)"
                " ON CONFLICT (room_id) DO UPDATE SET last_seq = excluded.last_seq",
                [(r[0], r[1], logical, r[2]) for r in rooms],
            )
        params = (ids, [ranges[i][0] for i in ids], [ranges[i][1] for i in ids])
        with (
            src.cursor().copy(_COPY_OUT, params) as out,
            dst.cursor().copy(_COPY_IN) as into,
        ):
            for data in out:
                into.write(data)


def _verify(src: Connection, dst: Connection, ranges: dict[int, tuple[int, int]]) -> None:
    ids = list(ranges)
    params = (ids, [ranges[i][0] for i in ids], [ranges[i][1] for i in ids])
    ours = src.execute(_SUMMARY, params).fetchall()
    theirs = dst.execute(_SUMMARY, params).fetchall()
    for (room_id, count, first, last, digest), other in zip(ours, theirs, strict=True):
        after, upto = ranges[int(room_id)]
        whole = count == upto - after and (count == 0 or (first, last) == (after + 1, upto))
        if not whole or other != (room_id, count, first, last, digest):
            raise MoveFailed(
                f"room id {room_id}: seqs ({after}, {upto}] differ after the copy"
                f" (source {count} messages {first}..{last},"
                f" target {other[1]} {other[2]}..{other[3]})"
                "; the source still serves it, nothing was switched"
            )


def _clear(conn: Connection, scope: Scope) -> None:
    """Delete the scope's rooms and messages here (a target's leftovers, a source's old copy)."""
    with conn.transaction():
        conn.execute(
            "DELETE FROM shard_messages WHERE room_id IN"
            f" (SELECT room_id FROM shard_rooms WHERE {scope.where})",
            scope.params,
        )
        conn.execute(f"DELETE FROM shard_rooms WHERE {scope.where}", scope.params)


@dataclass(frozen=True, slots=True)
class ShardStatus:
    target: str
    logical: int  # logical shards the directory places here
    owned: int  # units this database serves (shard_owned)
    rooms: int
    messages: int
    bytes: int


def status(catalog_url: str, shard_urls: Mapping[str, str]) -> tuple[int, list[ShardStatus]]:
    """(directory version, each database's share and sizes), for `hibiki shards status`."""
    with postgres_errors(catalog_url), _connect(catalog_url) as cat:
        directory = catalog.read_directory(cat)
    out: list[ShardStatus] = []
    for target, url in sorted(shard_urls.items()):
        with _connect(url) as conn:
            apply_schema(conn, SHARD_VERSION_TABLE, SHARD_MIGRATIONS, SHARD_LOCK_KEY)
            row = conn.execute(
                "SELECT (SELECT count(*) FROM shard_owned), (SELECT count(*) FROM shard_rooms),"
                " (SELECT count(*) FROM shard_messages),"
                " pg_total_relation_size('shard_messages') + pg_total_relation_size('shard_rooms')"
            ).fetchone()
        assert row is not None
        placed = sum(1 for t in directory.logical.values() if t == target)
        out.append(ShardStatus(target, placed, *(int(v) for v in row)))
    return directory.version, out
