"""Which backend a database URL names: the one place that maps a URL to a backend.

URL forms (docs/operations.md, "Database URLs"):

    hibiki.db, /var/lib/hibiki/hibiki.db   a plain path (no `scheme://`): a SQLite file
    sqlite:///relative/path.db             a SQLite file, relative to the working directory
    sqlite:////absolute/path.db            a SQLite file, absolute (the 4th slash starts the path)
    postgresql://USER:PASSWORD@HOST:PORT/DATABASE?OPTIONS   PostgreSQL (also postgres://); the
                                           URL is libpq's, handed to psycopg as it is

A SQLite URL names a file and nothing else: no host, no query, no fragment; percent-escapes in
its path are decoded (`sqlite:///my%20chat.db` is `my chat.db`). A plain path is taken as is.
A PostgreSQL URL is never repeated in an error: it may carry a password.
"""

from __future__ import annotations

import os
import re
import urllib.parse
from collections.abc import Sequence

from storage import passwords
from storage.composite import CompositeStore
from storage.postgres.store import PostgresStore
from storage.protocols import Backend, BackupError, BackupResult, StorageError
from storage.sqlite._loop_commit import SLOW_COMMIT_S
from storage.sqlite.backup import backup as backup_sqlite_file
from storage.sqlite.store import SQLiteStore

SUPPORTED = (
    "sqlite:///PATH, sqlite:////ABSOLUTE/PATH, a plain file path or postgresql://HOST/DATABASE"
)
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")


def open_store(
    url: str | os.PathLike[str],
    *,
    synchronous: str = "FULL",
    readers: int = 2,
    loop_commit: bool = True,
    loop_commit_stall: float = SLOW_COMMIT_S,
    pool_size: int = 10,
    statement_timeout: float = 10.0,
    synchronous_commit: str = "on",
    scrypt_n: int = passwords.DEFAULT_N,
    shards: Sequence[str] = (),
) -> CompositeStore:
    """An unopened `Store` on the database `url` names: `await store.open()` (and `aclose()`),
    or `async with open_store(url) as store:`.

    SQLite: `synchronous` is the durability mode (OFF, NORMAL, FULL or EXTRA; FULL survives a
    power cut), `readers` the number of reader threads, `loop_commit` whether a small lone batch
    may commit on the event loop (and `loop_commit_stall` the slowest one allowed before a pause:
    storage/sqlite/_loop_commit.py). PostgreSQL: `pool_size` connections,
    `statement_timeout` seconds per query, `synchronous_commit` (on: durable before return).
    `scrypt_n` is the scrypt cost of new password hashes. With `shards` (PostgreSQL URLs),
    `url` is the catalog and messages live on the shards (storage/routing/sharded.py). Raise
    `StorageError` for a URL no backend here serves.
    """
    scheme, target = _parse(url)
    backend: Backend
    if scheme == "postgresql":
        backend = PostgresStore(
            target,
            pool_size=pool_size,
            statement_timeout=statement_timeout,
            synchronous_commit=synchronous_commit,
        )
    else:
        backend = SQLiteStore(
            target,
            synchronous=synchronous,
            readers=readers,
            loop_commit=loop_commit,
            loop_commit_stall=loop_commit_stall,
        )
    if shards:
        settings = (pool_size, statement_timeout, synchronous_commit)
        return _sharded(backend, target, shards, scrypt_n, settings)
    return CompositeStore(backend, scrypt_n=scrypt_n)


def _sharded(
    backend: Backend,
    primary: str,
    shards: Sequence[str],
    scrypt_n: int,
    settings: tuple[int, float, str],
) -> CompositeStore:
    """The catalog `backend` with messages on `shards`: `settings` (pool size, statement
    timeout, synchronous_commit) apply to each shard database's pool too."""
    from storage.routing.sharded import ShardedMessageStore
    from storage.routing.sharded_store import ShardedStore

    if not isinstance(backend, PostgresStore):
        raise StorageError("shards need a postgresql:// catalog database")
    urls = []
    for url in shards:
        scheme, target = _parse(url)
        if scheme != "postgresql":
            raise StorageError("each shard must be a postgresql:// database")
        urls.append(target)
    pool_size, statement_timeout, synchronous_commit = settings
    messages = ShardedMessageStore(
        primary,
        urls,
        pool_size=pool_size,
        statement_timeout=statement_timeout,
        synchronous_commit=synchronous_commit,
    )
    return ShardedStore(backend, messages, scrypt_n=scrypt_n)


def backup(url: str | os.PathLike[str], dest: str | os.PathLike[str]) -> BackupResult:
    """Copy the live database `url` names to the new file `dest`, safe while a server writes
    to it; `BackupError` if it cannot (nothing is left at `dest`), and for PostgreSQL, which
    `pg_dump` backs up. Blocking: from trio, run it in `trio.to_thread.run_sync`."""
    scheme, target = _parse(url)
    if scheme == "postgresql":
        raise BackupError(
            "hibiki backup copies SQLite files; back up PostgreSQL with its own tools:"
            " pg_dump --format=custom --file=DEST DATABASE (docs/operations.md, Backups)"
        )
    return backup_sqlite_file(target, dest)


def _parse(url: str | os.PathLike[str]) -> tuple[str, str]:
    """(scheme, what the backend opens); `StorageError` unless a backend here serves it."""
    text = os.fspath(url)
    match = _SCHEME.match(text)
    if match is None:
        if not text:
            raise StorageError(f"no database given: use {SUPPORTED}")
        return "sqlite", text
    scheme = match[1].lower()
    if scheme == "sqlite":
        return "sqlite", _sqlite_path(text)
    if scheme in ("postgresql", "postgres"):
        return "postgresql", "postgresql://" + text[match.end() :]  # libpq wants lower case
    raise StorageError(f"unknown database URL scheme {scheme}://: use {SUPPORTED}")


def _sqlite_path(url: str) -> str:
    parts = urllib.parse.urlsplit(url)
    if parts.netloc:
        raise StorageError(f"a sqlite:// URL names a file, not a host: use {SUPPORTED}")
    if parts.query or parts.fragment:
        raise StorageError(
            f"a sqlite:// URL takes no ?query or #fragment (options are settings): use {SUPPORTED}"
        )
    path = urllib.parse.unquote(parts.path[1:])  # after the slash that ends the empty host
    if not path:
        raise StorageError(f"no file in {url!r}: use {SUPPORTED}")
    return path
