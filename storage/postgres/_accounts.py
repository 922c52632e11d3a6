"""Blocking jobs for user and token rows; each runs on a pooled connection's worker thread.
What the rows hold (hashes, expiry times) is decided above the backend, in `storage.accounts`."""

from __future__ import annotations

from collections.abc import Mapping

import psycopg
import psycopg.errors

from storage.postgres._connection import Connection, constraint_error, now_ms
from storage.protocols import Profile, Session, User


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
    conn: Connection,
    user_id: int,
    token_hash: str,
    expires_at_ms: int,
    now: int,
    session_id: str,
    device: str,
) -> None:
    with conn.transaction():
        # Expired tokens are useless: dropping the user's on each login keeps the table small.
        conn.execute("DELETE FROM tokens WHERE user_id = %s AND expires_at <= %s", (user_id, now))
        try:
            conn.execute(
                "INSERT INTO tokens (token_hash, user_id, expires_at, session_id, device,"
                " created_at, last_used_at) VALUES (%s, %s, %s, %s, %s, %s, %s)",
                (token_hash, user_id, expires_at_ms, session_id, device, now, now),
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


def session_rows(conn: Connection, user_id: int, now: int) -> list[Session]:
    rows = conn.execute(
        "SELECT session_id, device, created_at, last_used_at, expires_at, token_hash FROM tokens"
        " WHERE user_id = %s AND expires_at > %s"
        " ORDER BY coalesce(created_at, 0) DESC, session_id",
        (user_id, now),
    ).fetchall()
    return [Session(*row) for row in rows]


def delete_sessions(
    conn: Connection, user_id: int, session_id: str | None, keep_hash: str | None
) -> list[str]:
    with conn.transaction():
        if session_id is not None:
            rows = conn.execute(
                "DELETE FROM tokens WHERE user_id = %s AND session_id = %s RETURNING token_hash",
                (user_id, session_id),
            ).fetchall()
        else:
            rows = conn.execute(
                "DELETE FROM tokens WHERE user_id = %s AND token_hash IS DISTINCT FROM %s"
                " RETURNING token_hash",
                (user_id, keep_hash),
            ).fetchall()
    return sorted(row[0] for row in rows)


def replace_password(
    conn: Connection, user_id: int, password_hash: str, keep_hash: str | None
) -> list[str]:
    with conn.transaction():
        conn.execute("UPDATE users SET password_hash = %s WHERE id = %s", (password_hash, user_id))
        rows = conn.execute(
            "DELETE FROM tokens WHERE user_id = %s AND token_hash IS DISTINCT FROM %s"
            " RETURNING token_hash",
            (user_id, keep_hash),
        ).fetchall()
    return sorted(row[0] for row in rows)


def update_display_name(conn: Connection, user_id: int, display_name: str | None) -> None:
    conn.execute("UPDATE users SET display_name = %s WHERE id = %s", (display_name, user_id))


def profile_row(conn: Connection, name: str) -> Profile | None:
    row = conn.execute(
        "SELECT id, name, display_name, last_seen FROM users WHERE name = %s", (name,)
    ).fetchone()
    return None if row is None else Profile(User(int(row[0]), row[1]), row[2], row[3])


def touch(conn: Connection, sessions: Mapping[str, int], users: Mapping[int, int]) -> None:
    # One statement per table over arrays (executemany took ~40 µs a row). GREATEST ignores
    # NULL: a later time already stored (another node's) never moves back. The rows are locked
    # in key order first, so two nodes touching the same rows cannot deadlock.
    hashes = sorted(sessions)
    ids = sorted(users)
    with conn.transaction():
        if hashes:
            conn.execute(
                "SELECT 1 FROM tokens WHERE token_hash = ANY(%s) ORDER BY token_hash FOR UPDATE",
                (hashes,),
            )
            conn.execute(
                "UPDATE tokens AS t SET last_used_at = GREATEST(t.last_used_at, v.at)"
                " FROM unnest(%s::text[], %s::bigint[]) AS v(hash, at) WHERE t.token_hash = v.hash",
                (hashes, [sessions[h] for h in hashes]),
            )
        if ids:
            conn.execute("SELECT 1 FROM users WHERE id = ANY(%s) ORDER BY id FOR UPDATE", (ids,))
            conn.execute(
                "UPDATE users AS u SET last_seen = GREATEST(u.last_seen, v.at)"
                " FROM unnest(%s::bigint[], %s::bigint[]) AS v(id, at) WHERE u.id = v.id",
                (ids, [users[i] for i in ids]),
            )
