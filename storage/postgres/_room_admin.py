"""Blocking jobs for room administration (storage/room_admin.py) on PostgreSQL.

As in the SQLite backend: each write is one transaction, and the owner's row
(`rooms.owner_id`) and their membership's role change together.
"""

from __future__ import annotations

import psycopg.errors

from storage.postgres._connection import Connection, constraint_error, now_ms
from storage.postgres._rooms import ROOM_COLUMNS, admit
from storage.protocols import NotFound, Room
from storage.room_admin import ROLE_ADMIN, ROLE_OWNER, Member

_ROOM_ID = "(SELECT id FROM rooms WHERE name = %s)"


def add_member(conn: Connection, room: str, user_id: int) -> bool:
    with conn.transaction():
        return admit(conn, room, user_id, invited=True)


def update_room(
    conn: Connection, room: str, topic: str | None, slow_mode: int | None
) -> Room | None:
    with conn.transaction():
        conn.execute(
            "UPDATE rooms SET topic = coalesce(%s, topic), slow_mode = coalesce(%s, slow_mode)"
            " WHERE name = %s",
            (topic, slow_mode, room),
        )
        row = conn.execute(f"{ROOM_COLUMNS} WHERE r.name = %s", (room,)).fetchone()
    return None if row is None else Room(*row)


def role_of(conn: Connection, room: str, user_id: int) -> str | None:
    row = conn.execute(
        f"SELECT role FROM memberships WHERE room_id = {_ROOM_ID} AND user_id = %s",
        (room, user_id),
    ).fetchone()
    return None if row is None else str(row[0])


def roles_of(conn: Connection, user_id: int) -> dict[str, str]:
    rows = conn.execute(
        "SELECT r.name, m.role FROM memberships AS m JOIN rooms AS r ON r.id = m.room_id"
        " WHERE m.user_id = %s",
        (user_id,),
    )
    return {str(name): str(role) for name, role in rows}


def member_roles(conn: Connection, room: str) -> list[Member]:
    rows = conn.execute(
        "SELECT u.name, m.role FROM memberships AS m JOIN users AS u ON u.id = m.user_id"
        f' WHERE m.room_id = {_ROOM_ID} ORDER BY u.name COLLATE "C"',
        (room,),
    )
    return [Member(str(name), str(role)) for name, role in rows]


def set_role(conn: Connection, room: str, user_id: int, role: str) -> bool:
    if role == ROLE_OWNER:
        raise ValueError("the owner changes only by transfer_owner")
    cur = conn.execute(
        f"UPDATE memberships SET role = %s WHERE room_id = {_ROOM_ID} AND user_id = %s"
        " AND role <> 'owner'",
        (role, room, user_id),
    )
    return cur.rowcount == 1


def transfer_owner(conn: Connection, room: str, from_id: int, to_id: int) -> bool:
    if from_id == to_id:
        return False
    with conn.transaction():
        row = conn.execute(
            "SELECT r.id FROM rooms AS r JOIN memberships AS m ON m.room_id = r.id"
            " WHERE r.name = %s AND r.owner_id = %s AND m.user_id = %s FOR UPDATE OF r",
            (room, from_id, to_id),
        ).fetchone()
        if row is None:
            return False
        conn.execute("UPDATE rooms SET owner_id = %s WHERE id = %s", (to_id, row[0]))
        set_to = "UPDATE memberships SET role = %s WHERE room_id = %s AND user_id = %s"
        conn.execute(set_to, (ROLE_OWNER, row[0], to_id))
        conn.execute(set_to, (ROLE_ADMIN, row[0], from_id))
    return True


def ban(conn: Connection, room: str, user_id: int, by: int) -> bool:
    try:
        with conn.transaction():
            row = conn.execute(
                "SELECT id FROM rooms WHERE name = %s FOR UPDATE", (room,)
            ).fetchone()
            if row is None:
                raise NotFound(f"no room named {room!r}")
            conn.execute(
                "INSERT INTO room_bans (room_id, user_id, banned_by, banned_at)"
                " VALUES (%s, %s, %s, %s) ON CONFLICT DO NOTHING",
                (row[0], user_id, by, now_ms()),
            )
            cur = conn.execute(
                "DELETE FROM memberships WHERE room_id = %s AND user_id = %s", (row[0], user_id)
            )
    except psycopg.errors.IntegrityError as exc:
        raise constraint_error(exc, "ban") from exc
    return cur.rowcount == 1


def unban(conn: Connection, room: str, user_id: int) -> bool:
    cur = conn.execute(
        f"DELETE FROM room_bans WHERE room_id = {_ROOM_ID} AND user_id = %s", (room, user_id)
    )
    return cur.rowcount == 1
