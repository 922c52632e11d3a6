"""Blocking jobs for user and token rows; each runs on a connection's own thread. What the
rows hold (hashes, expiry times) is decided above the backend, in `storage.accounts`.

Write jobs run with foreign keys enforced (`enforcing_foreign_keys`): a token for an unknown user
becomes `NotFound` through the constraint.
"""

from __future__ import annotations

import sqlite3

from storage.protocols import User
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
    conn: sqlite3.Connection, user_id: int, token_hash: str, expires_at_ms: int, now: int
) -> None:
    with transaction(conn):
        # Expired tokens are useless: dropping the user's on each login keeps the table small.
        conn.execute("DELETE FROM tokens WHERE user_id = ? AND expires_at <= ?", (user_id, now))
        try:
            conn.execute(
                "INSERT INTO tokens (token_hash, user_id, expires_at) VALUES (?, ?, ?)",
                (token_hash, user_id, expires_at_ms),
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
