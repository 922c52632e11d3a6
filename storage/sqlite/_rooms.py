"""Blocking jobs for rooms and memberships; each runs on a connection's own thread.

Reads of an unknown room return nothing (None, [], False) rather than raise; only `join_room`
(also for a private room the user is not in) and `last_seq` raise `NotFound`. Write jobs run
with foreign keys enforced (`enforcing_foreign_keys`): an unknown user id becomes `NotFound`
through the constraint.
"""

from __future__ import annotations

import sqlite3

from storage.protocols import Banned, NotFound, Room
from storage.room_admin import PRIVATE, PUBLIC, ROLE_OWNER
from storage.sqlite._connection import constraint_error, now_ms, transaction


def create_room(
    conn: sqlite3.Connection, name: str, created_by: int, private: bool, topic: str
) -> Room:
    now = now_ms()
    visibility = PRIVATE if private else PUBLIC
    with transaction(conn):
        try:
            cur = conn.execute(
                "INSERT INTO rooms (name, created_by, created_at, visibility, topic, owner_id)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                (name, created_by, now, visibility, topic, created_by),
            )
            conn.execute(
                "INSERT INTO memberships (room_id, user_id, joined_at, role) VALUES (?, ?, ?, ?)",
                (cur.lastrowid, created_by, now, ROLE_OWNER),
            )
            owner = conn.execute("SELECT name FROM users WHERE id = ?", (created_by,)).fetchone()
        except sqlite3.IntegrityError as exc:
            raise constraint_error(exc, f"room name {name!r}") from exc
    assert cur.lastrowid is not None
    return Room(cur.lastrowid, name, created_by, 0, visibility, topic, 0, owner[0])


ROOM_COLUMNS = (
    "SELECT r.id, r.name, r.created_by, r.last_seq, r.visibility, r.topic, r.slow_mode, u.name"
    " FROM rooms AS r LEFT JOIN users AS u ON u.id = r.owner_id"
)


def get_room(conn: sqlite3.Connection, name: str) -> Room | None:
    row = conn.execute(f"{ROOM_COLUMNS} WHERE r.name = ?", (name,)).fetchone()
    return None if row is None else Room(*row)


def list_rooms(conn: sqlite3.Connection, limit: int) -> list[Room]:
    rows = conn.execute(f"{ROOM_COLUMNS} ORDER BY r.name LIMIT ?", (limit,))
    return [Room(*row) for row in rows]


def join_room(conn: sqlite3.Connection, room: str, user_id: int) -> bool:
    with transaction(conn):
        return admit(conn, room, user_id, invited=False)


def admit(conn: sqlite3.Connection, room: str, user_id: int, *, invited: bool) -> bool:
    """A join (`invited` False: a private room the user is not in is unknown) or invitation,
    inside the caller's transaction, so a ban committed first always keeps the user out."""
    row = conn.execute(
        "SELECT r.id, r.visibility, m.user_id IS NOT NULL, b.user_id IS NOT NULL FROM rooms AS r"
        " LEFT JOIN memberships AS m ON m.room_id = r.id AND m.user_id = ?1"
        " LEFT JOIN room_bans AS b ON b.room_id = r.id AND b.user_id = ?1 WHERE r.name = ?2",
        (user_id, room),
    ).fetchone()
    if row is None or (row[1] == PRIVATE and not row[2] and not invited):
        raise NotFound(f"no room named {room!r}")
    if row[2]:
        return False
    if row[3]:
        raise Banned(f"banned from {room!r}")
    try:
        conn.execute(
            "INSERT INTO memberships (room_id, user_id, joined_at) VALUES (?, ?, ?)",
            (row[0], user_id, now_ms()),
        )
    except sqlite3.IntegrityError as exc:
        raise constraint_error(exc, "membership") from exc
    return True


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
