"""Online backup of a SQLite database, safe while the server is writing to it.

SQLite's backup API copies the database as of one read snapshot: in WAL mode a reader never blocks
the writer, so the server keeps committing while the copy runs (its WAL just cannot be
checkpointed past the snapshot until the copy ends). The copy is made in ONE step on purpose: a
step-by-step backup restarts whenever another connection writes, and might never finish under load.

The result is a self-contained file (rollback journal mode, no -wal beside it), checked with
`PRAGMA quick_check`, written under a temporary name and renamed into place, so `dest` is either
absent or a complete backup, never half of one.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import tempfile
import time
import urllib.parse

from storage.protocols import BackupError, BackupResult


def backup(source: str | os.PathLike[str], dest: str | os.PathLike[str]) -> BackupResult:
    """Copy the live database at `source` to a new file `dest` (which must not exist). Blocking:
    from trio, run it in `trio.to_thread.run_sync`."""
    source, dest = os.fspath(source), os.fspath(dest)
    started = time.monotonic()
    if os.path.lexists(dest):
        raise BackupError(f"{dest} already exists; not overwriting it")
    if not os.path.isfile(source):
        raise BackupError(f"{source}: no such database file")
    directory = os.path.dirname(os.path.abspath(dest))
    fd, partial = tempfile.mkstemp(prefix=".hibiki-backup-", suffix=".tmp", dir=directory)
    os.close(fd)
    try:
        pages = _copy(source, partial)
        _fsync(partial)
        os.replace(partial, dest)
        _fsync(directory)
    except (sqlite3.Error, OSError) as exc:
        raise BackupError(f"backup of {source} to {dest} failed: {exc}") from exc
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial)
    return BackupResult(dest, pages, os.path.getsize(dest), time.monotonic() - started)


def _copy(source: str, partial: str) -> int:
    # Read-only (mode=ro): a backup never creates, migrates or writes the live database.
    uri = "file:" + urllib.parse.quote(os.path.abspath(source)) + "?mode=ro"
    src = sqlite3.connect(uri, uri=True, timeout=30.0)
    try:
        dst = sqlite3.connect(partial, isolation_level=None)
        try:
            src.backup(dst, pages=-1)  # one step, one snapshot
            dst.execute("PRAGMA journal_mode = DELETE")  # a single self-contained file
            check = dst.execute("PRAGMA quick_check").fetchone()[0]
            if check != "ok":
                raise BackupError(f"the copy failed its integrity check: {check}")
            pages: int = dst.execute("PRAGMA page_count").fetchone()[0]
        finally:
            dst.close()
    finally:
        src.close()
    return pages


def _fsync(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
