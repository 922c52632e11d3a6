"""Blocking jobs for rooms and memberships; each runs on a connection's own thread.

Reads of an unknown room return nothing (None, [], False) rather than raise; only `join_room`
and `last_seq` raise `NotFound`. Write jobs run with foreign keys enforced
(`enforcing_foreign_keys`): an unknown user id becomes `NotFound` through the constraint.
"""

from __future__ import annotations

import sqlite3

from storage.protocols import NotFound, Room
from storage.sqlite._connection import constraint_error, now_ms, transaction


def create_room(conn: sqlite3.Connection, name: str, created_by: int) -> Room:
    now = now_ms()
    with transaction(conn):
        try:
            cur = conn.execute(
                "INSERT INTO rooms (name, created_by, created_at) VALUES (?, ?, ?)",
                (name, created_by, now),
            )
            conn.execute(
                "INSERT INTO memberships (room_id, user_id, joined_at) VALUES (?, ?, ?)",
                (cur.lastrowid, created_by, now),
            )
        except sqlite3.IntegrityError as exc:
            raise constraint_error(exc, f"room name {name!r}") from exc
    assert cur.lastrowid is not None
    return Room(cur.lastrowid, name, created_by, 0)


_ROOM_COLUMNS = "id, name, created_by, last_seq"


def get_room(conn: sqlite3.Connection, name: str) -> Room | None:
    row = conn.execute(f"SELECT {_ROOM_COLUMNS} FROM rooms WHERE name = ?", (name,)).fetchone()
    return None if row is None else Room(*row)


def list_rooms(conn: sqlite3.Connection, limit: int) -> list[Room]:
    rows = conn.execute(f"SELECT {_ROOM_COLUMNS} FROM rooms ORDER BY name LIMIT ?", (limit,))
    return [Room(*row) for row in rows]


def join_room(conn: sqlite3.Connection, room: str, user_id: int) -> bool:
    row = conn.execute("SELECT id FROM rooms WHERE name = ?", (room,)).fetchone()
    if row is None:
        raise NotFound(f"no room named {room!r}")
    try:
        cur = conn.execute(
            "INSERT OR IGNORE INTO memberships (room_id, user_id, joined_at) VALUES (?, ?, ?)",
            (row[0], user_id, now_ms()),
        )
    except sqlite3.IntegrityError as exc:
        raise constraint_error(exc, "membership") from exc
    return cur.rowcount == 1


def leave_room(conn: sqlite3.Connection, room: str, user_id: int) -> bool:
    cur = conn.execute(
        "DELETE FROM memberships"
        " WHERE room_id = (SELECT id FROM rooms WHERE name = ?) AND user_id = ?",
        (room, user_id),
    )
    return cur.rowcount == 1


def is_member(conn: sqlite3.Connection, room: str, user_id: int) -> bool:
    row = conn.execute(
        "SELECT 1 FROM memberships"
        " WHERE room_id = (SELECT id FROM rooms WHERE name = ?) AND user_id = ?",
        (room, user_id),
    ).fetchone()
    return row is not None


def rooms_of(conn: sqlite3.Connection, user_id: int) -> list[str]:
    rows = conn.execute(
        "SELECT r.name FROM memberships AS m JOIN rooms AS r ON r.id = m.room_id"
        " WHERE m.user_id = ? ORDER BY r.name",
        (user_id,),
    )
    return [name for (name,) in rows]


def members(conn: sqlite3.Connection, room: str) -> list[str]:
    rows = conn.execute(
        "SELECT u.name FROM memberships AS m JOIN users AS u ON u.id = m.user_id"
        " WHERE m.room_id = (SELECT id FROM rooms WHERE name = ?) ORDER BY u.name",
        (room,),
    )
    return [name for (name,) in rows]


def last_seq(conn: sqlite3.Connection, room: str) -> int:
    row = conn.execute("SELECT last_seq FROM rooms WHERE name = ?", (room,)).fetchone()
    if row is None:
        raise NotFound(f"no room named {room!r}")
    last: int = row[0]
    return last


LAST_SEQS_CHUNK = 500  # names per statement: far below SQLite's bound on host parameters


def last_seqs(conn: sqlite3.Connection, rooms: tuple[str, ...]) -> dict[str, int]:
    """One statement per chunk of names (each value is what its room had at some instant
    during the call: all a caller comparing with what it delivered needs); unknown names are
    left out."""
    out: dict[str, int] = {}
    for start in range(0, len(rooms), LAST_SEQS_CHUNK):
        chunk = rooms[start : start + LAST_SEQS_CHUNK]
        marks = ",".join("?" * len(chunk))
        sql = f"SELECT name, last_seq FROM rooms WHERE name IN ({marks})"
        out.update(conn.execute(sql, chunk).fetchall())
    return out
