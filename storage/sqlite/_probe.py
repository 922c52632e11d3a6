"""The readiness probe: a real commit on the database file that changes nothing."""

from __future__ import annotations

import os
import sqlite3
import urllib.parse


def probe_write(path: str, busy_timeout: float) -> str | None:
    """Commit a write that changes nothing (user_version set to itself); None, or the error.

    A real commit, so it proves what a rolled-back transaction would not: the write lock can be
    taken, and the WAL can grow and be synced (no full disk, no read-only remount). Its own
    connection, so it tests the file, not the store's threads. Blocking: run it on a thread.
    """
    # mode=rw: never create a database that is not there.
    uri = "file:" + urllib.parse.quote(os.path.abspath(path)) + "?mode=rw"
    try:
        conn = sqlite3.connect(uri, uri=True, timeout=busy_timeout, isolation_level=None)
        try:
            conn.execute("PRAGMA wal_autocheckpoint = 0")  # checkpoints are the store's business
            conn.execute("BEGIN IMMEDIATE")
            try:
                # Read inside the write transaction, as migrations do, so it cannot race one.
                version = int(conn.execute("PRAGMA user_version").fetchone()[0])
                conn.execute(f"PRAGMA user_version = {version:d}")
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        finally:
            conn.close()
    except sqlite3.Error as exc:
        return f"{type(exc).__name__}: {exc}"
    return None
