"""Blocking jobs for room administration (storage/room_admin.py): settings, roles, bans.

Each write is one transaction; the owner's row (`rooms.owner_id`) and their membership's role
change together, so a room never has two owners or an owner who is not a member.
"""

from __future__ import annotations

import sqlite3

from storage.protocols import NotFound, Room
from storage.room_admin import ROLE_ADMIN, ROLE_OWNER, Member
from storage.sqlite._connection import constraint_error, now_ms, transaction
from storage.sqlite._rooms import ROOM_COLUMNS, admit

_ROOM_ID = "(SELECT id FROM rooms WHERE name = ?)"


def add_member(conn: sqlite3.Connection, room: str, user_id: int) -> bool:
    with transaction(conn):
        return admit(conn, room, user_id, invited=True)


def update_room(
    conn: sqlite3.Connection, room: str, topic: str | None, slow_mode: int | None
) -> Room | None:
    with transaction(conn):
        conn.execute(
            "UPDATE rooms SET topic = coalesce(?, topic), slow_mode = coalesce(?, slow_mode)"
            " WHERE name = ?",
            (topic, slow_mode, room),
        )
        row = conn.execute(f"{ROOM_COLUMNS} WHERE r.name = ?", (room,)).fetchone()
    return None if row is None else Room(*row)


def role_of(conn: sqlite3.Connection, room: str, user_id: int) -> str | None:
    row = conn.execute(
        f"SELECT role FROM memberships WHERE room_id = {_ROOM_ID} AND user_id = ?",
        (room, user_id),
    ).fetchone()
    return None if row is None else str(row[0])


def roles_of(conn: sqlite3.Connection, user_id: int) -> dict[str, str]:
    rows = conn.execute(
        "SELECT r.name, m.role FROM memberships AS m JOIN rooms AS r ON r.id = m.room_id"
        " WHERE m.user_id = ?",
        (user_id,),
    )
    return {str(name): str(role) for name, role in rows}


def member_roles(conn: sqlite3.Connection, room: str) -> list[Member]:
    rows = conn.execute(
        "SELECT u.name, m.role FROM memberships AS m JOIN users AS u ON u.id = m.user_id"
        f" WHERE m.room_id = {_ROOM_ID} ORDER BY u.name",
        (room,),
    )
    return [Member(str(name), str(role)) for name, role in rows]


def set_role(conn: sqlite3.Connection, room: str, user_id: int, role: str) -> bool:
    if role == ROLE_OWNER:
        raise ValueError("the owner changes only by transfer_owner")
    cur = conn.execute(
        f"UPDATE memberships SET role = ? WHERE room_id = {_ROOM_ID} AND user_id = ?"
        " AND role <> 'owner'",
        (role, room, user_id),
    )
    return cur.rowcount == 1


def transfer_owner(conn: sqlite3.Connection, room: str, from_id: int, to_id: int) -> bool:
    with transaction(conn):
        row = conn.execute(
            "SELECT r.id FROM rooms AS r JOIN memberships AS m ON m.room_id = r.id"
            " WHERE r.name = ? AND r.owner_id = ? AND m.user_id = ?",
            (room, from_id, to_id),
        ).fetchone()
        if row is None or from_id == to_id:
            return False
        conn.execute("UPDATE rooms SET owner_id = ? WHERE id = ?", (to_id, row[0]))
        set_to = "UPDATE memberships SET role = ? WHERE room_id = ? AND user_id = ?"
        conn.execute(set_to, (ROLE_OWNER, row[0], to_id))
        conn.execute(set_to, (ROLE_ADMIN, row[0], from_id))
    return True


def ban(conn: sqlite3.Connection, room: str, user_id: int, by: int) -> bool:
    with transaction(conn):
        row = conn.execute("SELECT id FROM rooms WHERE name = ?", (room,)).fetchone()
        if row is None:
            raise NotFound(f"no room named {room!r}")
        try:
            conn.execute(
                "INSERT OR IGNORE INTO room_bans (room_id, user_id, banned_by, banned_at)"
                " VALUES (?, ?, ?, ?)",
                (row[0], user_id, by, now_ms()),
            )
        except sqlite3.IntegrityError as exc:
            raise constraint_error(exc, "ban") from exc
        cur = conn.execute(
            "DELETE FROM memberships WHERE room_id = ? AND user_id = ?", (row[0], user_id)
        )
    return cur.rowcount == 1


def unban(conn: sqlite3.Connection, room: str, user_id: int) -> bool:
    cur = conn.execute(
        f"DELETE FROM room_bans WHERE room_id = {_ROOM_ID} AND user_id = ?", (room, user_id)
    )
    return cur.rowcount == 1
