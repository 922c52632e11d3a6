"""The SQLite backend's own behaviour, beyond the store contract: files, pragmas, migrations,
threads, the readiness probe and the online backup (real files in tmp_path)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from storage.sqlite import SQLiteStore

# Probe ------------------------------------------------------------------------------------


async def test_probe_commits_without_changing_anything_and_never_creates_a_file(
    tmp_path: Path,
) -> None:
    db = tmp_path / "x.db"
    conn = sqlite3.connect(db, isolation_level=None)
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA user_version = 7")
    assert await SQLiteStore(db).probe(2.0) is None  # the file, whether or not a store is open
    assert conn.execute("PRAGMA user_version").fetchone()[0] == 7
    conn.close()
    missing = tmp_path / "missing.db"
    assert await SQLiteStore(missing).probe(2.0) is not None
    assert not missing.exists(), "the probe must never create a database"
