"""`hibiki shards status`: the directory (logical shard -> database, pins) and the sizes behind it.

Sizes are counted on each shard database (rooms and messages rows, not the catalog's view): a
logical shard's are those of its rooms on the database the directory places it on, its pinned
rooms left out (each pin is listed with its own count). A database's totals are every row it
holds, so a copy left by a stopped move shows there and nowhere else.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from storage.postgres._connection import Connection, Settings, postgres_errors
from storage.routing import directory as catalog
from storage.routing._shard_schema import SHARD_LOCK_KEY, SHARD_MIGRATIONS, SHARD_VERSION_TABLE
from storage.routing._shard_schema import apply as apply_schema
from storage.routing.shards import logical_shard

_TOTALS = (
    "SELECT (SELECT count(*) FROM shard_owned), (SELECT count(*) FROM shard_rooms),"
    " (SELECT count(*) FROM shard_messages),"
    " pg_total_relation_size('shard_messages') + pg_total_relation_size('shard_rooms')"
)
_PER_ROOM = (
    "SELECT r.name, count(m.id) FROM shard_rooms AS r"
    " LEFT JOIN shard_messages AS m USING (room_id) WHERE r.name = ANY(%s) GROUP BY r.room_id"
)
_PER_LOGICAL = (
    "SELECT r.logical, count(*), coalesce(sum(c.n), 0) FROM shard_rooms AS r"
    " LEFT JOIN (SELECT room_id, count(*) AS n FROM shard_messages GROUP BY room_id) AS c"
    " USING (room_id) WHERE NOT r.name = ANY(%s) GROUP BY r.logical"
)


@dataclass(frozen=True, slots=True)
class Sizes:
    rooms: int = 0
    messages: int = 0


@dataclass(frozen=True, slots=True)
class DatabaseStatus:
    target: str
    logical: int  # logical shards the directory places here
    pinned: int  # rooms the directory pins here
    owned: int  # units this database serves (shard_owned)
    rooms: int
    messages: int
    bytes: int


@dataclass(frozen=True, slots=True)
class PinStatus:
    room: str
    logical: int
    target: str
    messages: int


@dataclass(frozen=True, slots=True)
class ShardsStatus:
    version: int
    databases: list[DatabaseStatus]
    logical: dict[int, tuple[str, Sizes]]  # every logical shard: its database, its sizes there
    pins: list[PinStatus] = field(default_factory=list)


def status(catalog_url: str, shard_urls: Mapping[str, str]) -> ShardsStatus:
    """The directory and every shard database's sizes (blocking)."""
    with postgres_errors(catalog_url), _connect(catalog_url) as cat:
        directory = catalog.read_directory(cat)
    pinned = sorted(directory.pins)
    databases: list[DatabaseStatus] = []
    sizes: dict[tuple[int, str], Sizes] = {}
    pins: list[PinStatus] = []
    for target, url in sorted(shard_urls.items()):
        with _connect(url) as conn:
            apply_schema(conn, SHARD_VERSION_TABLE, SHARD_MIGRATIONS, SHARD_LOCK_KEY)
            owned, rooms, messages, size = _one(conn, _TOTALS, ())
            for logical, count, held in conn.execute(_PER_LOGICAL, (pinned,)).fetchall():
                sizes[(int(logical), target)] = Sizes(int(count), int(held))
            here = [room for room in pinned if directory.pins[room] == target]
            held = dict(conn.execute(_PER_ROOM, (here,)).fetchall())
            # a pinned room with no message yet has no row
            pins += [PinStatus(r, logical_shard(r), target, int(held.get(r, 0))) for r in here]
        placed = sum(1 for t in directory.logical.values() if t == target)
        databases.append(DatabaseStatus(target, placed, len(here), owned, rooms, messages, size))
    logical = {
        shard: (target, sizes.get((shard, target), Sizes()))
        for shard, target in sorted(directory.logical.items())
    }
    return ShardsStatus(directory.version, databases, logical, pins)


def _one(conn: Connection, query: str, params: tuple[object, ...]) -> tuple[int, ...]:
    row = conn.execute(query, params).fetchone()
    assert row is not None
    return tuple(int(v) for v in row)


def _connect(url: str) -> Connection:
    return Settings(url, statement_timeout=600.0).connect()
