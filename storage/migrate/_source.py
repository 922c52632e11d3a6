"""The SQLite side of a migration: one read snapshot of the source file per pass.

The file is opened read-write (so WAL works whether or not a server has it open) but
`query_only`, and every read of a pass runs inside one deferred read transaction: in WAL mode
that is a consistent snapshot that never blocks the live server's writer (the WAL only cannot be
checkpointed past it until the pass ends). Nothing here writes to the source.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import sqlite3
import urllib.parse
from collections.abc import Generator, Iterator
from typing import Any

from storage.migrate._errors import MigrationRefused
from storage.protocols import StorageError
from storage.sqlite._connection import CACHE_KIB, READER_MMAP_BYTES
from storage.sqlite._schema import MIGRATIONS as SQLITE_MIGRATIONS

Row = tuple[Any, ...]
CHUNK_ROWS = 10_000  # rows fetched at once when streaming

USERS = "SELECT id, name, password_hash, created_at, display_name, last_seen FROM users ORDER BY id"
ROOMS = "SELECT id, name, created_by, created_at, last_seq FROM rooms ORDER BY id"
MEMBERSHIPS = "SELECT room_id, user_id, joined_at FROM memberships ORDER BY room_id, user_id"
# What a pass copies of rooms and memberships besides what the verifier reads (`ROOMS`,
# `MEMBERSHIPS`): the settings, roles and bans of issue #15.
ROOMS_COPIED = (
    "SELECT id, name, created_by, created_at, last_seq, visibility, topic, slow_mode, owner_id"
    " FROM rooms ORDER BY id"
)
MEMBERSHIPS_COPIED = (
    "SELECT room_id, user_id, joined_at, role FROM memberships ORDER BY room_id, user_id"
)
BANS = "SELECT room_id, user_id, banned_by, banned_at FROM room_bans ORDER BY room_id, user_id"
TOKENS = (
    "SELECT token_hash, user_id, expires_at, session_id, device, created_at, last_used_at"
    " FROM tokens ORDER BY token_hash"
)
MESSAGE_COLUMNS = (
    "id, room_id, seq, user_id, user_name, text, ts, client_id, kind, target, edited_at, deleted"
)
# What the verifier hashes, in the order it hashes it: both sides select exactly this. Read in
# id order (a sequential scan on both sides); a room's rows are hashed in seq order, which is
# id order in every room hibiki wrote (verify.py falls back to `ROOM_MESSAGES` where not).
# `deleted` is 0/1 in SQLite and a boolean in PostgreSQL: both hash as the integer.
_MESSAGE_ROW = (
    "SELECT room_id, seq, id, user_id, user_name, text, client_id, ts, kind, target, edited_at,"
    " CAST(deleted AS INTEGER) FROM messages"
)
MESSAGES_BY_ID = f"{_MESSAGE_ROW} ORDER BY id"
ROOM_MESSAGES = f"{_MESSAGE_ROW} WHERE room_id = ? ORDER BY seq"


def sqlite_path(url: str) -> str:
    """The file a `sqlite:///path` URL (or a plain path) names."""
    if "://" not in url:
        return url
    parts = urllib.parse.urlsplit(url)
    if parts.scheme.lower() != "sqlite" or parts.netloc or parts.query or parts.fragment:
        raise StorageError("--from must be sqlite:///PATH, sqlite:////ABSOLUTE/PATH or a path")
    path = urllib.parse.unquote(parts.path[1:])
    if not path:
        raise StorageError(f"no file in {url!r}")
    return path


class SourceSnapshot:
    """Reads of one consistent snapshot of the source database (use `open_snapshot`)."""

    def __init__(self, conn: sqlite3.Connection, path: str) -> None:
        self._conn = conn
        self.path = path

    def rows(self, query: str, args: tuple[Any, ...] = ()) -> Iterator[Row]:
        """The query's rows, streamed (the cursor is read lazily)."""
        yield from self._conn.execute(query, args)

    def chunks(self, query: str, args: tuple[Any, ...] = ()) -> Generator[list[Row]]:
        """The query's rows in lists of up to `CHUNK_ROWS`, read as they are consumed."""
        cursor = self._conn.execute(query, args)
        while chunk := cursor.fetchmany(CHUNK_ROWS):
            yield chunk

    def scalar(self, query: str, args: tuple[Any, ...] = ()) -> int:
        row = self._conn.execute(query, args).fetchone()
        return 0 if row is None or row[0] is None else int(row[0])

    def fingerprint(self) -> str | None:
        """What identifies this source across passes and file moves: a hash of its first user,
        a row hibiki never changes or deletes (None while it has no users)."""
        row = self._conn.execute(
            "SELECT id, name, created_at FROM users ORDER BY id LIMIT 1"
        ).fetchone()
        if row is None:
            return None
        return hashlib.sha256(repr(tuple(row)).encode()).hexdigest()[:32]

    def messages_after(self, after_id: int, chunk_rows: int) -> Iterator[list[Row]]:
        """Messages with id > `after_id` in id order, in lists of at most `chunk_rows`."""
        cursor = self._conn.execute(
            f"SELECT {MESSAGE_COLUMNS} FROM messages WHERE id > ? ORDER BY id", (after_id,)
        )
        while chunk := cursor.fetchmany(chunk_rows):
            yield chunk


@contextlib.contextmanager
def open_snapshot(path: str) -> Iterator[SourceSnapshot]:
    """A snapshot of the hibiki SQLite database at `path`; `StorageError` if it is not one."""
    if not os.path.isfile(path):
        raise StorageError(f"no SQLite database at {path}")
    uri = f"file:{urllib.parse.quote(os.path.abspath(path))}?mode=rw"
    try:
        conn = sqlite3.connect(uri, uri=True, isolation_level=None)
    except sqlite3.Error as exc:
        raise StorageError(f"cannot open {path}: {exc}") from exc
    try:
        conn.execute("PRAGMA busy_timeout = 5000")
        conn.execute("PRAGMA query_only = ON")
        # Verification reads messages in (room, seq) order: one table lookup per row through
        # the index. Mapped, a page costs a memory access instead of a pread() (as for the
        # store's readers); the cache keeps the index's pages.
        conn.execute(f"PRAGMA mmap_size = {READER_MMAP_BYTES:d}")
        conn.execute(f"PRAGMA cache_size = {-CACHE_KIB:d}")
        conn.execute("BEGIN")  # deferred: the snapshot is taken by the first read below
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()  # takes the snapshot
        _check_version(conn, path)
        yield SourceSnapshot(conn, path)
        conn.execute("COMMIT")
    except sqlite3.Error as exc:
        raise StorageError(f"reading {path}: {type(exc).__name__}: {exc}") from exc
    finally:
        conn.close()


def _check_version(conn: sqlite3.Connection, path: str) -> None:
    version = int(conn.execute("PRAGMA user_version").fetchone()[0])
    if version != len(SQLITE_MIGRATIONS):
        raise MigrationRefused(
            f"{path} has hibiki schema v{version}; this tool copies v{len(SQLITE_MIGRATIONS)}"
            " (open it once with this hibiki version first)"
        )
