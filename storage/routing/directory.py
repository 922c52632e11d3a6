"""The shard directory in the catalog database: logical shard -> database, and pinned rooms.

Databases are named by their target (host:port/database, as `storage.postgres` prints it),
never by URL: a URL may carry a password, and the directory is shared by every node, each of
which knows the URLs from its own `[storage] shards`. A room is served by its pin if it has one,
else by its logical shard's database; `unit` names what a shard database must own to serve it
(`L17`, or `room:NAME` for a pinned room), which is what the fence in `shard_owned` checks.

Nodes read the directory when they open and again whenever a shard database answers that it no
longer owns a unit (a move switched it): no bus message is needed, and a node that missed
nothing pays nothing. `version` rises with every switch.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from storage.postgres._connection import Connection
from storage.routing.shards import LOGICAL_SHARDS, logical_shard, spread


@dataclass(frozen=True, slots=True)
class Placement:
    target: str
    unit: str


@dataclass(frozen=True, slots=True)
class Directory:
    """One read of the directory: immutable, replaced whole on refresh."""

    version: int
    logical: dict[int, str]
    pins: dict[str, str] = field(default_factory=dict)

    def place(self, room: str) -> Placement:
        pinned = self.pins.get(room)
        if pinned is not None:
            return Placement(pinned, f"room:{room}")
        shard = logical_shard(room)
        return Placement(self.logical[shard], f"L{shard}")

    def targets(self) -> set[str]:
        return set(self.logical.values()) | set(self.pins.values())


def unit_of_logical(shard: int) -> str:
    return f"L{shard}"


def read_directory(conn: Connection) -> Directory:
    with conn.transaction():  # one snapshot of map, pins and version
        conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        version = conn.execute("SELECT version FROM shard_directory_version").fetchone()
        logical = conn.execute("SELECT logical, target FROM shard_directory").fetchall()
        pins = conn.execute("SELECT room, target FROM shard_pins").fetchall()
    assert version is not None
    return Directory(
        int(version[0]),
        {int(shard): str(target) for shard, target in logical},
        {str(room): str(target) for room, target in pins},
    )


def create_directory(conn: Connection, targets: Sequence[str]) -> dict[int, str] | None:
    """The first assignment (`spread`) if the directory is empty, else None. Call it under
    `lock_directory` and give each database its units before committing."""
    row = conn.execute("SELECT count(*) FROM shard_directory").fetchone()
    if row is not None and int(row[0]) > 0:
        return None
    assignment = spread(targets)
    with conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO shard_directory (logical, target) VALUES (%s, %s)",
            sorted(assignment.items()),
        )
    assert len(assignment) == LOGICAL_SHARDS
    return assignment


def lock_directory(conn: Connection) -> None:
    """Serialise directory changes (first creation, switches) across nodes and tools."""
    conn.execute("SELECT version FROM shard_directory_version FOR UPDATE")


def switch(conn: Connection, unit: str, target: str) -> int:
    """Point `unit` at `target` and bump the version; the new version."""
    with conn.transaction():
        lock_directory(conn)
        if unit.startswith("room:"):
            conn.execute(
                "INSERT INTO shard_pins (room, target) VALUES (%s, %s)"
                " ON CONFLICT (room) DO UPDATE SET target = excluded.target",
                (unit.removeprefix("room:"), target),
            )
        else:
            conn.execute(
                "UPDATE shard_directory SET target = %s WHERE logical = %s",
                (target, int(unit.removeprefix("L"))),
            )
        return _bump(conn)


def unpin(conn: Connection, room: str) -> int:
    """Drop `room`'s pin (it is placed by its logical shard again) and bump the version; the
    new version."""
    with conn.transaction():
        lock_directory(conn)
        conn.execute("DELETE FROM shard_pins WHERE room = %s", (room,))
        return _bump(conn)


def _bump(conn: Connection) -> int:
    row = conn.execute(
        "UPDATE shard_directory_version SET version = version + 1 RETURNING version"
    ).fetchone()
    assert row is not None
    return int(row[0])


@dataclass(frozen=True, slots=True)
class BatchCatalog:
    """What one batch needs from the catalog: room ids, which user ids exist, new message ids
    (one per message of the batch, rising)."""

    rooms: dict[str, int]
    users: frozenset[int]
    ids: list[int]


def batch_catalog(
    conn: Connection, rooms: Sequence[str], users: Sequence[int], count: int
) -> BatchCatalog:
    """One round trip: rooms by name, known users, and `count` ids from the sequence."""
    row = conn.execute(
        "SELECT"
        " ARRAY(SELECT id FROM rooms WHERE name = ANY(%s) ORDER BY name),"
        " ARRAY(SELECT name FROM rooms WHERE name = ANY(%s) ORDER BY name),"
        " ARRAY(SELECT id FROM users WHERE id = ANY(%s)),"
        " ARRAY(SELECT nextval('shard_message_ids') FROM generate_series(1, %s))",
        (list(rooms), list(rooms), list(users), count),
    ).fetchone()
    assert row is not None
    room_ids, names, known, ids = row
    return BatchCatalog(
        {str(n): int(i) for n, i in zip(names, room_ids, strict=True)},
        frozenset(int(u) for u in known),
        sorted(int(i) for i in ids),
    )
