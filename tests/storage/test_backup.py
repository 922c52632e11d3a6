"""`hibiki backup`: a consistent copy of a live database while messages are being written."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import trio

from server.cli import main
from storage import NewMessage, SQLiteStore
from storage.sqlite.backup import BackupError, backup

from ..conftest import STEP


def _snapshot_facts(path: Path) -> tuple[int, int, int]:
    """(messages, max seq, rooms.last_seq) of the one room; equal iff the copy is consistent."""
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("PRAGMA quick_check").fetchone()[0] == "ok"
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
        count, top = conn.execute("SELECT count(*), coalesce(max(seq), 0) FROM messages").fetchone()
        (last_seq,) = conn.execute("SELECT last_seq FROM rooms WHERE name = 'live'").fetchone()
        return count, top, last_seq
    finally:
        conn.close()


async def test_backup_of_a_database_being_written_is_consistent(tmp_path: Path) -> None:
    db = tmp_path / "live.db"
    async with SQLiteStore(db, scrypt_n=2**10) as store:
        user = await store.create_user("writer", "correct horse")
        await store.create_room("live", user.id)
        written = 0
        progress = trio.Event()
        copies: list[tuple[Path, int]] = []

        async def keep_writing(task_status: trio.TaskStatus[None]) -> None:
            nonlocal written
            task_status.started()
            while True:
                batch = [
                    NewMessage("live", user.id, "writer", f"m{written + i}", None)
                    for i in range(50)
                ]
                await store.append_batch(batch)
                written += len(batch)
                progress.set()

        async def written_at_least(n: int) -> None:
            nonlocal progress
            while written < n:
                progress = trio.Event()
                await progress.wait()

        with trio.fail_after(STEP * 3):
            async with trio.open_nursery() as nursery:
                await nursery.start(keep_writing)
                for n in range(3):
                    await written_at_least(500 * (n + 1))  # copies taken while writes go on
                    dest = tmp_path / f"copy{n}.db"
                    await trio.to_thread.run_sync(backup, db, dest)
                    copies.append((dest, written))
                nursery.cancel_scope.cancel()

    assert not (tmp_path / "copy0.db-wal").exists()
    previous = 0
    for dest, written_after in copies:
        count, top, last_seq = _snapshot_facts(dest)
        assert count == top == last_seq, "the copy is not one snapshot"
        assert previous <= count <= written_after
        previous = count
    assert previous >= 500


def test_backup_never_overwrites_and_leaves_nothing_on_failure(tmp_path: Path) -> None:
    (tmp_path / "exists.db").write_bytes(b"precious")
    sqlite3.connect(tmp_path / "src.db").close()
    with pytest.raises(BackupError, match="already exists"):
        backup(tmp_path / "src.db", tmp_path / "exists.db")
    assert (tmp_path / "exists.db").read_bytes() == b"precious"
    with pytest.raises(BackupError, match="no such database"):
        backup(tmp_path / "missing.db", tmp_path / "out.db")
    (tmp_path / "garbage.db").write_bytes(b"not a database" * 100)
    with pytest.raises(BackupError):
        backup(tmp_path / "garbage.db", tmp_path / "out.db")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["exists.db", "garbage.db", "src.db"]


async def test_cli_backup_reads_the_db_path_from_flags(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    db = tmp_path / "hibiki.db"
    async with SQLiteStore(db, scrypt_n=2**10) as store:
        user = await store.create_user("u", "correct horse")
        await store.create_room("live", user.id)
        await store.append_batch([NewMessage("live", user.id, "u", "hi", "c1")])
        dest = tmp_path / "backup.db"
        code = await trio.to_thread.run_sync(main, ["backup", "--db", str(db), str(dest)])
    assert code == 0
    assert f"to {dest}" in capsys.readouterr().out
    assert _snapshot_facts(dest) == (1, 1, 1)
    again = await trio.to_thread.run_sync(main, ["backup", "--db", str(db), str(dest)])
    assert again == 1
    assert "already exists" in capsys.readouterr().err
