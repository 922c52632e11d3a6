"""Blocking jobs for rooms and memberships; each runs on a pooled connection's worker thread.

Reads of an unknown room return nothing (None, [], False) rather than raise; only `join_room`
and `last_seq` raise `NotFound`. An unknown user id becomes `NotFound` through the foreign key.
"""

from __future__ import annotations

import psycopg
import psycopg.errors

from storage.postgres._connection import Connection, constraint_error, now_ms
from storage.protocols import Banned, NotFound, Room
from storage.room_admin import PRIVATE, PUBLIC, ROLE_OWNER

_ROOM_ID = "(SELECT id FROM rooms WHERE name = %s)"
ROOM_COLUMNS = (
    "SELECT r.id, r.name, r.created_by, r.last_seq, r.visibility, r.topic, r.slow_mode, u.name"
    " FROM rooms AS r LEFT JOIN users AS u ON u.id = r.owner_id"
)


def create_room(conn: Connection, name: str, created_by: int, private: bool, topic: str) -> Room:
    now = now_ms()
    visibility = PRIVATE if private else PUBLIC
    try:
        with conn.transaction():
            row = conn.execute(
                "INSERT INTO rooms (name, created_by, created_at, visibility, topic, owner_id)"
                " VALUES (%s, %s, %s, %s, %s, %s) RETURNING id",
                (name, created_by, now, visibility, topic, created_by),
            ).fetchone()
            assert row is not None
            conn.execute(
                "INSERT INTO memberships (room_id, user_id, joined_at, role)"
                " VALUES (%s, %s, %s, %s)",
                (row[0], created_by, now, ROLE_OWNER),
            )
            owner = conn.execute("SELECT name FROM users WHERE id = %s", (created_by,)).fetchone()
            assert owner is not None
    except psycopg.errors.IntegrityError as exc:
        raise constraint_error(exc, f"room name {name!r}") from exc
    return Room(int(row[0]), name, created_by, 0, visibility, topic, 0, str(owner[0]))


def get_room(conn: Connection, name: str) -> Room | None:
    row = conn.execute(f"{ROOM_COLUMNS} WHERE r.name = %s", (name,)).fetchone()
    return None if row is None else Room(*row)


def list_rooms(conn: Connection, limit: int) -> list[Room]:
    rows = conn.execute(f'{ROOM_COLUMNS} ORDER BY r.name COLLATE "C" LIMIT %s', (limit,))
    return [Room(*row) for row in rows]


def join_room(conn: Connection, room: str, user_id: int) -> bool:
    with conn.transaction():
        return admit(conn, room, user_id, invited=False)


def admit(conn: Connection, room: str, user_id: int, *, invited: bool) -> bool:
    """A join (`invited` False: a private room the user is not in is unknown) or invitation,
    in the caller's transaction. The room row is key-share locked first, then membership and
    ban are read in a statement of their own (a snapshot taken after the lock): a ban holds
    the row's update lock, so a join either sees its ban or commits before it (then the ban
    deletes the membership)."""
    found = conn.execute(
        "SELECT id, visibility FROM rooms WHERE name = %s FOR KEY SHARE", (room,)
    ).fetchone()
    if found is None:
        raise NotFound(f"no room named {room!r}")
    row = conn.execute(
        "SELECT %(r)s, %(v)s, EXISTS (SELECT 1 FROM memberships WHERE room_id = %(r)s"
        " AND user_id = %(u)s), EXISTS (SELECT 1 FROM room_bans WHERE room_id = %(r)s"
        " AND user_id = %(u)s)",
        {"r": found[0], "v": found[1], "u": user_id},
    ).fetchone()
    assert row is not None
    if row is None or (row[1] == PRIVATE and not row[2] and not invited):
        raise NotFound(f"no room named {room!r}")
    if row[2]:
        return False
    if row[3]:
        raise Banned(f"banned from {room!r}")
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
