"""Blocking jobs for users and tokens; each runs on a connection's own thread.

Write jobs run with foreign keys enforced (`enforcing_foreign_keys`): a token for an unknown user
becomes `NotFound` through the constraint.
"""

from __future__ import annotations

import sqlite3

from storage.protocols import TokenGrant, User
from storage.sqlite._connection import constraint_error, now_ms, transaction


def create_user(conn: sqlite3.Connection, name: str, password_hash: str) -> User:
    try:
        cur = conn.execute(
            "INSERT INTO users (name, password_hash, created_at) VALUES (?, ?, ?)",
            (name, password_hash, now_ms()),
        )
    except sqlite3.IntegrityError as exc:
        raise constraint_error(exc, f"user name {name!r}") from exc
    assert cur.lastrowid is not None
    return User(cur.lastrowid, name)


def user_and_hash(conn: sqlite3.Connection, name: str) -> tuple[User, str] | None:
    row = conn.execute("SELECT id, name, password_hash FROM users WHERE name = ?", (name,))
    found = row.fetchone()
    return None if found is None else (User(found[0], found[1]), found[2])


def create_token(conn: sqlite3.Connection, token_hash: str, user_id: int, ttl_ms: int) -> None:
    now = now_ms()
    with transaction(conn):
        # Expired tokens are useless: dropping the user's on each login keeps the table small.
        conn.execute("DELETE FROM tokens WHERE user_id = ? AND expires_at <= ?", (user_id, now))
        try:
            conn.execute(
                "INSERT INTO tokens (token_hash, user_id, expires_at) VALUES (?, ?, ?)",
                (token_hash, user_id, now + ttl_ms),
            )
        except sqlite3.IntegrityError as exc:
            raise constraint_error(exc, "token") from exc


def user_for_token(conn: sqlite3.Connection, token_hash: str) -> User | None:
    grant = grant_for_token(conn, token_hash)
    return None if grant is None else grant.user


def grant_for_token(conn: sqlite3.Connection, token_hash: str) -> TokenGrant | None:
    row = conn.execute(
        "SELECT u.id, u.name, t.expires_at FROM tokens AS t JOIN users AS u ON u.id = t.user_id"
        " WHERE t.token_hash = ? AND t.expires_at > ?",
        (token_hash, now_ms()),
    ).fetchone()
    return None if row is None else TokenGrant(User(row[0], row[1]), row[2])


def revoke_token(conn: sqlite3.Connection, token_hash: str) -> None:
    conn.execute("DELETE FROM tokens WHERE token_hash = ?", (token_hash,))
