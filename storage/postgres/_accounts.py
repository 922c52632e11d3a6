"""Blocking jobs for user and token rows; each runs on a pooled connection's worker thread.
What the rows hold (hashes, expiry times) is decided above the backend, in `storage.accounts`."""

from __future__ import annotations

import psycopg
import psycopg.errors

from storage.postgres._connection import Connection, constraint_error, now_ms
from storage.protocols import User


def insert_user(conn: Connection, name: str, password_hash: str) -> User:
    try:
        row = conn.execute(
            "INSERT INTO users (name, password_hash, created_at) VALUES (%s, %s, %s) RETURNING id",
            (name, password_hash, now_ms()),
        ).fetchone()
    except psycopg.errors.IntegrityError as exc:
        raise constraint_error(exc, f"user name {name!r}") from exc
    assert row is not None
    return User(int(row[0]), name)


def password_hash_of(conn: Connection, name: str) -> tuple[User, str] | None:
    row = conn.execute(
        "SELECT id, name, password_hash FROM users WHERE name = %s", (name,)
    ).fetchone()
    return None if row is None else (User(row[0], row[1]), row[2])


def insert_token(
    conn: Connection, user_id: int, token_hash: str, expires_at_ms: int, now: int
) -> None:
    with conn.transaction():
        # Expired tokens are useless: dropping the user's on each login keeps the table small.
        conn.execute("DELETE FROM tokens WHERE user_id = %s AND expires_at <= %s", (user_id, now))
        try:
            conn.execute(
                "INSERT INTO tokens (token_hash, user_id, expires_at) VALUES (%s, %s, %s)",
                (token_hash, user_id, expires_at_ms),
            )
        except psycopg.errors.IntegrityError as exc:
            raise constraint_error(exc, "token") from exc


def token_record(conn: Connection, token_hash: str) -> tuple[User, int] | None:
    row = conn.execute(
        "SELECT u.id, u.name, t.expires_at FROM tokens AS t JOIN users AS u ON u.id = t.user_id"
        " WHERE t.token_hash = %s",
        (token_hash,),
    ).fetchone()
    return None if row is None else (User(row[0], row[1]), row[2])


def delete_token(conn: Connection, token_hash: str) -> None:
    conn.execute("DELETE FROM tokens WHERE token_hash = %s", (token_hash,))
