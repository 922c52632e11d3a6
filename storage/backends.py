"""Which backend a database URL names: the one place that maps a URL to a backend.

URL forms (docs/operations.md, "Database URLs"):

    hibiki.db, /var/lib/hibiki/hibiki.db   a plain path (no `scheme://`): a SQLite file
    sqlite:///relative/path.db             a SQLite file, relative to the working directory
    sqlite:////absolute/path.db            a SQLite file, absolute (the 4th slash starts the path)
    postgresql://...                       not supported yet (the next backend)

A SQLite URL names a file and nothing else: no host, no query, no fragment; percent-escapes in
its path are decoded (`sqlite:///my%20chat.db` is `my chat.db`). A plain path is taken as is.
"""

from __future__ import annotations

import os
import re
import urllib.parse

from storage import passwords
from storage.composite import CompositeStore
from storage.protocols import Backend, BackupResult, StorageError
from storage.sqlite.backup import backup as backup_sqlite_file
from storage.sqlite.store import SQLiteStore

SUPPORTED = "sqlite:///PATH, sqlite:////ABSOLUTE/PATH or a plain file path"
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")


def open_store(
    url: str | os.PathLike[str],
    *,
    synchronous: str = "FULL",
    readers: int = 2,
    scrypt_n: int = passwords.DEFAULT_N,
) -> CompositeStore:
    """An unopened `Store` on the database `url` names: `await store.open()` (and `aclose()`),
    or `async with open_store(url) as store:`.

    `synchronous` is the durability mode (OFF, NORMAL, FULL or EXTRA; FULL survives a power
    cut), `readers` the number of reader threads, `scrypt_n` the scrypt cost of new password
    hashes. Raise `StorageError` for a URL no backend here serves.
    """
    return CompositeStore(
        _backend(url, synchronous=synchronous, readers=readers), scrypt_n=scrypt_n
    )


def backup(url: str | os.PathLike[str], dest: str | os.PathLike[str]) -> BackupResult:
    """Copy the live database `url` names to the new file `dest`, safe while a server writes
    to it; `BackupError` if it cannot (nothing is left at `dest`). Blocking: from trio, run it
    in `trio.to_thread.run_sync`."""
    scheme, target = _parse(url)
    assert scheme == "sqlite"  # _parse raises for every other
    return backup_sqlite_file(target, dest)


def _backend(url: str | os.PathLike[str], *, synchronous: str, readers: int) -> Backend:
    scheme, target = _parse(url)
    assert scheme == "sqlite"  # _parse raises for every other
    return SQLiteStore(target, synchronous=synchronous, readers=readers)


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
    # The URL itself is not repeated: a PostgreSQL one may carry a password.
    if scheme in ("postgresql", "postgres"):
        raise StorageError(f"{scheme}:// databases are not supported yet: use {SUPPORTED}")
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
