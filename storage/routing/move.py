"""`hibiki shards move L --to URL`: a logical shard moved to another database while it serves.

1. Bulk copy: the shard's rooms and messages, from one REPEATABLE READ snapshot of the source,
   by COPY; then verified (per room: count, first and last seq, contiguity, ordered checksum)
   while writers go on.
2. Hold: `SELECT ... FOR UPDATE` on the source's `shard_owned` row of the unit. Every writer
   of the unit takes `FOR KEY SHARE` on that row in its batch transaction, so from here they
   wait (on every node; nothing is refused). The delta (seqs past the snapshot's, and rooms
   new since) is copied and verified the same way, and the row is deleted: committing releases
   the waiters, who find the unit gone (`NotOwned`).
3. Switch: the target is given the unit, then the directory points at it (version + 1); a pin
   and an unpin (storage/routing/pin.py) give the target its part their own way (`Arrival`). A
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
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Protocol

from storage.postgres._connection import Connection, Settings, postgres_errors, target_of
from storage.protocols import StorageError
from storage.routing import _shard_jobs as jobs
from storage.routing import directory as catalog
from storage.routing._shard_schema import SHARD_LOCK_KEY, SHARD_MIGRATIONS, SHARD_VERSION_TABLE
from storage.routing._shard_schema import apply as apply_schema
from storage.routing.shard_events import carry_stream

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


class Arrival(Protocol):
    """How the new home comes to serve a move's scope, and how the directory then names it."""

    def served(self, dst: Connection) -> bool:
        """Whether `dst` serves the scope already (a rerun of a move that stopped after it)."""
        ...

    def take(self, dst: Connection, away: list[str]) -> None:
        """Make `dst` serve the scope (after the fence committed on the old home)."""
        ...

    def switch(self, cat: Connection, target: str) -> int:
        """Point the directory at `target` for the scope; the new directory version."""
        ...


@dataclass(frozen=True, slots=True)
class UnitArrival:
    """The new home serves the scope by a unit of its own (`L17` for a move, `room:NAME` for a
    pin), and the directory's entry of that unit names it."""

    unit: str

    def served(self, dst: Connection) -> bool:
        return _owns(dst, self.unit)

    def take(self, dst: Connection, away: list[str]) -> None:
        jobs.own(dst, [self.unit], away)

    def switch(self, cat: Connection, target: str) -> int:
        return catalog.switch(cat, self.unit, target)


class MoveFailed(StorageError):
    """The move stopped; the message says where, and what a rerun does."""


_OPERATION_LOCK = 0x68626B73  # the first key of `one_at_a_time`'s advisory locks; the second: L


@contextmanager
def one_at_a_time(cat: Connection, logical: int) -> Iterator[None]:
    """Hold the catalog's advisory lock of logical shard `logical` for a move, pin or unpin of
    it or one of its rooms (MoveFailed if another tool holds it): two such operations at once
    would each copy from a source the other is changing. Other logical shards move meanwhile."""
    row = cat.execute("SELECT pg_try_advisory_lock(%s, %s)", (_OPERATION_LOCK, logical)).fetchone()
    if row is None or not row[0]:
        raise MoveFailed(f"another `hibiki shards` operation on logical shard {logical} is running")
    try:
        yield
    finally:
        cat.execute("SELECT pg_advisory_unlock(%s, %s)", (_OPERATION_LOCK, logical))


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
    carried: int = 0  # copied rows handed to the target's event appender (shard_events.py)


def move_logical(
    catalog_url: str, shard_urls: Mapping[str, str], logical: int, to_url: str
) -> MoveResult:
    """Move logical shard `logical` to the database at `to_url` (blocking). `shard_urls`:
    target (host:port/db) -> URL of every shard database the directory may name."""
    unit = catalog.unit_of_logical(logical)
    with postgres_errors(catalog_url), _connect(catalog_url) as cat, one_at_a_time(cat, logical):
        source = catalog.read_directory(cat).logical[logical]

        def fence(src: Connection) -> list[str]:
            row = src.execute(
                "DELETE FROM shard_owned WHERE unit = %s RETURNING away", (unit,)
            ).fetchone()
            return [] if row is None else list(row[0])

        arrival = UnitArrival(unit)
        return run_move(cat, shard_urls, Scope(logical), (source, unit), to_url, arrival, fence)


def run_move(
    cat: Connection,
    shard_urls: Mapping[str, str],
    scope: Scope,
    source: tuple[str, str],
    to_url: str,
    arrival: Arrival,
    fence: Fence,
) -> MoveResult:
    """Move `scope` from `source` (target, the unit it serves it by) to the database at
    `to_url`, which `arrival` makes serve it, then switch the directory (`arrival.switch`)."""
    started = time.perf_counter()
    home, unit = source
    target = target_of(to_url)
    if home == target:
        raise MoveFailed(f"{scope.room or f'logical shard {scope.logical}'} is already on {target}")
    if home not in shard_urls:
        raise MoveFailed(f"{home} (the current home of {unit}) is not in [storage] shards")
    with _connect(shard_urls[home]) as src, _connect(to_url) as dst:
        apply_schema(dst, SHARD_VERSION_TABLE, SHARD_MIGRATIONS, SHARD_LOCK_KEY)
        if arrival.served(dst):
            if scope.room is None and _owns(src, unit):
                raise MoveFailed(f"{home} and {target} both serve {unit}: fix by hand")
            version = arrival.switch(cat, target)  # a move that stopped before this
            _clear(src, scope)
            return MoveResult(scope.logical, home, target, 0, 0, 0, 0.0, 0.0, version)
        _clear(dst, scope)
        copied = _bulk(src, dst, scope)
        held, delta, hold, away, carried = _hold_and_finish(src, dst, scope, unit, copied, fence)
        arrival.take(dst, away)
        version = arrival.switch(cat, target)
        _clear(src, scope)
    messages = sum(last for _, _, last in held)
    seconds = time.perf_counter() - started
    return MoveResult(
        scope.logical, home, target, len(held), messages, delta, hold, seconds, version, carried
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
) -> tuple[list[_RoomRow], int, float, list[str], int]:
    """Hold the unit's writers, copy and verify the delta, hand the event stream over, fence
    the source; (rooms, delta messages, seconds held, the unit's `away` list for the new home,
    rows handed to the target's event appender)."""
    with src.transaction():
        owned = src.execute(
            "SELECT unit FROM shard_owned WHERE unit = %s FOR UPDATE", (unit,)
        ).fetchone()
        held_at = time.perf_counter()  # every writer of the unit waits from here
        if owned is None and unit != f"room:{scope.room}" and scope.room is not None:
            raise MoveFailed(f"the source does not serve {unit}")
        # owned is None for a unit the fence deletes (a logical shard's, a pinned room's): a
        # rerun after a move stopped past its fence; nobody has written there since
        rooms = scope.rooms(src)
        ranges = {room_id: (copied.get(room_id, 0), last) for room_id, _, last in rooms}
        _copy(src, dst, scope.logical, rooms, ranges)
        _verify(src, dst, ranges)
        carried = carry_stream(src, dst, [room_id for room_id, _, _ in rooms])
        away = fence(src)
    hold = time.perf_counter() - held_at
    return rooms, sum(upto - after for after, upto in ranges.values()), hold, away, carried


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
