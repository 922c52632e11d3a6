"""Blocking jobs for rooms and memberships; each runs on a pooled connection's worker thread.

Reads of an unknown room return nothing (None, [], False) rather than raise; only `join_room`
and `last_seq` raise `NotFound`. An unknown user id becomes `NotFound` through the foreign key.
"""

from __future__ import annotations

import psycopg
import psycopg.errors

from storage.postgres._connection import Connection, constraint_error, now_ms
from storage.protocols import NotFound, Room

_ROOM_COLUMNS = "id, name, created_by, last_seq"
_ROOM_ID = "(SELECT id FROM rooms WHERE name = %s)"


def create_room(conn: Connection, name: str, created_by: int) -> Room:
    now = now_ms()
    try:
        with conn.transaction():
            row = conn.execute(
                "INSERT INTO rooms (name, created_by, created_at) VALUES (%s, %s, %s) RETURNING id",
                (name, created_by, now),
            ).fetchone()
            assert row is not None
            conn.execute(
                "INSERT INTO memberships (room_id, user_id, joined_at) VALUES (%s, %s, %s)",
                (row[0], created_by, now),
            )
    except psycopg.errors.IntegrityError as exc:
        raise constraint_error(exc, f"room name {name!r}") from exc
    return Room(int(row[0]), name, created_by, 0)


def get_room(conn: Connection, name: str) -> Room | None:
    row = conn.execute(f"SELECT {_ROOM_COLUMNS} FROM rooms WHERE name = %s", (name,)).fetchone()
    return None if row is None else Room(*row)


def list_rooms(conn: Connection, limit: int) -> list[Room]:
    rows = conn.execute(
        f'SELECT {_ROOM_COLUMNS} FROM rooms ORDER BY name COLLATE "C" LIMIT %s', (limit,)
    )
    return [Room(*row) for row in rows]


def join_room(conn: Connection, room: str, user_id: int) -> bool:
    row = conn.execute("SELECT id FROM rooms WHERE name = %s", (room,)).fetchone()
    if row is None:
        raise NotFound(f"no room named {room!r}")
    try:
        cur = conn.execute(
            "INSERT INTO memberships (room_id, user_id, joined_at) VALUES (%s, %s, %s)"
            " ON CONFLICT DO NOTHING",
            (row[0], user_id, now_ms()),
        )
    except psycopg.errors.IntegrityError as exc:
        raise constraint_error(exc, "membership") from exc
    return cur.rowcount == 1


def leave_room(conn: Connection, room: str, user_id: int) -> bool:
    cur = conn.execute(
        f"DELETE FROM memberships WHERE room_id = {_ROOM_ID} AND user_id = %s", (room, user_id)
    )
    return cur.rowcount == 1


def is_member(conn: Connection, room: str, user_id: int) -> bool:
    row = conn.execute(
        f"SELECT 1 FROM memberships WHERE room_id = {_ROOM_ID} AND user_id = %s", (room, user_id)
    ).fetchone()
    return row is not None


def rooms_of(conn: Connection, user_id: int) -> list[str]:
    rows = conn.execute(
        "SELECT r.name FROM memberships AS m JOIN rooms AS r ON r.id = m.room_id"
        ' WHERE m.user_id = %s ORDER BY r.name COLLATE "C"',
        (user_id,),
    )
    return [str(name) for (name,) in rows]


def members(conn: Connection, room: str) -> list[str]:
    rows = conn.execute(
        "SELECT u.name FROM memberships AS m JOIN users AS u ON u.id = m.user_id"
        f' WHERE m.room_id = {_ROOM_ID} ORDER BY u.name COLLATE "C"',
        (room,),
    )
    return [str(name) for (name,) in rows]


def last_seq(conn: Connection, room: str) -> int:
    row = conn.execute("SELECT last_seq FROM rooms WHERE name = %s", (room,)).fetchone()
    if row is None:
        raise NotFound(f"no room named {room!r}")
    return int(row[0])


def last_seqs(conn: Connection, rooms: list[str]) -> dict[str, int]:
    """One statement (the names as one array parameter); unknown names are left out."""
    rows = conn.execute("SELECT name, last_seq FROM rooms WHERE name = ANY(%s)", (rooms,))
    return {str(name): int(last) for name, last in rows.fetchall()}
