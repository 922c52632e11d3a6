"""Opening SQLite connections for the store, and the small helpers every blocking job shares."""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Callable, Iterator
from types import TracebackType
from typing import TypeVar, TypeVarTuple

from storage.protocols import Conflict, NotFound, StorageError

T = TypeVar("T")
Ts = TypeVarTuple("Ts")

SYNCHRONOUS_MODES = frozenset({"OFF", "NORMAL", "FULL", "EXTRA"})
BUSY_TIMEOUT_MS = 5_000
CACHE_KIB = 64 * 1024  # page cache per connection
WAL_SIZE_LIMIT = 64 * 1024 * 1024  # the WAL file is truncated back to this after a checkpoint
# Readers map the file (SQLite caps this at 2 GiB): a history page touches ~50 scattered table
# pages, and a mapped page costs a memory access where an unmapped one costs a pread() syscall
# (measured on 10M messages, the query alone: p99 0.5 ms -> 0.3 ms for a 50-message page).
READER_MMAP_BYTES = 2**31


def connect(path: str, synchronous: str, *, writer: bool) -> sqlite3.Connection:
    """A connection in autocommit mode (we issue BEGIN), WAL, tuned for its role.

    The writer runs with foreign keys OFF: its one hot job, appending messages, checks its own
    references (see `_sqlite_messages`), and every other write job runs under
    `enforcing_foreign_keys`. Readers keep them ON; they never write anyway.
    """
    # The writer's connection is also used from the trio thread while its own thread is idle
    # (`_loop_commit`): never by two threads at once.
    conn = sqlite3.connect(
        path, isolation_level=None, cached_statements=64, check_same_thread=not writer
    )
    try:
        conn.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS:d}")
        if writer:
            mode = conn.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if mode != "wal":
                raise StorageError(f"cannot use WAL (journal_mode is {mode})")
            # Off: a commit on the event loop must never checkpoint; the store checkpoints on
            # the writer thread every ~CHECKPOINT_FRAMES instead (`_loop_commit`).
            conn.execute("PRAGMA wal_autocheckpoint = 0")
            conn.execute(f"PRAGMA journal_size_limit = {WAL_SIZE_LIMIT:d}")
            _prove_writable(conn)
        conn.execute(f"PRAGMA synchronous = {synchronous}")
        conn.execute(f"PRAGMA foreign_keys = {'OFF' if writer else 'ON'}")
        conn.execute(f"PRAGMA cache_size = {-CACHE_KIB:d}")
        if not writer:
            conn.execute("PRAGMA query_only = ON")
            conn.execute(f"PRAGMA mmap_size = {READER_MMAP_BYTES:d}")
    except BaseException:
        conn.close()
        raise
    return conn


def _prove_writable(conn: sqlite3.Connection) -> None:
    """A write that changes nothing (user_version set to itself), so a read-only file fails here,
    at start, not at the first message: SQLite opens a file it may not write read-only."""
    with transaction(conn):
        version = int(conn.execute("PRAGMA user_version").fetchone()[0])
        conn.execute(f"PRAGMA user_version = {version:d}")


def enforcing_foreign_keys(
    fn: Callable[[sqlite3.Connection, *Ts], T],
) -> Callable[[sqlite3.Connection, *Ts], T]:
    """`fn` run with foreign keys enforced, on the writer connection that otherwise skips them.

    Foreign-key checks cost the message append ~10% (two lookups per row; measured), so the
    writer leaves them off and turns them on around each of the rare other writes. The pragma
    is a no-op inside a transaction, so `fn` must open and close its own.
    """

    def run(conn: sqlite3.Connection, *args: *Ts) -> T:
        conn.execute("PRAGMA foreign_keys = ON")
        try:
            return fn(conn, *args)
        finally:
            conn.execute("PRAGMA foreign_keys = OFF")

    return run


def sqlite_errors() -> _SQLiteErrors:
    """sqlite3 errors reaching the caller are ours (bugs, disk, corruption): say so by type.

    A class, not a generator: every store call enters it, on the trio thread."""
    return _SQLITE_ERRORS


class _SQLiteErrors:
    __slots__ = ()

    def __enter__(self) -> None:
        pass

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if not isinstance(exc, sqlite3.Error):
            return
        if getattr(exc, "sqlite_errorname", "").startswith("SQLITE_BUSY"):
            # Another process (a `--workers` sibling, a backup) held the write lock too long.
            raise StorageError(
                f"database is busy: its write lock was held by another connection for over"
                f" the busy timeout ({BUSY_TIMEOUT_MS} ms)"
            ) from exc
        raise StorageError(f"{type(exc).__name__}: {exc}") from exc


_SQLITE_ERRORS = _SQLiteErrors()


@contextlib.contextmanager
def opening_errors(path: str) -> Iterator[None]:
    """Failing to open or set up the file: one `StorageError` naming it and saying why, in a line
    fit for an operator ("cannot open database /x/y.db: directory /x does not exist")."""
    try:
        yield
    except sqlite3.Error as exc:
        reason = _why_not_opened(path, exc)
        raise StorageError(f"cannot open database {path}: {reason}") from exc
    except StorageError as exc:
        raise StorageError(f"cannot open database {path}: {exc}") from exc


def _why_not_opened(path: str, exc: sqlite3.Error) -> str:
    # SQLite says "unable to open database file" whatever the cause: look for the likely one.
    if isinstance(exc, sqlite3.OperationalError):
        directory = os.path.dirname(os.path.abspath(path))
        if os.path.isdir(path):
            return "it is a directory"
        if not os.path.exists(directory):
            return f"directory {directory} does not exist"
        if not os.path.isdir(directory):
            return f"{directory} is not a directory"
        if os.statvfs(directory).f_flag & os.ST_RDONLY:
            return f"{directory} is on a read-only filesystem"
        # SQLite creates the file, and its -wal and -shm files, in that directory.
        if not os.access(directory, os.W_OK | os.X_OK):
            return f"directory {directory} is not writable"
        if os.path.exists(path) and not os.access(path, os.R_OK | os.W_OK):
            return "the file is not readable and writable"
    return f"{type(exc).__name__}: {exc}"


def transaction(conn: sqlite3.Connection, via: sqlite3.Cursor | None = None) -> _Transaction:
    """`with transaction(conn):` BEGIN IMMEDIATE, then COMMIT, or ROLLBACK on any exception
    (a failed COMMIT included). A class, not a generator: it runs on every batch. `via`: a
    cursor of `conn` to issue them through (the append's), not a new cursor each."""
    return _Transaction(conn, via)


class _Transaction:
    __slots__ = ("_conn", "_execute")

    def __init__(self, conn: sqlite3.Connection, via: sqlite3.Cursor | None) -> None:
        self._conn = conn
        self._execute = conn.execute if via is None else via.execute

    def __enter__(self) -> None:
        self._execute("BEGIN IMMEDIATE")

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        conn = self._conn
        if exc_type is None:
            try:
                self._execute("COMMIT")
                return
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        if conn.in_transaction:
            conn.execute("ROLLBACK")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


def constraint_error(exc: sqlite3.IntegrityError, taken: str) -> StorageError:
    if exc.sqlite_errorname in ("SQLITE_CONSTRAINT_UNIQUE", "SQLITE_CONSTRAINT_PRIMARYKEY"):
        return Conflict(f"{taken} is taken")
    if exc.sqlite_errorname == "SQLITE_CONSTRAINT_FOREIGNKEY":
        return NotFound("unknown user id")
    return StorageError(f"{type(exc).__name__}: {exc}")
