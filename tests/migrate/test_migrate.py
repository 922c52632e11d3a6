"""`hibiki migrate` from a real SQLite file (filled through SQLiteStore) into a real, fresh
PostgreSQL database: copy, rerun, resume, verification catching altered rows, refusals."""

from __future__ import annotations

import sqlite3
from functools import partial
from pathlib import Path
from typing import Any

import psycopg
import pytest
import trio

from server.cli import main
from storage import StorageError
from storage.migrate import SOURCE_CHUNK_ROWS, MigrationRefused, MigrationResult, Progress, migrate
from storage.postgres import migrate as apply_schema
from tests.migrate.conftest import open_source, populate


def run_cli(*args: str) -> int:
    return main(["migrate", *args])


def test_chunk_must_be_positive(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        run_cli("--from", "x.db", "--to", "postgresql://", "--chunk", "0")
    assert exited.value.code == 2
    assert "must be at least 1" in capsys.readouterr().err


async def cli(source: Path, target: str, *extra: str) -> int:
    return await trio.to_thread.run_sync(
        partial(run_cli, "--from", f"sqlite:///{source}", "--to", target, "--quiet", *extra)
    )


async def migrate_in_thread(source: Path, target: str, **options: Any) -> MigrationResult:
    return await trio.to_thread.run_sync(partial(migrate, str(source), target, **options))


def pg(target: str, query: str, *args: object) -> list[tuple[object, ...]]:
    with psycopg.connect(target, autocommit=True) as conn:
        cursor = conn.execute(query, args or None)
        return cursor.fetchall() if cursor.description else []


async def test_populated_database_migrates_and_verifies(
    sqlite_path: Path, pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    async with open_source(sqlite_path) as store:
        chat = await populate(store)
        history, _ = await store.messages.history("room2", None, 5)
    assert await cli(sqlite_path, pg_url) == 0
    out = capsys.readouterr()
    assert "OK: the target matches the source" in out.out
    assert "copied 1200 messages" in out.out
    assert out.err == ""  # --quiet: no progress bar
    rooms = pg(pg_url, "SELECT name, last_seq FROM rooms ORDER BY id")
    assert rooms == [("room0", 200), ("room1", 400), ("room2", 600)]
    last = pg(
        pg_url,
        "SELECT m.id, seq, user_name, text, ts, client_id FROM messages m JOIN rooms r"
        " ON r.id = m.room_id WHERE r.name = 'room2' ORDER BY seq DESC LIMIT 5",
    )
    assert last[::-1] == [(m.id, m.seq, m.user, m.text, m.ts, m.client_id) for m in history]
    members = pg(pg_url, "SELECT count(*) FROM memberships")
    assert members == [(3 * 3 - 1,)]  # carol left room0
    # Without --quiet the bar is still off when stderr is not a terminal (as under pytest).
    args = ("--from", str(sqlite_path), "--to", pg_url)
    assert await trio.to_thread.run_sync(partial(run_cli, *args)) == 0
    out = capsys.readouterr()
    assert "copied 0 messages" in out.out and out.err == ""
    # Each identity is past the largest id copied: a new row takes the next one.
    new_id = pg(
        pg_url,
        "INSERT INTO users (name, password_hash, created_at) VALUES ('d', 'x', 1) RETURNING id",
    )
    assert new_id == [(max(u.id for u in chat.users) + 1,)]
    next_message = pg(pg_url, "SELECT nextval(pg_get_serial_sequence('messages', 'id'))")
    assert next_message == [(1201,)]


async def test_rerun_after_new_messages_copies_only_the_new(sqlite_path: Path, pg_url: str) -> None:
    async with open_source(sqlite_path) as store:  # the old server stays live throughout
        chat = await populate(store, messages=100)
        first = await migrate_in_thread(sqlite_path, pg_url)
        assert first.ok and first.copied is not None and first.copied.messages == 600
        await chat.say("room1", 37, tag="late")
        await store.rooms.create_room("later", chat.users[1].id)
        await store.rooms.join_room("later", chat.users[2].id)
        await chat.say("later", 5)
        await store.accounts.revoke_token(chat.tokens[0])
        await store.rooms.leave_room("room1", chat.users[1].id)
        second = await migrate_in_thread(sqlite_path, pg_url)
    assert second.ok, second.verification.mismatches
    assert second.copied is not None
    assert second.copied.messages == 42
    assert second.copied.catalog["rooms added"] == 1
    assert second.copied.catalog["tokens removed"] == 1  # a logged-out token stays dead
    assert second.copied.catalog["memberships removed"] == 1
    assert second.copied.catalog["users added"] == 0
    assert pg(pg_url, "SELECT last_seq FROM rooms WHERE name = 'room1'") == [(237,)]
    third = await migrate_in_thread(sqlite_path, pg_url)
    assert third.ok and third.copied is not None and third.copied.messages == 0


class _CutAfter:
    """Progress that ends the pass (as a kill would) after `chunks` committed chunks."""

    def __init__(self, chunks: int) -> None:
        self.left = chunks

    def __call__(self, what: str, total: int) -> Progress:
        return self

    def update(self, n: int) -> None:
        self.left -= 1
        if self.left == 0:
            raise KeyboardInterrupt

    def close(self) -> None:
        pass


_CONSTRAINTS = (
    "SELECT conname, pg_get_constraintdef(oid) FROM pg_constraint"
    " WHERE conrelid = 'messages'::regclass UNION ALL"
    " SELECT indexrelid::regclass::text, pg_get_indexdef(indexrelid) FROM pg_index"
    " WHERE indrelid = 'messages'::regclass ORDER BY 1, 2"
)


@pytest.mark.parametrize("bulk", [False, True], ids=["chunked", "bulk"])
async def test_interrupted_pass_resumes_where_it_stopped(
    sqlite_path: Path, pg_url: str, bulk: bool
) -> None:
    async with open_source(sqlite_path) as store:
        await populate(store, messages=100)
    options: dict[str, Any] = {"chunk_rows": 150, "bulk_min_rows": 1 if bulk else 10**9}
    with pytest.raises(KeyboardInterrupt):
        migrate(str(sqlite_path), pg_url, progress=_CutAfter(2), **options)
    # What was committed is consistent: each room's last_seq is its last copied seq.
    assert pg(pg_url, "SELECT count(*) FROM messages") == [(300,)]
    assert (
        pg(
            pg_url,
            "SELECT r.name FROM rooms r WHERE r.last_seq <>"
            " (SELECT coalesce(max(seq), 0) FROM messages m WHERE m.room_id = r.id)",
        )
        == []
    )
    if bulk:  # constraints set aside: verification alone will not vouch for the target
        with pytest.raises(StorageError, match="without its message constraints"):
            migrate(str(sqlite_path), pg_url, verify_only=True)
    resumed = await migrate_in_thread(sqlite_path, pg_url, **options)
    assert resumed.ok, resumed.verification.mismatches
    assert resumed.copied is not None and resumed.copied.messages == 300
    # Every constraint and index is back, exactly as the schema makes them.
    with psycopg.connect(pg_url.rsplit("/", 1)[0] + "/test", autocommit=True) as admin:
        fresh = pg_url + "_fresh"
        admin.execute(f"CREATE DATABASE {fresh.rsplit('/', 1)[1]}")
        try:
            with psycopg.connect(fresh, autocommit=True) as conn:
                apply_schema(conn)
            assert pg(pg_url, _CONSTRAINTS) == pg(fresh, _CONSTRAINTS)
        finally:
            admin.execute(f"DROP DATABASE {fresh.rsplit('/', 1)[1]} WITH (FORCE)")


async def test_a_large_first_pass_runs_in_bulk_mode_and_a_small_rerun_does_not(
    sqlite_path: Path, pg_url: str
) -> None:
    async with open_source(sqlite_path) as store:
        chat = await populate(store, messages=100)
        first = await migrate_in_thread(sqlite_path, pg_url, bulk_min_rows=100)
        await chat.say("room2", 10, tag="new")
        second = await migrate_in_thread(sqlite_path, pg_url, bulk_min_rows=100)
    assert first.ok and first.copied is not None and first.copied.bulk
    assert second.ok and second.copied is not None and not second.copied.bulk
    assert second.copied.messages == 10
    duplicate = "INSERT INTO messages (room_id, seq, user_id, user_name, text, ts)"
    with pytest.raises(psycopg.errors.UniqueViolation):  # UNIQUE (room_id, seq) is back
        pg(pg_url, duplicate + " VALUES (1, 1, 1, 'alice', 'again', 1)")
    # ...and so is the client_id index (schema v2 has no foreign keys on messages to check).
    with_id = "INSERT INTO messages (room_id, seq, user_id, user_name, text, ts, client_id)"
    pg(pg_url, with_id + " VALUES (1, 10000, 1, 'alice', 'x', 1, 'c-twice')")
    with pytest.raises(psycopg.errors.UniqueViolation):
        pg(pg_url, with_id + " VALUES (1, 10001, 1, 'alice', 'x', 1, 'c-twice')")


@pytest.mark.parametrize(
    ("alteration", "named", "detail"),
    [
        (
            "UPDATE messages SET text = text || '!' WHERE seq = 7 AND room_id = 2",
            "room 'room1'",
            "first differing seq 7",
        ),
        (
            "UPDATE messages SET ts = ts + 1 WHERE seq = 400 AND room_id = 2",
            "room 'room1'",
            "first differing seq 400",
        ),
        ("DELETE FROM messages WHERE seq = 50 AND room_id = 3", "room 'room2'", "not contiguous"),
        (
            "UPDATE memberships SET joined_at = joined_at - 1 WHERE room_id = 1 AND user_id = 2",
            "room 'room0'",
            "members_digest",
        ),
        ("UPDATE users SET password_hash = 'x' WHERE id = 3", "users", "digest"),
    ],
)
async def test_a_target_row_altered_after_migration_is_caught_by_verify(
    sqlite_path: Path,
    pg_url: str,
    capsys: pytest.CaptureFixture[str],
    alteration: str,
    named: str,
    detail: str,
) -> None:
    async with open_source(sqlite_path) as store:
        await populate(store)
    assert await cli(sqlite_path, pg_url) == 0
    capsys.readouterr()
    pg(pg_url, alteration)
    assert await cli(sqlite_path, pg_url, "--verify-only") == 1
    out = capsys.readouterr().out
    assert f"MISMATCH {named}" in out
    assert detail in out
    assert "FAILED: 1 mismatches" in out


async def test_target_holding_other_data_is_refused(
    sqlite_path: Path, pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    async with open_source(sqlite_path) as store:
        await populate(store, rooms=1, messages=10)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        apply_schema(conn)
        conn.execute("INSERT INTO users (name, password_hash, created_at) VALUES ('zed', 'h', 1)")
    assert await cli(sqlite_path, pg_url) == 1
    err = capsys.readouterr().err
    assert "holds hibiki data no migration wrote (1 users)" in err
    assert pg(pg_url, "SELECT count(*) FROM messages") == [(0,)]


async def test_target_migrated_from_another_source_is_refused(
    tmp_path: Path, sqlite_path: Path, pg_url: str
) -> None:
    other = tmp_path / "other.db"
    async with open_source(sqlite_path) as store:
        await populate(store, rooms=1, messages=10)
    async with open_source(other) as store:
        await store.accounts.create_user("someone", "correct horse")
    assert (await migrate_in_thread(other, pg_url)).ok
    with pytest.raises(MigrationRefused, match="another database"):
        await migrate_in_thread(sqlite_path, pg_url)


async def test_a_target_written_to_after_the_pass_is_refused(
    sqlite_path: Path, pg_url: str
) -> None:
    async with open_source(sqlite_path) as store:
        chat = await populate(store, rooms=1, messages=10)
    assert (await migrate_in_thread(sqlite_path, pg_url)).ok
    pg(
        pg_url,
        "INSERT INTO messages (room_id, seq, user_id, user_name, text, ts)"
        " VALUES (1, 11, %s, 'alice', 'written on the target', 1)",
        chat.users[0].id,
    )
    with pytest.raises(MigrationRefused, match="was hibiki started on it"):
        await migrate_in_thread(sqlite_path, pg_url)


async def test_a_pass_while_the_server_writes_then_a_final_pass_match(
    sqlite_path: Path, pg_url: str
) -> None:
    async with open_source(sqlite_path) as store:
        chat = await populate(store, rooms=2, messages=50)
        async with trio.open_nursery() as nursery:
            done = trio.Event()

            async def keep_writing() -> None:
                while not done.is_set():
                    await chat.say("room1", 20, tag="live")

            nursery.start_soon(keep_writing)
            live = await migrate_in_thread(sqlite_path, pg_url, chunk_rows=40)
            done.set()
        assert live.ok, live.verification.mismatches  # verified against its own snapshot
        total = await store.messages.last_seq("room1")
    final = await migrate_in_thread(sqlite_path, pg_url)
    assert final.ok, final.verification.mismatches
    assert pg(pg_url, "SELECT last_seq FROM rooms WHERE name = 'room1'") == [(total,)]


async def test_a_room_whose_seqs_do_not_follow_its_ids_is_verified_in_seq_order(
    sqlite_path: Path, pg_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    async with open_source(sqlite_path) as store:
        await populate(store, rooms=1, messages=SOURCE_CHUNK_ROWS + 2000)
    # Not something hibiki writes, but a verifier must not depend on it: swap two seqs of
    # room0 that verification reads in different chunks.
    far = SOURCE_CHUNK_ROWS + 1000
    with sqlite3.connect(sqlite_path) as conn:
        conn.execute("UPDATE messages SET seq = -seq WHERE seq IN (3, ?)", (far,))
        conn.execute("UPDATE messages SET seq = ? WHERE seq = -3", (far,))
        conn.execute("UPDATE messages SET seq = 3 WHERE seq = ?", (-far,))
    assert await cli(sqlite_path, pg_url, "--chunk", "50") == 0
    capsys.readouterr()
    pg(pg_url, "UPDATE messages SET text = 'changed' WHERE seq = %s", far)
    assert await cli(sqlite_path, pg_url, "--verify-only") == 1
    out = capsys.readouterr().out
    assert "MISMATCH room 'room0'" in out
    assert f"first differing seq {far}" in out


async def test_the_event_streams_cursors_are_copied_and_only_raised(
    sqlite_path: Path, pg_url: str
) -> None:
    async with open_source(sqlite_path) as store:
        await populate(store, messages=10)
        await store.events.advance_event_cursors({0: 40, 1: 55})  # where its appender got to
        first = await migrate_in_thread(sqlite_path, pg_url)
        assert first.ok and first.copied is not None
        assert first.copied.catalog["event cursors raised"] == 2
        await store.events.advance_event_cursors({1: 60})
        second = await migrate_in_thread(sqlite_path, pg_url)
    assert second.copied is not None and second.copied.catalog["event cursors raised"] == 1
    assert pg(pg_url, "SELECT partition, last_id FROM events_cursor ORDER BY 1") == [
        (0, 40),
        (1, 60),
    ]


async def test_read_cursors_are_copied_and_only_raised(sqlite_path: Path, pg_url: str) -> None:
    async with open_source(sqlite_path) as store:
        chat = await populate(store, messages=10)
        alice, bob = chat.users[0].id, chat.users[1].id
        await store.mark_read("room0", alice, 4)
        await store.mark_read("room1", bob, 7)
        first = await migrate_in_thread(sqlite_path, pg_url)
        assert first.ok and first.copied is not None
        assert first.copied.catalog["read cursors raised"] == 2
        await store.mark_read("room0", alice, 9)
        second = await migrate_in_thread(sqlite_path, pg_url)
    assert second.copied is not None and second.copied.catalog["read cursors raised"] == 1
    # A cursor the target moved further (someone read there) is not moved back.
    pg(pg_url, "UPDATE read_cursors SET seq = 15 WHERE user_id = %s", bob)
    third = await migrate_in_thread(sqlite_path, pg_url)
    assert third.copied is not None and third.copied.catalog["read cursors raised"] == 0
    rows = pg(pg_url, "SELECT user_id, room_id, seq FROM read_cursors ORDER BY 1, 2")
    assert [(user, seq) for user, _, seq in rows] == [(alice, 9), (bob, 15)]
