"""`hibiki shards pin ROOM --to URL` and `unpin ROOM`: one room (a hot one) moved onto a database
of its own, and back onto its logical shard's database.

The same steps as a logical shard's move (storage/routing/move.py), for one room: copy and
verify, hold, delta and verify, fence, switch, delete the old copy. What differs is the unit,
the fence and how the new home takes the room (its `Arrival`).

Pin: the room's writers are held through the unit the room is served by now: its logical
shard's (all of that shard's writers wait for the hold, a few milliseconds) or its current
pin's. The fence then either adds the room to the logical shard's `away` list on the old home
(the rest of the shard stays served there) or deletes the old pin's unit. The new home serves
the room as `room:NAME`, and the directory's `shard_pins` names it.

Unpin: the writers are held through `room:NAME` on the pin's database, and the fence deletes
that unit. The logical shard's database takes the room back by dropping it from its unit's
`away` list, and the directory drops the pin. A room whose pin is the logical shard's own
database (the shard was moved onto it later) has nothing to copy: one transaction there drops
the pin's unit and the `away` entry.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass

from storage.postgres._connection import Connection, Settings, postgres_errors, target_of
from storage.routing import directory as catalog
from storage.routing.move import MoveFailed, MoveResult, Scope, UnitArrival, one_at_a_time, run_move
from storage.routing.shards import logical_shard


def pin_room(catalog_url: str, shard_urls: Mapping[str, str], room: str, to_url: str) -> MoveResult:
    """Pin `room` to the database at `to_url`, moving its messages there online (blocking)."""
    logical = logical_shard(room)
    with postgres_errors(catalog_url), _connect(catalog_url) as cat, one_at_a_time(cat, logical):
        found = cat.execute("SELECT 1 FROM rooms WHERE name = %s", (room,)).fetchone()
        if found is None:
            raise MoveFailed(f"no room named {room!r}")
        directory = catalog.read_directory(cat)
        place = directory.place(room)
        if place.unit == f"room:{room}" and target_of(to_url) == directory.logical[logical]:
            raise MoveFailed(
                f"{target_of(to_url)} is the logical shard's own database: use `shards unpin`"
            )

        def fence(src: Connection) -> list[str]:
            if place.unit.startswith("room:"):
                src.execute("DELETE FROM shard_owned WHERE unit = %s", (place.unit,))
            else:
                src.execute(
                    "UPDATE shard_owned SET away = array_append(away, %s)"
                    " WHERE unit = %s AND NOT %s = ANY(away)",
                    (room, place.unit, room),
                )
            return []

        source = (place.target, place.unit)
        arrival = UnitArrival(f"room:{room}")
        return run_move(cat, shard_urls, Scope(logical, room), source, to_url, arrival, fence)


@dataclass(frozen=True, slots=True)
class ShardReturn:
    """An unpin's `Arrival`: the logical shard's database serves the room again once its
    unit's row no longer lists it `away`; then the directory drops the pin."""

    room: str
    unit: str  # the logical shard's

    def served(self, dst: Connection) -> bool:
        row = dst.execute("SELECT away FROM shard_owned WHERE unit = %s", (self.unit,)).fetchone()
        if row is None:
            raise MoveFailed(
                f"the logical shard's database does not serve {self.unit}: is a `shards move`"
                " of it unfinished? Run it again first"
            )
        return self.room not in row[0]

    def take(self, dst: Connection, away: list[str]) -> None:
        del away  # the pin's unit had none
        taken = dst.execute(
            "UPDATE shard_owned SET away = array_remove(away, %s) WHERE unit = %s",
            (self.room, self.unit),
        )
        if taken.rowcount != 1:
            raise MoveFailed(f"{self.unit} went from its database during the unpin: run it again")

    def switch(self, cat: Connection, target: str) -> int:
        del target  # the directory's logical entry names it already
        return catalog.unpin(cat, self.room)


def unpin_room(catalog_url: str, shard_urls: Mapping[str, str], room: str) -> MoveResult:
    """Move pinned `room` back onto its logical shard's database, online (blocking)."""
    logical = logical_shard(room)
    with postgres_errors(catalog_url), _connect(catalog_url) as cat, one_at_a_time(cat, logical):
        directory = catalog.read_directory(cat)
        pinned = directory.pins.get(room)
        if pinned is None:
            raise MoveFailed(f"room {room!r} is not pinned")
        home = directory.logical[logical]
        if home not in shard_urls:
            raise MoveFailed(
                f"{home} (logical shard {logical}'s database) is not in [storage] shards"
            )
        back = ShardReturn(room, catalog.unit_of_logical(logical))
        if pinned == home:
            return _unpin_in_place(cat, shard_urls[home], Scope(logical, room), back)

        def fence(src: Connection) -> list[str]:
            src.execute("DELETE FROM shard_owned WHERE unit = %s", (f"room:{room}",))
            return []

        source = (pinned, f"room:{room}")
        return run_move(
            cat, shard_urls, Scope(logical, room), source, shard_urls[home], back, fence
        )


def _unpin_in_place(cat: Connection, url: str, scope: Scope, back: ShardReturn) -> MoveResult:
    """The pin is on the logical shard's database itself: its writers wait on the delete of
    `room:NAME` (the hold) while the logical unit takes the room back, in one transaction."""
    started = time.perf_counter()
    with _connect(url) as conn:
        with conn.transaction():
            if not back.served(conn):
                back.take(conn, [])
            conn.execute("DELETE FROM shard_owned WHERE unit = %s", (f"room:{back.room}",))
            rooms = scope.rooms(conn)
        hold = time.perf_counter() - started
    version = back.switch(cat, target_of(url))
    target = target_of(url)
    messages = sum(last for _, _, last in rooms)
    seconds = time.perf_counter() - started
    return MoveResult(
        scope.logical, target, target, len(rooms), messages, 0, hold, seconds, version
    )


def _connect(url: str) -> Connection:
    return Settings(url, statement_timeout=600.0).connect()
