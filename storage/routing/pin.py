"""`hibiki shards pin ROOM --to URL`: one room (a hot one) moved onto a database of its own.

The same steps as a logical shard's move (storage/routing/move.py), for one room: copy and
verify, hold, delta and verify, fence, switch, delete the old copy. What differs is the unit
and the fence. The room's writers are held through the unit the room is served by now: its
logical shard's (all of that shard's writers wait for the hold, a few milliseconds) or its
current pin's. The fence then either adds the room to the logical shard's `away` list on the
old home (the rest of the shard stays served there) or deletes the old pin's unit. The new home
serves the room as `room:NAME`, and the directory's `shard_pins` names it.

Not done here: unpinning (a room back onto its logical shard's database).
"""

from __future__ import annotations

from collections.abc import Mapping

from storage.postgres._connection import Connection, Settings, postgres_errors, target_of
from storage.routing import directory as catalog
from storage.routing.move import MoveFailed, MoveResult, Scope, run_move
from storage.routing.shards import logical_shard


def pin_room(catalog_url: str, shard_urls: Mapping[str, str], room: str, to_url: str) -> MoveResult:
    """Pin `room` to the database at `to_url`, moving its messages there online (blocking)."""
    with postgres_errors(catalog_url), _connect(catalog_url) as cat:
        found = cat.execute("SELECT 1 FROM rooms WHERE name = %s", (room,)).fetchone()
        if found is None:
            raise MoveFailed(f"no room named {room!r}")
        place = catalog.read_directory(cat).place(room)
        logical = logical_shard(room)
        if place.unit == f"room:{room}":
            home_of_shard = catalog.read_directory(cat).logical[logical]
            if target_of(to_url) == home_of_shard:
                raise MoveFailed("unpinning (back to the logical shard's database) is not built")

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
        return run_move(
            cat, shard_urls, Scope(logical, room), source, (to_url, f"room:{room}"), fence
        )


def _connect(url: str) -> Connection:
    return Settings(url, statement_timeout=600.0).connect()
