"""The SQLite backend's own behaviour, beyond the store contract: files, pragmas, migrations,
the writer's bookkeeping, threads, the readiness probe and the online backup (`hibiki backup`),
on real files in tmp_path.

Two tests are white-box on purpose and import a private module (`storage.sqlite._messages`):
the query plan of the duplicate lookup, and the writer's bound on the user ids it remembers.
Neither is visible through a public call, and both are measured performance choices.
"""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, closing
from pathlib import Path

import pytest
import trio
import trio.testing

import storage.sqlite._messages as sqlite_messages  # white-box, see above
import storage.sqlite._rooms as sqlite_rooms
from server.cli import main
from storage import (
    BackupError,
    NewMessage,
    NotFound,
    StorageError,
    User,
    backup,
    open_store,
    passwords,
)
from storage.sqlite import MIGRATIONS, ConnectionThread, SQLiteStore, current_version, migrate

from ..conftest import STEP

SCRYPT_N = 2**10  # fast for tests; production uses passwords.DEFAULT_N


def msg(room: str, user: User, text: str, client_id: str | None = None) -> NewMessage:
    return NewMessage(
        room=room, user_id=user.id, user_name=user.name, text=text, client_id=client_id
    )


# Files, schema and the writer -------------------------------------------------------------


async def test_reopening_an_up_to_date_database_applies_no_migration(tmp_path: Path) -> None:
    path = tmp_path / "hibiki.db"
    async with open_store(path, scrypt_n=SCRYPT_N) as s:
        await s.create_user("alice", "pw")
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        assert current_version(conn) == len(MIGRATIONS)
        assert migrate(conn) == 0
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    async with open_store(path, scrypt_n=SCRYPT_N) as s:
        assert await s.check_password("alice", "pw") is not None
    with closing(sqlite3.connect(":memory:", isolation_level=None)) as fresh:
        assert migrate(fresh) == len(MIGRATIONS)


async def test_failed_commit_forgets_numbering_so_no_gap_follows(tmp_path: Path) -> None:
    path = tmp_path / "hibiki.db"
    async with open_store(path, scrypt_n=SCRYPT_N) as s:
        alice = await s.create_user("alice", "pw")
        await s.create_room("lobby", alice.id)
    with closing(sqlite3.connect(path, isolation_level=None)) as conn:
        # Fails the batch's last insert: after its seqs were reserved and a first row inserted.
        conn.executescript(
            """
            CREATE TRIGGER poisoned BEFORE INSERT ON messages WHEN NEW.text = 'poison'
            BEGIN SELECT RAISE(ABORT, 'poisoned'); END;
            """
        )
    async with open_store(path, scrypt_n=SCRYPT_N) as s:
        with pytest.raises(StorageError):
            await s.append_batch([msg("lobby", alice, "ok"), msg("lobby", alice, "poison")])
        assert await s.last_seq("lobby") == 0
        assert [r.message.seq for r in await s.append_batch([msg("lobby", alice, "ok")])] == [1]


async def test_one_message_batches_check_room_and_user_and_reserve_nothing_when_refused(
    tmp_path: Path,
) -> None:
    # A one-message batch has its own path (one kept cursor, nothing collected): it still
    # refuses an unknown room or user, rolls back, and numbers the next one gap-free.
    async with open_store(tmp_path / "hibiki.db", scrypt_n=SCRYPT_N) as s:
        alice = await s.create_user("alice", "pw")
        await s.create_room("lobby", alice.id)
        ghost = User(id=alice.id + 100, name="ghost")
        with pytest.raises(NotFound):
            await s.append_batch([msg("nowhere", alice, "?")])
        with pytest.raises(StorageError):
            await s.append_batch([msg("lobby", ghost, "boo")])
        first = await s.append_batch([msg("lobby", alice, "one", "c1")])
        again = await s.append_batch([msg("lobby", alice, "one", "c1")])  # a re-send
        second = await s.append_batch([msg("lobby", alice, "two")])
        assert [(r.message.seq, r.duplicate) for r in first + again + second] == [
            (1, False),
            (1, True),
            (2, False),
        ]
        assert await s.last_seq("lobby") == 2


def test_last_seqs_reads_in_chunks_of_names(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """More names than one statement takes: every chunk is read, each name once."""
    monkeypatch.setattr(sqlite_rooms, "LAST_SEQS_CHUNK", 2)
    with closing(sqlite3.connect(tmp_path / "hibiki.db", isolation_level=None)) as conn:
        migrate(conn)
        conn.execute(
            "INSERT INTO users (id, name, password_hash, created_at) VALUES (1, 'a', '', 0)"
        )
        for i in range(5):
            conn.execute(
                "INSERT INTO rooms (name, created_by, created_at, last_seq) VALUES (?, 1, 0, ?)",
                (f"r{i}", i * 10),
            )
        names = ("r0", "r1", "nowhere", "r2", "r3", "r4")
        assert sqlite_rooms.last_seqs(conn, names) == {f"r{i}": i * 10 for i in range(5)}


def test_duplicate_lookup_probes_the_client_id_index() -> None:
    with closing(sqlite3.connect(":memory:", isolation_level=None)) as conn:
        migrate(conn)
        plan = conn.execute(
            f"EXPLAIN QUERY PLAN {sqlite_messages._FIND_CLIENT_IDS}", ('[[1, 2, "m1"]]',)
        ).fetchall()
    details = " / ".join(row[3] for row in plan)
    assert "USING INDEX messages_by_client_id (client_id=? AND room_id=? AND user_id=?)" in details


async def test_writer_forgets_known_users_past_its_limit_and_still_checks_them(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sqlite_messages, "KNOWN_USERS_LIMIT", 1)
    async with open_store(tmp_path / "hibiki.db", scrypt_n=SCRYPT_N) as s:
        alice = await s.create_user("alice", "pw")
        bob = await s.create_user("bob", "pw")
        await s.create_room("lobby", alice.id)
        for i in range(3):
            await s.append_batch([msg("lobby", alice, f"a{i}"), msg("lobby", bob, f"b{i}")])
        with pytest.raises(StorageError):
            await s.append_batch([msg("lobby", User(id=999, name="ghost"), "boo")])
        assert await s.last_seq("lobby") == 6


async def test_passwords_and_tokens_are_stored_only_as_hashes(tmp_path: Path) -> None:
    path = tmp_path / "hibiki.db"
    async with open_store(path, scrypt_n=SCRYPT_N) as s:
        alice = await s.create_user("alice", "correct horse")
        token = await s.create_token(alice.id, ttl_seconds=60)
    with closing(sqlite3.connect(path)) as conn:
        (encoded,) = conn.execute("SELECT password_hash FROM users").fetchone()
        (stored_token,) = conn.execute("SELECT token_hash FROM tokens").fetchone()
    assert encoded.startswith(f"scrypt${SCRYPT_N}$8$1$") and "correct horse" not in encoded
    assert passwords.verify_password("correct horse", encoded)
    assert stored_token == passwords.token_hash(token) != token


async def test_synchronous_mode_is_validated(tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        SQLiteStore(tmp_path / "x.db", synchronous="FULL; DROP TABLE users")


# Connection threads -----------------------------------------------------------------------


@asynccontextmanager
async def memory_thread() -> AsyncIterator[ConnectionThread]:
    thread = ConnectionThread("test-db", lambda: sqlite3.connect(":memory:", isolation_level=None))
    await thread.start()
    try:
        yield thread
    finally:
        await thread.aclose()


async def test_thread_reraises_the_job_exception_in_the_caller() -> None:
    def boom(conn: sqlite3.Connection) -> None:
        raise KeyError("boom")

    async with memory_thread() as thread:
        with pytest.raises(KeyError, match="boom"):
            await thread.run(boom)
        assert await thread.run(lambda conn: conn.execute("SELECT 41 + 1").fetchone()[0]) == 42


async def test_cancelled_caller_waits_for_its_job_then_sees_cancellation() -> None:
    started, gate = threading.Event(), threading.Event()
    outcome: list[object] = []

    def slow_write(conn: sqlite3.Connection) -> str:
        started.set()
        gate.wait()
        conn.execute("CREATE TABLE written (x)")
        return "done"

    async with memory_thread() as thread, trio.open_nursery() as nursery:
        scope = trio.CancelScope()

        async def caller() -> None:
            with scope:
                outcome.append(await thread.run(slow_write))  # returns despite the cancel
                await trio.lowlevel.checkpoint()  # ... which is delivered here
                outcome.append("not reached")

        nursery.start_soon(caller)
        await trio.to_thread.run_sync(started.wait)
        scope.cancel()
        await trio.testing.wait_all_tasks_blocked()
        assert outcome == []  # still waiting for the job, not abandoned
        gate.set()

    assert outcome == ["done"]
    assert scope.cancelled_caught
    async with memory_thread() as thread:  # a fresh DB: just proves the thread API still works
        assert await thread.run(lambda conn: 1) == 1


async def test_thread_refuses_jobs_after_close() -> None:
    async with memory_thread() as thread:
        pass
    with pytest.raises(trio.ClosedResourceError):
        await thread.run(lambda conn: None)


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


# Backup ------------------------------------------------------------------------------------


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
    async with open_store(db, scrypt_n=SCRYPT_N) as store:
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
    async with open_store(db, scrypt_n=SCRYPT_N) as store:
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
