"""Blocking jobs for user and token rows; each runs on a connection's own thread. What the
rows hold (hashes, expiry times) is decided above the backend, in `storage.accounts`.

Write jobs run with foreign keys enforced (`enforcing_foreign_keys`): a token for an unknown user
becomes `NotFound` through the constraint.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Mapping

from storage.protocols import Profile, Session, User
from storage.sqlite._connection import constraint_error, now_ms, transaction


def insert_user(conn: sqlite3.Connection, name: str, password_hash: str) -> User:
    try:
        cur = conn.execute(
            "INSERT INTO users (name, password_hash, created_at) VALUES (?, ?, ?)",
            (name, password_hash, now_ms()),
        )
    except sqlite3.IntegrityError as exc:
        raise constraint_error(exc, f"user name {name!r}") from exc
    assert cur.lastrowid is not None
    return User(cur.lastrowid, name)


def password_hash_of(conn: sqlite3.Connection, name: str) -> tuple[User, str] | None:
    row = conn.execute("SELECT id, name, password_hash FROM users WHERE name = ?", (name,))
    found = row.fetchone()
    return None if found is None else (User(found[0], found[1]), found[2])


def insert_token(
    conn: sqlite3.Connection,
    user_id: int,
    token_hash: str,
    expires_at_ms: int,
    now: int,
    session_id: str,
    device: str,
) -> None:
    with transaction(conn):
        # Expired tokens are useless: dropping the user's on each login keeps the table small.
        conn.execute("DELETE FROM tokens WHERE user_id = ? AND expires_at <= ?", (user_id, now))
        try:
            conn.execute(
                "INSERT INTO tokens (token_hash, user_id, expires_at, session_id, device,"
                " created_at, last_used_at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                (token_hash, user_id, expires_at_ms, session_id, device, now, now),
            )
        except sqlite3.IntegrityError as exc:
            raise constraint_error(exc, "token") from exc


def token_record(conn: sqlite3.Connection, token_hash: str) -> tuple[User, int] | None:
    row = conn.execute(
        "SELECT u.id, u.name, t.expires_at FROM tokens AS t JOIN users AS u ON u.id = t.user_id"
        " WHERE t.token_hash = ?",
        (token_hash,),
    ).fetchone()
    return None if row is None else (User(row[0], row[1]), row[2])


def delete_token(conn: sqlite3.Connection, token_hash: str) -> None:
    conn.execute("DELETE FROM tokens WHERE token_hash = ?", (token_hash,))


def session_rows(conn: sqlite3.Connection, user_id: int, now: int) -> list[Session]:
    rows = conn.execute(
        "SELECT session_id, device, created_at, last_used_at, expires_at, token_hash FROM tokens"
        " WHERE user_id = ? AND expires_at > ?"
        " ORDER BY coalesce(created_at, 0) DESC, session_id",
        (user_id, now),
    )
    return [Session(*row) for row in rows]


def delete_sessions(
    conn: sqlite3.Connection, user_id: int, session_id: str | None, keep_hash: str | None
) -> list[str]:
    with transaction(conn):
        if session_id is not None:
            rows = conn.execute(
                "DELETE FROM tokens WHERE user_id = ? AND session_id = ? RETURNING token_hash",
                (user_id, session_id),
            ).fetchall()
        else:
            rows = conn.execute(
                "DELETE FROM tokens WHERE user_id = ? AND token_hash IS NOT ? RETURNING token_hash",
                (user_id, keep_hash),
            ).fetchall()
    return sorted(row[0] for row in rows)


def replace_password(
    conn: sqlite3.Connection, user_id: int, password_hash: str, keep_hash: str | None
) -> list[str]:
    with transaction(conn):
        conn.execute("UPDATE users SET password_hash = ? WHERE id = ?", (password_hash, user_id))
        rows = conn.execute(
            "DELETE FROM tokens WHERE user_id = ? AND token_hash IS NOT ? RETURNING token_hash",
            (user_id, keep_hash),
        ).fetchall()
    return sorted(row[0] for row in rows)


def update_display_name(conn: sqlite3.Connection, user_id: int, display_name: str | None) -> None:
    conn.execute("UPDATE users SET display_name = ? WHERE id = ?", (display_name, user_id))


def profile_row(conn: sqlite3.Connection, name: str) -> Profile | None:
    row = conn.execute(
        "SELECT id, name, display_name, last_seen FROM users WHERE name = ?", (name,)
    ).fetchone()
    return None if row is None else Profile(User(row[0], row[1]), row[2], row[3])


def touch(conn: sqlite3.Connection, sessions: Mapping[str, int], users: Mapping[int, int]) -> None:
    # max(): a later time already stored (another node's) is never moved back.
    with transaction(conn):
        conn.executemany(
            "UPDATE tokens SET last_used_at = max(coalesce(last_used_at, 0), ?)"
            " WHERE token_hash = ?",
            [(at, hashed) for hashed, at in sessions.items()],
        )
        conn.executemany(
            "UPDATE users SET last_seen = max(coalesce(last_seen, 0), ?) WHERE id = ?",
            [(at, user_id) for user_id, at in users.items()],
        )
